"""Teacher-forced decision scores: how often the model puts the right outcome on each check line, given the rest.

For every check line of a reference answer (``- CET1_RATIO 4.30% vs 4.5% min: BREACH``) the model reads the
prompt and the reference answer up to the outcome, and its choice among the first tokens of ``OK``, ``BREACH`` and
``DATA_QUALITY`` is taken as its outcome for that line. One forward pass per example scores every line, so this is
cheap enough to run during training (learning curves) and to compare learning rates (the LoRA sweep), where
generating whole answers would cost minutes. The violation set the chosen outcomes imply gives a teacher-forced
violation F1; it is an upper bound of the generated answers' F1 (the figures are given, not generated), so reports
label it "teacher-forced" and the headline metrics stay generation-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from regulator.answers import CHECK_LINE, OUTCOMES, decides, implied_violations
from regulator.rules import RULE_CODES


@dataclass(frozen=True)
class DecisionExample:
    """One scored example: its token ids, and per check line the (position, code, reference outcome).

    ``position`` indexes ``input_ids``: the token that starts the outcome word on that line.
    """

    input_ids: list[int]
    decisions: list[tuple[int, str, str]]


def outcome_token_ids(tokenizer: Any) -> dict[str, int]:
    """The first token of each outcome word as it follows ``": "`` (they must differ, else no choice is read)."""
    ids = {o: tokenizer(f": {o}", add_special_tokens=False)["input_ids"][1] for o in OUTCOMES}
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"the tokenizer gives outcomes the same first token: {ids}")
    return ids


def decision_example(tokenizer: Any, input_ids: Sequence[int], labels: Sequence[int], target: str) -> DecisionExample:
    """Locate the outcome token of every check line of ``target`` inside a tokenised example.

    ``labels`` marks the prompt with -100; the answer tokens follow it and were tokenised from ``target`` alone
    (as ``data_contracts.prepare.tokenise`` does), so character offsets of ``target`` map onto them.
    """
    prompt_len = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    offsets = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    decisions, start = [], 0
    for line in target.splitlines(keepends=True):
        match = CHECK_LINE.match(line.rstrip("\r\n"))
        if match is not None and match.group(1).upper() in RULE_CODES and decides(match.group(3)):
            char = start + match.start(3)
            token = next((i for i, (_, end) in enumerate(offsets) if end > char), None)
            if token is not None and prompt_len + token < len(input_ids):
                decisions.append((prompt_len + token, match.group(1).upper(), match.group(3).upper()))
        start += len(line)
    return DecisionExample(list(input_ids), decisions)


@torch.no_grad()
def predict_outcomes(
    model: Any, examples: Sequence[DecisionExample], outcome_ids: dict[str, int], *, pad_id: int,
    batch_size: int = 8, bf16: bool = False,
) -> list[list[str]]:
    """The model's outcome for every decision of every example (teacher-forced), batched with right padding.

    A causal model's choice at a position reads only the tokens before it, so each example is cut after its last
    outcome's context (the measures and the closing after the check lines are never run), and batches are formed
    from examples of similar length (less padding); the outcomes come back in the order of ``examples``.
    """
    names = list(outcome_ids)
    candidates = torch.tensor([outcome_ids[n] for n in names])
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    needed = [max((p for p, _, _ in e.decisions), default=0) for e in examples]  # the tokens before the last outcome
    order = sorted(range(len(examples)), key=lambda i: needed[i])
    out: list[list[str]] = [[] for _ in examples]
    try:
        for begin in range(0, len(order), batch_size):
            chunk = [i for i in order[begin : begin + batch_size] if needed[i] > 0]
            if not chunk:
                continue
            width = max(needed[i] for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            keep = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                ids[row, : needed[i]] = torch.tensor(examples[i].input_ids[: needed[i]])
                mask[row, : needed[i]] = 1
                for position, _, _ in examples[i].decisions:
                    keep[row, position - 1] = True  # the logits that predict the outcome token
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and not torch.cuda.is_available()):
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            choice = logits.float()[:, candidates].argmax(dim=-1).tolist()
            cursor = 0
            for i in chunk:  # boolean-mask order is row-major, and decisions are in position order per row
                out[i] = [names[c] for c in choice[cursor : cursor + len(examples[i].decisions)]]
                cursor += len(examples[i].decisions)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return out


def decision_scores(examples: Sequence[DecisionExample], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Teacher-forced violation F1 (micro), check-line accuracy and per-code accuracy from predicted outcomes."""
    tp = fp = fn = correct = total = 0
    per_code: dict[str, list[int]] = {}
    for example, outcomes in zip(examples, predicted):
        ref = {code: outcome for _, code, outcome in example.decisions}
        pred = {code: outcome for (_, code, _), outcome in zip(example.decisions, outcomes)}
        for (_, code, reference), outcome in zip(example.decisions, outcomes):
            hit = int(reference == outcome)
            correct += hit
            total += 1
            per_code.setdefault(code, [0, 0])
            per_code[code][0] += hit
            per_code[code][1] += 1
        true, guess = implied_violations(ref), implied_violations(pred)
        tp, fp, fn = tp + len(true & guess), fp + len(guess - true), fn + len(true - guess)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    return {
        "tf_f1_micro": f1,
        "tf_check_accuracy": correct / total if total else None,
        "tf_per_code_accuracy": {c: round(h / n, 4) for c, (h, n) in sorted(per_code.items())},
        "tf_examples": len(examples),
    }


def teacher_forced_scores(
    model: Any, tokenizer: Any, examples: Sequence[DecisionExample], *, batch_size: int = 8, bf16: bool = False
) -> dict[str, Any]:
    """Score ``model`` on prepared decision examples (see :func:`decision_example`)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    predicted = predict_outcomes(model, examples, outcome_token_ids(tokenizer), pad_id=pad_id,
                                 batch_size=batch_size, bf16=bf16)
    return decision_scores(examples, predicted)


def load_decision_examples(dataset_dir: str, tokenizer: Any, *, split: str = "validation",
                           limit: int | None = None) -> list[DecisionExample]:
    """Decision examples of a prepared dataset split (the first ``limit`` rows)."""
    from datasets import load_from_disk

    ds = load_from_disk(dataset_dir)[split]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [decision_example(tokenizer, ids, labels, target)
            for ids, labels, target in zip(ds["input_ids"], ds["labels"], ds["target"])]
