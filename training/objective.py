"""The training objective: next-token cross-entropy on the answer tokens, with logits computed only where the loss
looks.

A causal LM's head (hidden -> 49k vocabulary for SmolLM2) is about a fifth of the forward FLOPs, and on the
regulator task roughly half the tokens are the prompt, whose labels are -100. Passing a boolean ``logits_to_keep``
mask (transformers 5) makes the model project only the positions whose *next* token is a label, so the prompt and
the padding cost the transformer body but not the head. The loss equals Hugging Face's own (mean over label
tokens of the micro-batch); ``tests/test_objective.py`` checks that on a real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of the positions whose next token carries a label (the last position never does)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


@dataclass(frozen=True)
class DecisionWeight:
    """Up-weight the tokens that carry a check line's outcome: the first token after ``": "`` on a check line.

    ``colon_id`` is the token of ``":"``; ``outcome_ids`` the first tokens of ``OK``, ``BREACH`` and
    ``DATA_QUALITY`` after it (``training.full_ft.decision_weight`` builds one for a tokenizer). ``weight`` 1 is
    plain CE.
    """

    weight: float
    colon_id: int
    outcome_ids: tuple[int, ...]

    def mask(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Boolean (batch, seq) mask of the predicting positions whose next token is an outcome token."""
        out = torch.zeros_like(labels, dtype=torch.bool)
        is_outcome = torch.isin(labels[:, 1:], torch.tensor(self.outcome_ids, device=labels.device))
        out[:, :-1] = is_outcome & (input_ids[:, :-1] == self.colon_id)
        return out


def answer_only_loss(model: Any, batch: dict[str, torch.Tensor], decision: DecisionWeight | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the label tokens of ``batch``, projecting only the positions it needs.

    ``model`` is anything whose forward takes ``input_ids``, ``attention_mask`` and ``logits_to_keep`` and returns
    ``.logits``: a Hugging Face causal LM, a PEFT model around one, or a DeepSpeed engine wrapping either. With
    ``decision``, the outcome tokens count ``decision.weight`` times (a weighted mean over the label tokens).
    """
    labels = batch["labels"]
    keep = predicting_positions(labels)
    if not bool(keep.any()):
        raise ValueError("micro-batch has no label tokens: every example's answer was cut or empty")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    targets = labels[:, 1:][keep[:, :-1]]
    if decision is None or decision.weight == 1.0:
        return F.cross_entropy(out.logits.float(), targets)
    losses = F.cross_entropy(out.logits.float(), targets, reduction="none")
    weights = 1.0 + (decision.weight - 1.0) * decision.mask(batch["input_ids"], labels)[keep].float()
    return (losses * weights).sum() / weights.sum()
