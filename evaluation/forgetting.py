"""Forgetting: how much worse a tuned model predicts general-domain answers than the base model did.

The measure is the mean token negative log-likelihood (teacher-forced, prompt tokens masked) of fixed reference
answers to fixed general instructions (``general_prompts.json``, split ``heldout``). The reference answers are the
base model's own greedy answers, generated once and cached by the caller: the base model then scores its own
behaviour, and the increase of a tuned model's NLL over the base's is the share of that behaviour it lost.
The ``replay`` split may be used by training for rehearsal; the two splits never overlap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from evaluation.generate import generate_answers
from foundation.errors import EvaluationError

GENERAL_PROMPTS = Path(__file__).with_name("general_prompts.json")


def load_general_prompts(split: Literal["heldout", "replay"], *, path: Path = GENERAL_PROMPTS) -> list[str]:
    """Return the general instructions of ``split``; refuses a file whose splits overlap or are empty."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    heldout, replay = data.get("heldout") or [], data.get("replay") or []
    overlap = set(heldout) & set(replay)
    if overlap or not heldout or not replay:
        raise EvaluationError(
            f"{path}: 'heldout' and 'replay' must be non-empty and disjoint (overlap: {sorted(overlap)[:3]})"
        )
    if split not in ("heldout", "replay"):
        raise EvaluationError(f"general prompt split must be 'heldout' or 'replay', got {split!r}")
    return list(heldout if split == "heldout" else replay)


def chat_prompt(tokenizer: Any, instruction: str) -> str:
    """Render one user instruction with the tokenizer's chat template, generation prompt included."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
    )


def base_reference_answers(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, *, batch_size: int = 8
) -> list[str]:
    """Return the base model's greedy answers to the general instructions ``prompts`` (plain, not templated)."""
    templated = [chat_prompt(tokenizer, p) for p in prompts]
    return generate_answers(model, tokenizer, templated, max_new_tokens=max_new_tokens, batch_size=batch_size)


@torch.inference_mode()
def answer_nll(
    model: Any, tokenizer: Any, prompts: list[str], answers: list[str], *, batch_size: int = 4
) -> dict[str, float | int]:
    """Mean token NLL and perplexity of ``answers`` given the instructions ``prompts`` (teacher forcing).

    Only answer tokens are scored; the mean is over all answer tokens of all examples.

    Returns:
        ``{"mean_nll", "perplexity", "n_tokens", "n_examples"}``.
    """
    if len(prompts) != len(answers):
        raise EvaluationError(f"{len(prompts)} prompts but {len(answers)} answers: they must be aligned")
    pairs = []
    for prompt, answer in zip(prompts, answers):
        p_ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        pairs.append((p_ids, a_ids))
    if sum(len(a) for _, a in pairs) == 0:
        raise EvaluationError("the reference answers are all empty: regenerate them with base_reference_answers")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (p, a) in enumerate(chunk):
            # Right padding: positions of the real tokens start at 0, as during training.
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            mask[i, : len(p) + len(a)] = 1
            labels[i, len(p) : len(p) + len(a)] = torch.tensor(a, dtype=torch.long)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shifted = labels[:, 1:].to(device)
        total_nll += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        total_tokens += int((shifted != -100).sum())
    mean = total_nll / total_tokens
    return {"mean_nll": mean, "perplexity": math.exp(mean), "n_tokens": total_tokens, "n_examples": len(pairs)}


def forgetting_increase(base_nll: float, tuned_nll: float) -> float:
    """Relative NLL increase of the tuned model over the base: ``(tuned - base) / base`` (0.1 = 10% worse)."""
    for name, value in (("base_nll", base_nll), ("tuned_nll", tuned_nll)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EvaluationError(f"{name} = {value!r} is not a finite number: the NLL measurement failed")
    if base_nll <= 0:
        raise EvaluationError(f"base_nll = {base_nll} must be positive to measure a relative increase")
    return (tuned_nll - base_nll) / base_nll
