"""The deployments of prefect.yaml through a real server and worker (brought up by scripts/stack.sh): a run of
``finetune/regulator-cpu`` completes with every stage visible in the API, a second run is served from the cache,
a run on bad data stops at prepare_data with the contract report and never trains."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.prefect_stack")  # before its import: its asserts report their values

from tests.prefect_stack import STAGES, Stack, small_overrides

pytest_plugins = ["tests.prefect_stack"]
pytestmark = [pytest.mark.server, pytest.mark.timeout(1500)]


def test_stack_is_up_and_idempotent(stack: Stack) -> None:
    server, worker = stack.pid("server"), stack.pid("worker")
    again = stack.script("up")
    assert again.returncode == 0, again.stderr
    assert "server already running" in again.stdout and "worker already running" in again.stdout
    assert (stack.pid("server"), stack.pid("worker")) == (server, worker)
    status = stack.script("status")
    assert status.returncode == 0 and f"http://127.0.0.1:{stack.port}" in status.stdout
    deployment = stack.call(lambda c: c.read_deployment_by_name("finetune/regulator"))
    assert deployment.parameters["config_path"] == "configs/regulator.yaml"
    assert deployment.parameters["overrides"] == {"data.source": "filings/incoming", "data.mix_synthetic": 6800}
    assert deployment.work_pool_name == "finetune-pool"
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * 1" and schedule.schedule.timezone == "Europe/Berlin"
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(Path(__file__).resolve().parents[1])}},
        {"flows.rerun_guard.admit": {}}]
    assert deployment.entrypoint == "flows.finetune:finetune"  # a module path: see the test on the checkout's registry
    quarterly = stack.call(lambda c: c.read_deployment_by_name("analyze/quarterly"))
    (schedule,) = quarterly.schedules
    assert schedule.schedule.cron == "0 6 15 1,4,7,10 *" and schedule.active is False


def test_deployment_run_completes_with_every_stage_visible(stack: Stack, completed_run: str) -> None:
    assert stack.task_states(completed_run) == {stage: "Completed" for stage in STAGES}
    artifacts = stack.artifacts(completed_run)
    for key in ("audit-report", "infra-check", "data-stats", "train-full-progress", "comparison", "gate-decision"):
        assert key in artifacts, sorted(artifacts)
    runs = sorted((stack.finetune_home / "runs").iterdir())
    summary = json.loads((runs[-1] / "summary.json").read_text())
    assert set(summary["stages"]) == set(STAGES)


def test_second_run_is_served_from_the_cache(stack: Stack, completed_run: str, tiny_model_dir: Path) -> None:
    run_id = stack.run_deployment("finetune/regulator-cpu", small_overrides(tiny_model_dir))
    run = stack.wait(run_id)
    assert run.state.type.value == "COMPLETED", run.state.message
    first, second = stack.task_names(completed_run), stack.task_names(run_id)
    if first != second:  # keys hash the project's code: someone edited it between the runs (shared checkout)
        pytest.skip(f"stage keys changed between the two runs (code edited meanwhile): {first} -> {second}")
    assert stack.task_states(run_id) == {stage: "Cached" for stage in STAGES}


def test_another_server_with_an_empty_result_store_recomputes_nothing(stack: Stack, completed_run: str,
                                                                       tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same config through another Prefect server (``finetune run``'s own temporary one, a fresh PREFECT_HOME:
    no result store, no cache records): every stage is reused from its sealed folder, nothing runs again."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    first = json.loads((stack.run_folder(completed_run) / "summary.json").read_text())["stages"]
    overrides = small_overrides(tiny_model_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "other-prefect-home"), "FINETUNE_HOME": str(stack.finetune_home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    cmd = [str(root / ".venv" / "bin" / "finetune"), "run", str(root / "configs" / "regulator-cpu.yaml")]
    cmd += [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = re.search(r"finetune run finished: (\S+)", out.stdout)
    assert folder, out.stdout
    second = json.loads((Path(folder.group(1)) / "summary.json").read_text())["stages"]
    if {s: first[s]["key"] for s in STAGES} != {s: second[s]["key"] for s in STAGES}:
        pytest.skip("stage keys changed between the two runs (the project's code was edited meanwhile)")
    assert {s: second[s]["cached"] for s in STAGES} == {s: True for s in STAGES}, second
    assert {s: second[s]["content_hash"] for s in STAGES} == {s: first[s]["content_hash"] for s in STAGES}
    assert "(cached)" in out.stdout and "Deployment gate: PASSED" in out.stdout
    print("\nstage wall time, first server -> second server (s): " + ", ".join(
        f"{s} {first[s]['wall_s']:.1f} -> {second[s]['wall_s']:.1f}" for s in STAGES))


def test_a_promotion_into_the_checkouts_registry_does_not_shadow_the_flows_code(stack: Stack,
                                                                                tiny_model_dir: Path) -> None:
    """`make demo` promotes into `<checkout>/registry/`, then `make stack-up` and a deployment run: the run's process
    works in the checkout, and a script entrypoint (`flows/finetune.py:...`) was loaded as a module named `finetune`
    whose search path is the checkout, so `finetune.registry` resolved to the `registry/` folder (ImportError at
    load). The entrypoints are module paths now; this drives that exact sequence with the real worker."""
    from finetune.registry import promote

    root = Path(__file__).resolve().parents[1]
    registry = root / "registry"
    made = not registry.exists()  # a developer's own demo registry is the failing condition already: left as it is
    try:
        if made:
            promote(registry, tiny_model_dir, card={"metrics": {}, "decision": "test: shadowing"})
        run_id = stack.run_deployment("finetune/regulator-cpu", small_overrides(tiny_model_dir),
                                      stop_after="prepare_data")
        run = stack.wait(run_id)
    finally:
        if made:
            import shutil

            shutil.rmtree(registry, ignore_errors=True)
    assert run.state.type.value == "COMPLETED", f"{run.state.message}\n{stack.worker_log_tail()}"
    states = stack.task_states(run_id)
    assert {s: states.get(s) in ("Completed", "Cached") for s in STAGES[:3]} == {s: True for s in STAGES[:3]}, states
    assert run.name.startswith("re-run on crash · attempt 1 of 3 · "), run.name


def _bad_jsonl(path: Path) -> Path:
    """A raw table (columns as in the data contract) with a duplicate id and an unknown violation code."""
    from regulator.generator import generate_dataset

    df = generate_dataset(n_examples=30, seed=5, out_dir=path.parent / "raw", eu_fraction=0.5)
    df["source_file"] = ""
    df.loc[1, "id"] = df.loc[0, "id"]
    df.at[2, "violations"] = ["CET1_RATIO", "MADE_UP_CODE"]
    df.to_json(path, orient="records", lines=True)
    return path


def test_bad_data_fails_at_prepare_data_with_the_contract_report(stack: Stack, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    source = _bad_jsonl(tmp_path / "bad.jsonl")
    run_id = stack.run_deployment("finetune/regulator-cpu", small_overrides(tiny_model_dir, **{"data.source": str(source)}))
    run = stack.wait(run_id)
    assert run.state.type.value == "FAILED"
    states = stack.task_states(run_id)
    assert states["prepare_data"] == "Failed"
    assert not {"train_full", "train_lora", "evaluate", "deployment_gate"} & set(states)
    report = stack.artifacts(run_id)["data-contract-failure"]
    assert "expect_column_values_to_be_unique" in report.data and "violations_joined" in report.data


def test_weekly_runs_of_the_deployment_around_a_drop_of_filings(stack: Stack, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """The weekly deployment's cycle through the real server and worker, on a drop folder of filings (data.source,
    topped up by data.mix_synthetic; the shipped `finetune/regulator` points at filings/incoming), champion /
    challenger: the first promotion has nothing to compare with and says so; a run with no new filings reuses every
    training and evaluation stage (Cached) and says "no new data"; filings are dropped into the folder; the next run
    retrains, the production model answers the same test split (evaluate_production) and a candidate required to
    beat production by 0.5 F1 is refused naming production; the same candidate at the usual margin reuses
    production's answers (Cached) and is promoted. The card records the training data's provenance."""
    import time

    from finetune.registry import read_card, read_history
    from regulator.generator import generate_dataset

    generate_dataset(64, seed=21, out_dir=tmp_path / "received")
    arrived = sorted((tmp_path / "received" / "xbrl").iterdir())
    drop = tmp_path / "drop"
    drop.mkdir()
    for src in arrived[:40]:
        (drop / src.name).write_bytes(src.read_bytes())
    registry = tmp_path / "registry"
    overrides = small_overrides(tiny_model_dir, **{
        "name": "deploy-weekly", "gate.registry_dir": str(registry), "eval.real_source": None,
        "gate.max_regression_vs_production": 0.0, "data.source": str(drop), "data.mix_synthetic": 100,
        "data.train_balanced": 0})

    def run(**extra) -> tuple[Any, dict[str, str], dict, float]:
        started = time.monotonic()
        run_id = stack.run_deployment("finetune/regulator-cpu", {**overrides, **extra})
        done = stack.wait(run_id)
        seconds = time.monotonic() - started
        summary = json.loads((stack.run_folder(run_id) / "summary.json").read_text())
        return done, stack.task_states(run_id), summary["result"], seconds

    def criterion(result: dict, name: str) -> dict:
        (found,) = [c for c in result["gate"]["decision"]["criteria"] if c["name"] == name]
        return found

    first, states, result, _ = run()
    assert first.state.type.value == "COMPLETED", f"{first.state.message}\n{stack.worker_log_tail()}"
    assert "evaluate_production" not in states and result["gate_passed"]
    v1 = result["promoted_version"]
    assert "no model in production yet" in criterion(result, "vs_production")["message"]
    provenance = read_card(registry, v1)["data_provenance"]
    assert provenance["filings"]["rows"] == 40 and provenance["generated"]["rows"] == 100

    same, states, result, seconds = run()  # no new filings
    assert same.state.type.value == "COMPLETED", same.state.message
    assert {states[s] for s in ("prepare_data", "train_full", "train_lora", "evaluate")} == {"Cached"}, states
    assert "evaluate_production" not in states and "no new data" in result["no_new_data"]
    assert "is production " + v1 + " itself" in criterion(result, "vs_production")["message"]
    assert len(read_history(registry)) == 1  # nothing switched
    print(f"\nweekly run without new filings: {seconds:.0f} s from `prefect deployment run` to Completed")

    for src in arrived[40:]:  # filings arrive
        (drop / src.name).write_bytes(src.read_bytes())
    demanding, states, result, seconds = run(**{"gate.max_regression_vs_production": -0.5})
    assert states["prepare_data"] == states["train_full"] == states["evaluate_production"] == "Completed", states
    assert demanding.state.type.value == "FAILED" and not result["gate_passed"]
    refused = criterion(result, "not_worse_than_production")
    assert not refused["passed"] and f"production {v1}" in refused["message"], refused
    print(f"weekly run after 24 new filings (retrained, refused): {seconds:.0f} s")

    second, states, result, _ = run()  # the same candidate, the usual margin: production's answers are reused
    assert second.state.type.value == "COMPLETED", second.state.message
    assert states["train_full"] == states["evaluate_production"] == "Cached", states
    compared = criterion(result, "not_worse_than_production")
    assert compared["passed"] and v1 in compared["message"] and compared["figure"] is not None
    v2 = result["promoted_version"]
    assert v2 != v1 and read_card(registry, v2)["data_provenance"]["filings"]["rows"] == 64
