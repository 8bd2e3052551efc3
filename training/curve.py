"""The learning curve of a training run: teacher-forced decision scores on the validation split at a few steps.

Both trainers (full FT and LoRA) record it the same way, so the report can plot violation F1 against examples seen
for both on one chart. The scoring time is kept apart (``seconds``) so it never counts as training time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

CURVE_FILE = "curve.jsonl"


class LearningCurve:
    """Scores a model at step 0 (unless ``start`` is False) and at ``points`` evenly spaced steps up to
    ``total_steps``; appends each record to curve.jsonl and keeps the last in ``last``.

    ``points`` 0 turns it off (no validation data is read). A resumed run keeps the records already written.
    """

    def __init__(self, out_dir: Path, tokenizer: Any, dataset_dir: str, *, points: int, total_steps: int,
                 examples: int, examples_per_step: int, write: bool = True, bf16: bool = False,
                 start: bool = True) -> None:
        self.path = Path(out_dir) / CURVE_FILE
        self.tokenizer = tokenizer
        self.examples_per_step = examples_per_step
        self.write = write
        self.bf16 = bf16
        self.seconds = 0.0
        self.steps: set[int] = set()
        self.last: dict[str, Any] | None = None
        self.examples: list[Any] = []
        if points > 0 and total_steps > 0:
            from evaluation.teacher_forced import load_decision_examples

            self.steps = {max(1, round(total_steps * k / points)) for k in range(1, points + 1)} | ({0} if start else set())
            self.examples = load_decision_examples(dataset_dir, tokenizer, split="validation", limit=examples)
        self.steps -= {r["step"] for r in read_curve(self.path)}

    def maybe_score(self, model: Any, step: int) -> dict[str, Any] | None:
        """Score ``model`` if ``step`` is a curve point not yet recorded; return the record (or None)."""
        if step not in self.steps or not self.examples:
            return None
        from evaluation.teacher_forced import teacher_forced_scores

        started = time.perf_counter()
        scores = teacher_forced_scores(model, self.tokenizer, self.examples, bf16=self.bf16)
        took = time.perf_counter() - started
        self.seconds += took
        self.steps.discard(step)
        record = {"step": step, "examples_seen": step * self.examples_per_step, **scores, "score_s": round(took, 2)}
        self.last = record
        if self.write:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        return record


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The records of a curve.jsonl, by step (a missing file is an empty curve)."""
    path = Path(path)
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: r["step"])
