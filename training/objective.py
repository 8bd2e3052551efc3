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
    """Up-weight the tokens that carry a check line's outcome (the first token after ``": "`` on a check line) and,
    optionally, the directive (every answer token from the ``DIRECTIVE`` marker on).

    ``colon_id`` is the token of ``":"``; ``outcome_ids`` the first tokens of ``OK``, ``BREACH`` and
    ``DATA_QUALITY`` after it; ``directive_id`` the first token of ``DIRECTIVE`` after a newline
    (``training.full_ft.decision_weight`` builds one for a tokenizer). Weights of 1 are plain CE.
    """

    weight: float
    colon_id: int
    outcome_ids: tuple[int, ...]
    directive_weight: float = 1.0
    directive_id: int | None = None

    def mask(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Boolean (batch, seq) mask of the predicting positions whose next token is an outcome token."""
        out = torch.zeros_like(labels, dtype=torch.bool)
        is_outcome = torch.isin(labels[:, 1:], torch.tensor(self.outcome_ids, device=labels.device))
        out[:, :-1] = is_outcome & (input_ids[:, :-1] == self.colon_id)
        return out

    def directive_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean (batch, seq) mask of the predicting positions whose next token is the answer's ``DIRECTIVE``
        marker or comes after it (the prompt's labels are -100, so an instruction naming DIRECTIVE does not count)."""
        out = torch.zeros_like(labels, dtype=torch.bool)
        if self.directive_id is not None:
            after = torch.cumsum(labels == self.directive_id, dim=1) > 0
            out[:, :-1] = after[:, 1:] & (labels[:, 1:] != IGNORE_INDEX)
        return out

    def plain(self) -> bool:
        """True when every weight is 1 (plain cross-entropy)."""
        return self.weight == 1.0 and self.directive_weight == 1.0

    def weights(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(batch, seq) loss weight of each predicting position: 1, the outcome weight or the directive weight."""
        return (1.0 + (self.weight - 1.0) * self.mask(input_ids, labels).float()
                + (self.directive_weight - 1.0) * self.directive_mask(labels).float())


def answer_only_loss(model: Any, batch: dict[str, torch.Tensor], decision: DecisionWeight | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the label tokens of ``batch``, projecting only the positions it needs.

    ``model`` is anything whose forward takes ``input_ids``, ``attention_mask`` and ``logits_to_keep`` and returns
    ``.logits``: a Hugging Face causal LM, a PEFT model around one, or a DeepSpeed engine wrapping either. With
    ``decision``, the outcome tokens count ``decision.weight`` times and the directive's ``decision.directive_weight``
    times (a weighted mean over the label tokens).
    """
    labels = batch["labels"]
    keep = predicting_positions(labels)
    if not bool(keep.any()):
        raise ValueError("micro-batch has no label tokens: every example's answer was cut or empty")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    targets = labels[:, 1:][keep[:, :-1]]
    if decision is None or decision.plain():
        return F.cross_entropy(out.logits.float(), targets)
    losses = F.cross_entropy(out.logits.float(), targets, reduction="none")
    weights = decision.weights(batch["input_ids"], labels)[keep]
    return (losses * weights).sum() / weights.sum()
