"""The base model's own answers to the shipped general instructions, generated once per model and cached.

The ``replay`` list feeds rehearsal during training (forgetting mitigation); the ``heldout`` list is the reference
of the forgetting measure. Both are keyed by the base model's content hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from foundation.hashing import short
from foundation.paths import building, is_complete, mark_complete, stage_dir

MAX_NEW_TOKENS = 96


def general_answers_file(model_dir: str, model_hash: str, split: str) -> Path:
    """Return a JSONL of {prompt, answer} for ``split`` ('replay' or 'heldout'), generating it on first use."""
    folder = stage_dir("general_answers", f"{short(model_hash, 20)}-{split}")
    path = folder / "answers.jsonl"
    if is_complete(folder) and path.is_file():
        return path
    from evaluation.forgetting import base_reference_answers, load_general_prompts
    from evaluation.generate import load_model_for_eval

    prompts = load_general_prompts(split)  # type: ignore[arg-type]
    model, tokenizer = load_model_for_eval(Path(model_dir))
    answers = base_reference_answers(model, tokenizer, prompts, MAX_NEW_TOKENS)
    with building(folder) as tmp:
        (tmp / "answers.jsonl").write_text(
            "".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in zip(prompts, answers))
        )
        mark_complete(tmp, {"model_hash": model_hash, "split": split, "n": len(prompts)})
    return path
