"""Learning-rate schedule: linear warmup to the peak, then cosine decay to a floor (a fraction of the peak)."""

from __future__ import annotations

import math
from functools import partial

import torch


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Return the number of warmup steps: ``warmup_ratio`` of ``total_steps``, rounded up (0 when the ratio is 0)."""
    return math.ceil(total_steps * warmup_ratio)


def lr_lambda(step: int, total_steps: int, warmup_ratio: float = 0.05, min_lr_ratio: float = 0.1) -> float:
    """Return the multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Warmup rises linearly so that the first step already moves (``(step + 1) / warmup``) and the last warmup
    step reaches 1.0; the cosine then falls from 1.0 to ``min_lr_ratio`` at the last step (``total_steps - 1``).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup = warmup_steps(total_steps, warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = total_steps - warmup - 1
    if decay_steps <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a ``LambdaLR`` applying :func:`lr_lambda` (a picklable ``partial``, so its state checkpoints)."""
    fn = partial(lr_lambda, total_steps=total_steps, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
