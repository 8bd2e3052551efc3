"""The self-healing automations of deploy/automations.yaml, checked without a server: they validate against
Prefect's own automation schema, and the re-run action's parameter templates render, through Prefect's own
hydration, to the crashed run's parameters with ``attempt`` one higher. (tests/test_faults.py runs them for real.)"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import pytest

from foundation.errors import AttemptsExhausted
from flows.automations import DEFAULT_FILE, _definition, load_automations
from flows.finetune import check_attempt


def _render(parameters: dict, flow_run_parameters: dict) -> dict:
    from prefect.client.schemas.objects import FlowRun
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)  # what the server does with plain "{{ ... }}" strings
    run = FlowRun(id=uuid.UUID(int=7), flow_id=uuid.uuid4(), parameters=flow_run_parameters)
    return hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"flow_run": run}))


def test_the_automations_validate_and_say_what_they_do() -> None:
    zombie, rerun = load_automations(DEFAULT_FILE)
    assert zombie.trigger.posture == "Proactive" and zombie.trigger.within.total_seconds() == 90
    assert zombie.trigger.after == {"prefect.flow-run.heartbeat"}
    assert zombie.actions[0].type == "change-flow-run-state" and zombie.actions[0].state.value == "CRASHED"
    assert rerun.trigger.expect == {"prefect.flow-run.Crashed"} and rerun.actions[0].type == "run-deployment"
    assert _definition(rerun) == _definition(load_automations(DEFAULT_FILE)[1])  # stable: `up` leaves it alone


def test_the_definition_does_not_depend_on_set_order() -> None:
    """A trigger's event sets serialise in hash order, which changes between processes (PYTHONHASHSEED): the
    comparison that decides whether `stack.sh up` updates an automation must not see that order."""
    import subprocess
    import sys

    code = ("import json; from flows.automations import DEFAULT_FILE, _definition, load_automations; "
            "print(json.dumps([_definition(a) for a in load_automations(DEFAULT_FILE)]))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in (1, 2, 3, 4)}
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("crashed", "expected_attempt"),
    [
        ({"config_path": "configs/regulator.yaml", "overrides": {"train.lr": 1e-5, "x": [1, 2]}}, 2),
        ({"config_path": "/abs/c.yaml", "overrides": {}, "stop_after": "train_full", "attempt": 2,
          "max_attempts": 5, "rerun_of": "prior"}, 3),
    ],
)
def test_a_rerun_gets_the_crashed_runs_parameters(crashed: dict, expected_attempt: int) -> None:
    _, rerun = load_automations(DEFAULT_FILE)
    params = _render(rerun.actions[0].parameters, crashed)
    assert params == {"config_path": crashed["config_path"], "overrides": crashed["overrides"],
                      "stop_after": crashed.get("stop_after"), "max_attempts": crashed.get("max_attempts", 3),
                      "attempt": expected_attempt, "rerun_of": str(uuid.UUID(int=7))}


def test_the_chain_of_reruns_ends_at_max_attempts() -> None:
    check_attempt(3, 3, "some-run")
    with pytest.raises(AttemptsExhausted, match=r"attempt 4 > max_attempts 3: the run crashed 3 times \(last: flow "
                                                r"run r3\)"):
        check_attempt(4, 3, "r3")


def test_a_bad_automations_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "a.yaml"
    bad.write_text("automations: {}\n")
    with pytest.raises(ValueError, match="expected a mapping with an 'automations' list"):
        load_automations(bad)


@pytest.mark.parametrize(("attempt", "max_attempts", "rerun"), [(1, 3, True), (2, 3, True), (3, 3, False),
                                                                 (4, 3, False), (1, 1, False)])
def test_the_trigger_follows_only_runs_the_guard_marked_for_a_rerun(attempt: int, max_attempts: int,
                                                                     rerun: bool) -> None:
    """The re-run trigger sees the attempt count through the run's name, set by the pull step before the flow is
    loaded (flows/rerun_guard.py); matched with Prefect's own resource matching. A run the guard never saw (its
    process died first) keeps its plain name and is not re-run."""
    from prefect.events.schemas.events import Resource, ResourceSpecification
    from prefect.server.events.schemas.events import ResourceSpecification as ServerSpecification

    from flows.rerun_guard import chain_message, chain_name

    _, rerun_automation = load_automations(DEFAULT_FILE)
    spec = rerun_automation.trigger.match.model_dump()

    def matched(name: str) -> set[bool]:
        resource = Resource.model_validate({"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}",
                                            "prefect.resource.name": name})
        return {ResourceSpecification.model_validate(spec).matches(resource),  # client and server alike
                ServerSpecification.model_validate(spec).matches(resource)}

    name = chain_name("sturdy-otter", attempt, max_attempts)
    assert matched(name) == {rerun}
    assert chain_name(name, attempt, max_attempts) == name  # marking again does not stack marks
    assert chain_name(chain_name("sturdy-otter", 1, 3), 2, 3) == chain_name("sturdy-otter", 2, 3)
    assert matched("sturdy-otter") == {False}
    assert ("the chain of re-runs stops here" in chain_message(attempt, max_attempts)) is not rerun
