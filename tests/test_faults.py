"""Faults on the real stack (server + worker from scripts/stack.sh): transient stage failures are retried, a worker
that dies during train_full loses no finished checkpoint (the re-run resumes), concurrent runs keep their own run
folders.

What Prefect does with a run whose worker died (Prefect 3.9, process work pool, no heartbeat automation): nothing.
The run stays ``Running`` for ever: the worker that submitted it is gone and nothing else watches the process. A
person (or an automation on missing flow-run heartbeats) marks it ``Crashed`` — in the UI: the run's menu, "Change
state"; here through the API — and starts a new run of the deployment. The new run gets the same stage cache keys,
so audit/infra_check/prepare_data are ``Cached`` and train_full resumes from the last complete checkpoint in
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


def _run_dir(stack: Stack, run_id: str) -> Path:
    """The run folder a flow run wrote (its log line 'run folder: ...')."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60  # logs reach the API in batches, possibly after the final state
    while True:
        logs = stack.call(lambda c: c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))
        lines = [log.message for log in logs if log.message.startswith("run folder: ")]
        if lines or time.monotonic() > deadline:
            (line,) = lines
            return Path(line.removeprefix("run folder: "))
        time.sleep(2)


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


def test_a_worker_killed_during_train_full_loses_no_checkpoint(stack: Stack, tiny_model_dir: Path) -> None:
    from prefect.states import Crashed

    overrides = small_overrides(tiny_model_dir, **{"name": "worker-kill", "train.seed": 5, "train.max_steps": 10,
                                                   "train.checkpoint_every_steps": 2,
                                                   "train.keep_last_checkpoints": 2})
    stages = stack.finetune_home / ".cache" / "stages" / "train_full"
    before = set(stages.glob("*.work")) if stages.exists() else set()
    run_id = stack.run_deployment("finetune/regulator-cpu", overrides, stop_after="train_full")

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
    victims = [worker, *_descendants(worker)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    saved = _complete_checkpoints(work / "checkpoints")
    time.sleep(5)
    assert stack.flow_run(run_id).state.type.value == "RUNNING"  # Prefect does not notice by itself
    assert _complete_checkpoints(work / "checkpoints")[-1] == saved[-1]  # nothing trains any more

    assert stack.script("up").returncode == 0  # server still up: only a new worker starts
    assert stack.pid("worker") != worker
    stack.call(lambda c: c.set_flow_run_state(run_id, Crashed(message="worker died during train_full"), force=True))
    assert stack.flow_run(run_id).state.type.value == "CRASHED"

    rerun = stack.run_deployment("finetune/regulator-cpu", overrides, stop_after="train_full")
    run = stack.wait(rerun)
    assert run.state.type.value == "COMPLETED", f"{run.state.message}\n{stack.worker_log_tail()}"
    states = stack.task_states(rerun)
    assert states["prepare_data"] == "Cached" and states["train_full"] == "Completed"
    manifest = json.loads((_run_dir(stack, rerun) / "stages" / "train_full.json").read_text())
    resumed = manifest["figures"]["resumed_from"]
    assert resumed is not None and int(resumed.split("-")[1]) >= saved[-1]
    # metrics.jsonl is appended by both trainings: 1..k before the kill (k >= the checkpoint), then the resumed
    # training continues the step counter from the checkpoint to the last step.
    assert not work.exists()  # the sealed stage keeps model, metrics and summary; checkpoints go with the work folder
    stage_out = Path(manifest["out_dir"])
    records = [json.loads(line) for line in (stage_out / "metrics.jsonl").read_text().splitlines()]
    steps, total = [r["step"] for r in records], records[-1]["total_steps"]
    assert manifest["figures"]["steps"] == total
    resume_step = int(resumed.split("-")[1])
    assert steps[:resume_step] == list(range(1, resume_step + 1))
    assert steps[-(total - resume_step):] == list(range(resume_step + 1, total + 1))


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
    folders = [_run_dir(stack, i) for i in ids]
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
