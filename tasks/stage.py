"""What every stage task shares: cache keys from content hashes, output folders that prove they are complete,
retries, and manifests.

A stage's output lives in ``.cache/stages/<stage>/<key>/`` where ``key`` hashes what the stage reads (config
sections, upstream content hashes) plus the code it runs: the task's module and every project module it imports,
transitively, read from the source (``foundation.codegraph``), never a hand-kept list. That folder is the cache:
before a stage is called its folder is verified (completion marker present, content hash unchanged); a valid folder
is reused as a ``Cached`` task run without running the stage, whatever Prefect's result store holds (another
server, a wiped PREFECT_HOME), and a missing or corrupted folder is removed and rebuilt, so a cached run never
returns dangling paths.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.states import Completed, State

from foundation.codegraph import code_digest
from foundation.hashing import hash_json, hash_path, short
from foundation.paths import COMPLETE_MARKER, building, is_complete, mark_complete, read_marker, stage_dir

RETRIES = 2
RETRY_DELAY_S = 5
FAULTS_ENV = "FINETUNE_INJECT_FAULTS"
FAULT_DIR_ENV = "FINETUNE_FAULT_DIR"


def transient_only(task: Task, task_run: Any, state: Any) -> bool:
    """Retry condition: retry everything except the pipeline's deliberate refusals (bad data, bad config,
    a plan that cannot fit, a gate rejection), which would fail the same way again."""
    from foundation.errors import FinetuneError, TrainingError

    err = state.result(raise_on_failure=False)
    return not isinstance(err, FinetuneError) or isinstance(err, TrainingError)


class InjectedFault(RuntimeError):
    """A transient failure injected on purpose to exercise retries (see ``maybe_inject_fault``)."""


@lru_cache(maxsize=None)
def stage_code(task: Task) -> tuple[str, tuple[str, ...]]:
    """Hash and list of the project modules a stage runs: its task's module and everything that imports,
    transitively (comment- and docstring-only changes do not count; see ``foundation.codegraph``)."""
    return code_digest(task.fn.__module__)


def stage_key(task: Task, inputs: dict[str, Any]) -> str:
    """The cache key of one stage call: content hashes of its inputs and of the code the stage runs."""
    return short(hash_json({"stage": task.name, "code": stage_code(task)[0], "inputs": inputs}), 20)


def output_valid(folder: Path) -> bool:
    """True when ``folder`` is complete and its content still hashes to what the marker recorded."""
    if not is_complete(folder):
        return False
    try:
        recorded = read_marker(folder).get("content_hash")
        return recorded == hash_path(folder, exclude=frozenset({COMPLETE_MARKER}))
    except (OSError, ValueError):
        return False


def finish_stage(folder: Path, stage: str, key: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Seal a built folder (content hash + completion marker) and return the stage's manifest."""
    content_hash = hash_path(folder, exclude=frozenset({COMPLETE_MARKER}))
    manifest = {"stage": stage, "key": key, "content_hash": content_hash, "figures": figures}
    mark_complete(folder, manifest)
    return manifest


def run_stage(task: Task, *, stage: str, inputs: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Call a stage task with its content-hash cache key; rebuild when its output folder is gone or corrupted.

    The task receives ``out_dir`` (the folder named by the key) and ``key``; it must build into a temporary folder
    (``building``) and seal it with ``finish_stage``. Returns the task's manifest with what this run did:
    ``out_dir``, ``cached`` (the sealed folder was reused, nothing ran), ``wall_s`` (seconds this run spent on the
    stage) and ``code_modules`` (the project modules the key covers).
    """
    started = time.monotonic()
    key = stage_key(task, inputs)
    code = {"code_modules": list(stage_code(task)[1])}
    out_dir = stage_dir(stage, key)
    fresh = not output_valid(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    run_name = f"{stage}-{key[:8]}"
    if not fresh:
        # The sealed folder is the cache, whatever Prefect's result store holds (another server, a wiped
        # PREFECT_HOME): the stage is not run again, and its task run shows as Cached in the UI.
        state = _reuse_sealed.with_options(name=task.name, task_run_name=run_name)(out_dir=str(out_dir))
        return {**state.result(), **code, "out_dir": str(out_dir), "cached": True,
                "wall_s": round(time.monotonic() - started, 2)}
    policy = CacheKeyFnPolicy(cache_key_fn=lambda _ctx, _params: f"{stage}-{key}") + TASK_SOURCE
    configured = task.with_options(cache_policy=policy, refresh_cache=True, task_run_name=run_name)
    manifest = configured(out_dir=str(out_dir), key=key, **kwargs)
    return {**manifest, **code, "out_dir": str(out_dir), "cached": False,
            "wall_s": round(time.monotonic() - started, 2)}


@task(cache_policy=NO_CACHE, persist_result=False)
def _reuse_sealed(out_dir: str) -> State:
    """Return a sealed stage folder's manifest as a ``Cached`` state (the stage's work is already on disk)."""
    return Completed(data=read_marker(Path(out_dir)), name="Cached", message=f"sealed stage folder {out_dir} reused")


def maybe_inject_fault(stage: str) -> None:
    """Fail once for each stage named in ``$FINETUNE_INJECT_FAULTS`` (comma-separated), to test retries.

    The first failure leaves a marker in ``$FINETUNE_FAULT_DIR`` so the retry goes through. Unset: no effect.
    """
    wanted = {s.strip() for s in os.environ.get(FAULTS_ENV, "").split(",") if s.strip()}
    if stage not in wanted and "all" not in wanted:
        return
    marker = Path(os.environ.get(FAULT_DIR_ENV, ".")) / f"fault-{stage}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("injected once\n")
    raise InjectedFault(f"injected transient fault in stage {stage!r} (retry expected)")


def build_stage(out_dir: str, builder: Callable[[Path], dict[str, Any]], *, stage: str, key: str) -> dict[str, Any]:
    """Build a stage folder atomically: ``builder(tmp)`` writes into a temp folder and returns figures.

    When a concurrent run of the same key sealed the folder first, that folder is kept and its manifest returned.
    """
    final = Path(out_dir)
    with building(final, keep_if=output_valid) as tmp:
        figures = builder(tmp)
        finish_stage(tmp, stage, key, figures)
    return read_marker(final)


@contextmanager
def exclusive_stage(out_dir: str) -> Iterator[dict[str, Any] | None]:
    """Hold an exclusive lock on one stage key while its task works (two runs never share a work folder).

    Yields the manifest when another run built the output while this one waited for the lock, else None.
    """
    lock_path = Path(out_dir).with_name(Path(out_dir).name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield read_marker(Path(out_dir)) if output_valid(Path(out_dir)) else None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
