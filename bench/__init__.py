"""Benchmarks: each module has ``run() -> dict`` of figures and ratios measured in one run.

Run all or some with ``python -m bench [NAME ...]``; results go to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def step_parser(doc: str, *, micro_batch: int, seq_len: int) -> argparse.ArgumentParser:
    """The options every training benchmark takes: batch shape, warm-up and timed steps, ZeRO stage, JSON output."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--micro-batch", type=int, default=micro_batch)
    parser.add_argument("--seq-len", type=int, default=seq_len)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """Write a benchmark's figures to ``path`` when one was given."""
    if path:
        path.write_text(json.dumps(result, indent=2))
