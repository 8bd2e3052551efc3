"""Replay mixing: blend general-domain examples into the training stream to limit catastrophic forgetting.

Sources: a JSONL file with one ``{"prompt": ..., "answer": ...}`` object per line (the lead's cache of base-model
answers, or a user-supplied file), or a JSON file holding such a list directly or under a ``"replay"`` key (the
shape of ``evaluation/general_prompts.json``). Replay examples are rendered with the tokenizer's chat template as a
single user turn with the generation prompt, and the loss is taken on the answer + eos only, exactly like the
domain examples.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from foundation.errors import DataError
from training.data import IGNORE_INDEX, Example


def read_replay_pairs(path: Path) -> list[dict[str, str]]:
    """Read ``{prompt, answer}`` pairs from a JSONL or JSON file; raise DataError naming the bad line or field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"replay file {path} does not exist; pass an existing JSONL of prompt/answer pairs")
    text = path.read_text(encoding="utf-8")
    rows: list[Any]
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
    else:
        data = json.loads(text)
        rows = data.get("replay", []) if isinstance(data, dict) else data
    pairs = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
            raise DataError(f"{path}: entry {n} needs string fields 'prompt' and 'answer', got {str(row)[:120]}")
        if row["prompt"].strip() and row["answer"].strip():
            pairs.append({"prompt": row["prompt"], "answer": row["answer"]})
    if not pairs:
        raise DataError(f"{path}: no usable prompt/answer pairs")
    return pairs


def tokenize_pair(tokenizer: Any, prompt: str, answer: str, *, max_length: int | None = None) -> Example:
    """Tokenise one pair with the chat template; labels are -100 over the prompt, the answer and eos after it."""
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Example(ids, labels)


def mix_replay(
    examples: list[Example], replay: list[Example], *, fraction: float, seed: int
) -> tuple[list[Example], int]:
    """Return ``examples`` plus replay examples making up about ``fraction`` of the trained (label) tokens.

    Replay examples are drawn in a seeded shuffled order, cycling when the pool is smaller than needed. Returns the
    mixed list (domain examples first; batching shuffles) and the number of replay examples added.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"replay_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or not replay:
        return list(examples), 0

    def label_tokens(e: Example) -> int:
        return sum(1 for t in e.labels if t != IGNORE_INDEX)

    target = fraction / (1.0 - fraction) * sum(label_tokens(e) for e in examples)
    order = list(range(len(replay)))
    random.Random(f"replay:{seed}").shuffle(order)
    added: list[Example] = []
    got = 0
    while got < target:
        e = replay[order[len(added) % len(order)]]
        added.append(e)
        got += max(1, label_tokens(e))
    return list(examples) + added, len(added)


def load_replay(path: Path, tokenizer: Any, *, max_length: int | None = None) -> list[Example]:
    """Read and tokenise a replay file."""
    return [tokenize_pair(tokenizer, p["prompt"], p["answer"], max_length=max_length) for p in read_replay_pairs(path)]
