"""A real local Prefect stack for tests (pytest plugin): server + process work pool + deployments + worker, brought
up by ``scripts/stack.sh`` itself on a free port with a temporary PREFECT_HOME and FINETUNE_HOME, stopped in a
finalizer. One stack per test session, shared by every module that lists this plugin in ``pytest_plugins``.

Also: the small run overrides (tiny model, 120 examples, 4 steps) and helpers that run a deployment through the
CLI and read flow runs, task runs and artifacts back through the API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack.sh"
PREFECT = ROOT / ".venv" / "bin" / "prefect"
STAGES = ("audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "deployment_gate")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def small_overrides(model_dir: Path, **extra: Any) -> dict[str, Any]:
    """Overrides that make the CPU demo config finish in a few minutes on a busy 2-core machine."""
    return {
        "model.ref": str(model_dir), "model.max_seq_len": 1024, "data.n_examples": 120, "data.train_balanced": 16,
        "data.train_drills": 8, "data.train_gap_drills": 4,
        "train.max_steps": 4, "train.curve_points": 0, "lora.sweep_lrs": [], "eval.base_max_new_tokens": 8,
        "eval.max_examples": 4, "eval.max_new_tokens": 24, "eval.bootstrap_samples": 100,
        "gate.f1_floor": 0, "gate.rouge_floor": 0, "gate.forgetting_ceiling": 100,
        # a tiny random model is not judged on the real filings (they are still scored: the path runs)
        "gate.real_max_false_violations": None, "gate.real_max_invented_figures": None,
        "gate.real_max_unreadable_answers": None,
        # the stacks' runs share a registry: each judged alone (tests/test_flow_spine.py compares with production)
        "gate.max_regression_vs_production": None,
        "audit.min_examples_for_full_ft": 10, **extra,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """Handle of a running stack: its environment (for CLI calls and the API client) and where it writes."""

    env: dict[str, str]
    port: int
    prefect_home: Path
    finetune_home: Path
    runs: dict[str, str] = field(default_factory=dict)  # name -> flow run id, shared between modules (e.g. the UI)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        """Run ``scripts/stack.sh ARGS`` with this stack's environment."""
        return subprocess.run(["bash", str(STACK), *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def pid(self, name: str) -> int:
        """PID (= process group) of the stack's ``server`` or ``worker``."""
        return int((self.prefect_home / f"{name}.pid").read_text())

    def run_deployment(self, name: str, overrides: dict[str, Any], *, env: dict[str, str] | None = None,
                       stop_after: str | None = None) -> str:
        """``prefect deployment run NAME --param overrides=...`` (no wait); returns the flow run id.

        The config path is passed absolute: the flow resolves a relative one against FINETUNE_HOME, which the
        stack moves to a temporary folder (the deployment's default, ``configs/...``, works where FINETUNE_HOME
        is the checkout, i.e. unset).
        """
        config = ROOT / "configs" / ("regulator-cpu.yaml" if name.endswith("-cpu") else "regulator.yaml")
        cmd = [str(PREFECT), "deployment", "run", name, "--param", f"overrides={json.dumps(overrides)}",
               "--param", f"config_path={config}"]
        if stop_after:
            cmd += ["--param", f"stop_after={stop_after}"]
        if env:
            cmd += ["--job-variable", f"env={json.dumps(env)}"]
        out = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout)
        assert match, out.stdout
        return match.group(1)

    def run_with_params(self, name: str, params: dict[str, Any]) -> str:
        """``prefect deployment run NAME --params JSON`` (no wait), for any deployment; returns the flow run id."""
        out = subprocess.run([str(PREFECT), "deployment", "run", name, "--params", json.dumps(params)], env=self.env,
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout)
        assert match, out.stdout
        return match.group(1)

    def call(self, coro_fn, *args: Any) -> Any:
        """Run ``coro_fn(client, *args)`` with a Prefect client of this stack."""
        from prefect.client.orchestration import PrefectClient

        async def go():
            async with PrefectClient(self.api_url) as client:
                return await coro_fn(client, *args)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(go())
        # a loop runs in this thread already (Playwright's sync API while a browser is open): use another thread
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def flow_run(self, run_id: str):
        return self.call(lambda c: c.read_flow_run(run_id))

    def wait(self, run_id: str, *, timeout: float = 900, until: set[str] = FINAL) -> Any:
        """Poll a flow run until its state type is in ``until``; fail with the worker log's tail on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run.state and run.state.type.value in until:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} still {run.state and run.state.name} after {timeout}s; "
                                     f"worker log tail:\n{self.worker_log_tail()}")
            time.sleep(3)

    def task_states(self, run_id: str) -> dict[str, str]:
        """Stage name -> state name of every task run of a flow run (task run names are ``<stage>-<key8>``)."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = self.call(lambda c: c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))))
        return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs if r.state}

    def task_names(self, run_id: str) -> set[str]:
        """Task run names of a flow run: ``<stage>-<first 8 characters of the stage's cache key>``."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = self.call(lambda c: c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))))
        return {r.name for r in runs}

    def artifacts(self, run_id: str) -> dict[str, Any]:
        """Artifact key -> latest artifact of a flow run."""
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        arts = self.call(lambda c: c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))))
        return {a.key: a for a in arts if a.key}

    def run_folder(self, run_id: str) -> Path:
        """The run folder a flow run wrote (its log line 'run folder: ...')."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        deadline = time.monotonic() + 60  # logs reach the API in batches, possibly after the final state
        while True:
            logs = self.call(lambda c: c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))
            lines = [log.message for log in logs if log.message.startswith("run folder: ")]
            if lines or time.monotonic() > deadline:
                (line,) = lines
                return Path(line.removeprefix("run folder: "))
            time.sleep(2)

    def worker_log_tail(self, n: int = 40) -> str:
        log = self.prefect_home / "logs" / "worker.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no worker log)"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """Bring the stack up through ``scripts/stack.sh up``; always ``down`` at the end of the session."""
    base = tmp_path_factory.mktemp("stack")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(base / "prefect"), "FINETUNE_HOME": str(base / "home"), "PREFECT_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "INFO",
        "FINETUNE_FAULT_DIR": str(base / "faults"),
    })
    handle = Stack(env=env, port=port, prefect_home=base / "prefect", finetune_home=base / "home")
    try:
        up = handle.script("up")
        assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield handle
    finally:
        handle.script("down", timeout=120)


@pytest.fixture(scope="session")
def completed_run(stack: Stack, tiny_model_dir: Path) -> str:
    """One full run of the CPU deployment (tiny model, small data), shared with the UI test."""
    if "completed" not in stack.runs:
        run_id = stack.run_deployment("finetune/regulator-cpu", small_overrides(tiny_model_dir))
        run = stack.wait(run_id)
        assert run.state.type.value == "COMPLETED", f"{run.state.name}: {run.state.message}\n{stack.worker_log_tail()}"
        stack.runs["completed"] = run_id
    return stack.runs["completed"]
