"""Training progress in the Prefect UI: a progress artifact and log lines fed from the trainer's metrics.jsonl."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

POLL_S = 5.0


def _last_record(path: Path) -> dict | None:
    """The last complete JSON line of a metrics file (None while there is none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


@contextmanager
def watch_training(metrics_path: Path, *, label: str) -> Iterator[None]:
    """While the body runs, poll ``metrics_path`` and show step/total, loss, lr and tokens/s in the UI."""
    logger = get_run_logger()
    artifact_id = create_progress_artifact(progress=0.0, key=f"{label}-progress", description=f"{label}: step / total")
    stop = threading.Event()
    last_step = [-1]

    def report() -> None:
        rec = _last_record(metrics_path)
        if not rec or rec.get("step", -1) == last_step[0] or not rec.get("total_steps"):
            return
        last_step[0] = rec["step"]
        update_progress_artifact(artifact_id=artifact_id, progress=min(100.0, 100.0 * rec["step"] / rec["total_steps"]))
        logger.info("%s step %s/%s loss %.4f lr %.2e %.0f tok/s", label, rec["step"], rec["total_steps"],
                    rec.get("loss", float("nan")), rec.get("lr", float("nan")), rec.get("tokens_per_s", 0.0))

    def loop() -> None:
        while not stop.wait(POLL_S):
            try:
                report()
            except Exception as err:  # the UI feed must never kill training
                logger.debug("progress update failed: %s", err)

    thread = threading.Thread(target=loop, name=f"{label}-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=POLL_S + 1)
        report()
