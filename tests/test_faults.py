"""Faults on the real stack (server + worker from scripts/stack.sh): transient stage failures are retried, a worker
that dies during train_full loses no finished checkpoint (the re-run resumes), concurrent runs keep their own run
folders.

What happens to a run whose worker died (Prefect 3.9, process work pool): every flow run sends a heartbeat event
every 30 s; the automation ``finetune-crash-zombie-runs`` (deploy/automations.yaml, created by ``stack.sh up``)
marks a run that sent none for 90 s ``Crashed``, and ``finetune-rerun-crashed`` starts it again from its
deployment with the same parameters. The new run gets the same stage cache keys, so audit/infra_check/prepare_data
are ``Cached`` and train_full resumes from the last complete checkpoint in
``.cache/stages/train_full/<key>.work/checkpoints``: the step counter continues.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.prefect_stack")  # before its import: its asserts report their values

from tests.prefect_stack import STAGES, Stack, small_overrides

pytest_plugins = ["tests.prefect_stack"]
pytestmark = [pytest.mark.server, pytest.mark.timeout(1800)]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    found, todo = [], [pid]
    while todo:
        for kid in _children(todo.pop(0)):
            found.append(kid)
            todo.append(kid)
    return found


def _complete_checkpoints(ckpt_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in ckpt_dir.glob("step-*") if (p / "COMPLETE.json").is_file())


def test_every_stage_fails_once_and_is_retried(stack: Stack, tiny_model_dir: Path, tmp_path: Path) -> None:
    overrides = small_overrides(tiny_model_dir, **{"data.seed": 99, "train.seed": 99})  # fresh keys: all stages run
    run_id = stack.run_deployment("finetune/regulator-cpu", overrides,
                                  env={"FINETUNE_INJECT_FAULTS": "all", "FINETUNE_FAULT_DIR": str(tmp_path)})
    run = stack.wait(run_id)
    assert run.state.type.value == "COMPLETED", f"{run.state.message}\n{stack.worker_log_tail()}"
    assert stack.task_states(run_id) == {stage: "Completed" for stage in STAGES}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"fault-{s}" for s in STAGES)
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    task_runs = stack.call(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))))
    assert {r.name.rsplit("-", 1)[0]: r.run_count for r in task_runs} == {stage: 2 for stage in STAGES}


def _rerun_of(stack: Stack, run_id: str, timeout: float) -> str:
    """The id of the flow run the re-run automation started for crashed run ``run_id`` (its ``rerun_of``)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.call(lambda c: c.read_flow_runs(limit=50))
        found = [r.id for r in runs if (r.parameters or {}).get("rerun_of") == run_id]
        if found:
            (rerun,) = found
            return str(rerun)
        assert time.monotonic() < deadline, (f"no automatic re-run of {run_id} after {timeout}s; failed automation "
                                             f"actions: {_failed_actions(stack)}")
        time.sleep(2)


def _failed_actions(stack: Stack) -> list[str]:
    """The reasons of the automation actions that failed on the stack's server (for a test's failure message)."""
    import httpx

    response = httpx.post(f"{stack.api_url}/events/filter", timeout=30, json={
        "filter": {"event": {"prefix": ["prefect.automation.action.failed"]}}, "limit": 20})
    return [e["payload"].get("reason", "") for e in response.json().get("events", [])]


def test_a_killed_worker_heals_without_a_human(stack: Stack, tiny_model_dir: Path) -> None:
    """The worker's machine dies mid-train_full. Nobody touches the run: the zombie automation marks it Crashed
    (no heartbeat for 90 s), the re-run automation starts it again with the same parameters, the new worker picks it
    up, finished stages are Cached, train_full resumes from its last complete checkpoint, the model is promoted once.
    """
    from finetune.registry import list_versions

    overrides = small_overrides(tiny_model_dir, **{"name": "worker-kill", "train.seed": 5, "train.max_steps": 10,
                                                   "train.checkpoint_every_steps": 2,
                                                   "train.keep_last_checkpoints": 2})
    registry = stack.finetune_home / "registry"
    versions_before = list_versions(registry) if registry.exists() else []
    stages = stack.finetune_home / ".cache" / "stages" / "train_full"
    before = set(stages.glob("*.work")) if stages.exists() else set()
    run_id = stack.run_deployment("finetune/regulator-cpu", overrides)

    deadline = time.monotonic() + 900
    while True:  # wait for two complete checkpoints of this run's training
        new = [w for w in stages.glob("*.work") if w not in before] if stages.exists() else []
        if new and len(_complete_checkpoints(new[0] / "checkpoints")) >= 2:
            work = new[0]
            break
        assert time.monotonic() < deadline, f"no checkpoints after 900s\n{stack.worker_log_tail()}"
        assert stack.flow_run(run_id).state.type.value not in {"COMPLETED", "FAILED", "CRASHED"}
        time.sleep(2)

    # The worker "machine" dies: the worker, the flow run it started and the training below it, all at once.
    worker = stack.pid("worker")
    for pid in [worker, *_descendants(worker)]:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    saved = _complete_checkpoints(work / "checkpoints")
    up = stack.script("up")  # the machine comes back: a new worker; the automations are left as they are
    assert up.returncode == 0, up.stdout + up.stderr
    assert stack.pid("worker") != worker
    applied = [line for line in (stack.prefect_home / "logs" / "deploy.log").read_text().splitlines()
               if line.startswith("automation finetune-crash-zombie-runs:")]
    assert applied[-1].endswith(": unchanged"), applied  # updated in place, it would forget the run's heartbeats

    crashed = stack.wait(run_id, timeout=400)  # no heartbeat for 90 s (one every 30 s) -> Crashed, by itself
    to_crashed = time.monotonic() - killed
    assert crashed.state.type.value == "CRASHED", crashed.state
    assert "heartbeat" in (crashed.state.message or ""), crashed.state.message
    rerun = _rerun_of(stack, run_id, timeout=120)
    run = stack.wait(rerun, timeout=900)
    to_completed = time.monotonic() - killed
    assert run.state.type.value == "COMPLETED", f"{run.state.message}\n{stack.worker_log_tail()}"
    assert run.parameters["attempt"] == 2 and run.parameters["overrides"] == overrides
    print(f"\nkill -> Crashed {to_crashed:.0f} s, kill -> re-run Completed {to_completed:.0f} s")

    states = stack.task_states(rerun)
    assert {states[s] for s in ("audit", "infra_check", "prepare_data")} == {"Cached"}, states
    assert states["train_full"] == "Completed" and states["deployment_gate"] == "Completed", states
    manifest = json.loads((stack.run_folder(rerun) / "stages" / "train_full.json").read_text())
    resumed = manifest["figures"]["resumed_from"]
    assert resumed is not None and int(resumed.split("-")[1]) >= saved[-1]
    assert not work.exists()  # the sealed stage keeps model, metrics and summary; checkpoints go with the work folder
    # metrics.jsonl is appended by both trainings: 1..k before the kill (k >= the checkpoint), then the resumed
    # training continues the step counter from the checkpoint to the last step.
    stage_out = Path(manifest["out_dir"])
    records = [json.loads(line) for line in (stage_out / "metrics.jsonl").read_text().splitlines()]
    steps, total = [r["step"] for r in records], records[-1]["total_steps"]
    assert manifest["figures"]["steps"] == total
    resume_step = int(resumed.split("-")[1])
    assert steps[:resume_step] == list(range(1, resume_step + 1))
    # (a kill after the last checkpoint leaves nothing to resume: the slice must then be empty, not the whole list)
    assert steps[len(steps) - (total - resume_step):] == list(range(resume_step + 1, total + 1))
    new_versions = [v for v in list_versions(registry) if v not in versions_before]
    assert len(new_versions) == 1, new_versions


def test_a_run_beyond_max_attempts_fails_at_once(stack: Stack, tiny_model_dir: Path) -> None:
    """The end of a chain of automatic re-runs: attempt > max_attempts is Failed (not Crashed, so not re-run)."""
    config = Path(__file__).resolve().parents[1] / "configs" / "regulator-cpu.yaml"
    params = {"config_path": str(config), "overrides": small_overrides(tiny_model_dir), "attempt": 4,
              "max_attempts": 3, "rerun_of": "00000000-0000-0000-0000-000000000000"}

    async def start(client):
        deployment = await client.read_deployment_by_name("finetune/regulator-cpu")
        return str((await client.create_flow_run_from_deployment(deployment.id, parameters=params)).id)

    run_id = stack.call(start)
    run = stack.wait(run_id, timeout=300)
    assert run.state.type.value == "FAILED", run.state
    assert "attempt 4 > max_attempts 3" in (run.state.message or ""), run.state.message
    assert stack.task_states(run_id) == {}  # refused before any stage


def test_a_server_restart_mid_run_does_not_lose_the_run(stack: Stack, tiny_model_dir: Path) -> None:
    """The server goes away during train_full and comes back on the same database (same port) within about a
    minute: the flow run's client retries its API calls (PREFECT_CLIENT_MAX_RETRIES, exponential back-off), so the
    run finishes. Should it end Crashed/Failed instead, it must say so and a re-run must finish from the cache."""
    overrides = small_overrides(tiny_model_dir, **{"name": "server-restart", "train.seed": 11, "train.max_steps": 8,
                                                   "train.checkpoint_every_steps": 2})
    stages = stack.finetune_home / ".cache" / "stages" / "train_full"
    before = set(stages.glob("*.work")) if stages.exists() else set()
    run_id = stack.run_deployment("finetune/regulator-cpu", overrides, stop_after="train_full")
    deadline = time.monotonic() + 900
    while not [w for w in stages.glob("*.work") if w not in before and _complete_checkpoints(w / "checkpoints")]:
        assert time.monotonic() < deadline, f"train_full did not checkpoint in 900s\n{stack.worker_log_tail()}"
        time.sleep(2)

    server = stack.pid("server")
    os.killpg(server, signal.SIGTERM)
    while True:
        try:
            os.killpg(server, 0)
            time.sleep(0.5)
        except ProcessLookupError:
            break
    up = stack.script("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert stack.pid("server") != server and "worker already running" in up.stdout

    run = stack.wait(run_id)
    if run.state.type.value != "COMPLETED":  # clearly marked; the re-run finishes from cache and checkpoints
        assert run.state.type.value in {"CRASHED", "FAILED"}, run.state
        rerun = stack.wait(stack.run_deployment("finetune/regulator-cpu", overrides, stop_after="train_full"))
        assert rerun.state.type.value == "COMPLETED", rerun.state.message
    else:
        assert stack.task_states(run_id)["train_full"] == "Completed"


def test_concurrent_runs_keep_their_own_run_folders(stack: Stack, tiny_model_dir: Path) -> None:
    """Two runs of one config at once (fresh keys, so both really build audit..prepare_data): each has its own run
    folder, and the shared stage folders they both build end up whole (the later builder keeps the first one)."""
    overrides = small_overrides(tiny_model_dir, **{"name": "concurrent", "data.seed": 4242})
    ids = [stack.run_deployment("finetune/regulator-cpu", overrides, stop_after="prepare_data") for _ in range(2)]
    runs = [stack.wait(i) for i in ids]
    assert [r.state.type.value for r in runs] == ["COMPLETED", "COMPLETED"], stack.worker_log_tail()
    a, b = runs
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two runs did not overlap"
    folders = [stack.run_folder(i) for i in ids]
    assert folders[0] != folders[1]
    outputs = []
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_dir"] == str(folder) and set(summary["stages"]) == {"audit", "infra_check", "prepare_data"}
        assert (folder / "config.yaml").is_file()
        outputs.append(summary["stages"]["prepare_data"]["out_dir"])
    assert outputs[0] == outputs[1]  # same key, one shared stage folder, sealed and intact
    marker = json.loads((Path(outputs[0]) / "COMPLETE.json").read_text())
    assert marker["stage"] == "prepare_data"
    from tasks.stage import output_valid
    assert output_valid(Path(outputs[0]))


def test_a_flow_that_fails_at_import_is_run_max_attempts_times_then_never_again(stack: Stack,
                                                                               tmp_path: Path) -> None:
    """A deployment whose entrypoint raises at import (a bad commit, a missing dependency) crashes before the
    flow's own attempt check can run. The pull step ``flows.rerun_guard.admit`` marks each run with its attempt
    before the flow is loaded and the re-run automation only follows runs marked ``re-run on crash``: exactly
    ``max_attempts`` runs, the last one marked ``last attempt``, then none."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    (tmp_path / "broken_entry.py").write_text("raise ImportError('a dependency this commit needs is missing')\n")
    config = Path(__file__).resolve().parents[1] / "configs" / "regulator-cpu.yaml"

    async def create(client):
        flow_id = (await client.read_flow_by_name("finetune")).id
        return await client.create_deployment(
            flow_id=flow_id, name="broken-at-import", entrypoint="broken_entry:finetune",
            work_pool_name="finetune-pool", work_queue_name="default", enforce_parameter_schema=False,
            parameters={"config_path": str(config), "overrides": {}, "max_attempts": 3},
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path)}},
                        {"flows.rerun_guard.admit": {}}])

    deployment_id = stack.call(create)
    first = stack.call(lambda c: c.create_flow_run_from_deployment(deployment_id))

    def runs():
        return stack.call(lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(1 for r in runs() if r.state and r.state.is_final()) < 3:
        time.sleep(3)
    time.sleep(45)  # long enough for a fourth run to be created, would the chain go on
    chain = sorted(runs(), key=lambda r: (r.parameters or {}).get("attempt", 1))
    assert [(r.parameters or {}).get("attempt", 1) for r in chain] == [1, 2, 3], (
        [(r.name, r.state and r.state.name) for r in chain], _failed_actions(stack), stack.worker_log_tail())
    assert chain[0].id == first.id and all(r.state.type.value == "CRASHED" for r in chain), [r.state for r in chain]
    assert [r.name.rsplit(" · ", 1)[0] for r in chain] == [
        "re-run on crash · attempt 1 of 3", "re-run on crash · attempt 2 of 3", "last attempt · attempt 3 of 3"]
    assert [(r.parameters or {}).get("rerun_of") for r in chain[1:]] == [str(chain[0].id), str(chain[1].id)]
