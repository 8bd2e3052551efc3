"""The warmup + cosine learning-rate curve."""

from __future__ import annotations

import math

import pytest
import torch

from training.schedule import build_scheduler, lr_lambda, warmup_steps


def test_curve_start_peak_midpoint_end() -> None:
    total, ratio = 100, 0.1
    warm = warmup_steps(total, ratio)
    assert warm == 10
    assert lr_lambda(0, total, ratio, 0.1) == pytest.approx(0.1)  # first step already moves
    assert lr_lambda(warm - 1, total, ratio, 0.1) == pytest.approx(1.0)  # end of warmup = peak
    assert lr_lambda(warm, total, ratio, 0.1) == pytest.approx(1.0)  # cosine starts at the peak
    mid = warm + (total - warm - 1) / 2
    assert lr_lambda(math.floor(mid), total, ratio, 0.1) == pytest.approx(0.55, abs=0.02)
    assert lr_lambda(total - 1, total, ratio, 0.1) == pytest.approx(0.1)  # floor: 10% of peak
    assert lr_lambda(total + 5, total, ratio, 0.1) == pytest.approx(0.1)  # never below the floor


def test_curve_is_monotonic_in_each_phase() -> None:
    values = [lr_lambda(s, 50, 0.2, 0.1) for s in range(50)]
    warm = warmup_steps(50, 0.2)
    assert values[:warm] == sorted(values[:warm])
    assert values[warm:] == sorted(values[warm:], reverse=True)


def test_no_warmup_and_single_step() -> None:
    assert lr_lambda(0, 10, 0.0, 0.1) == pytest.approx(1.0)
    assert lr_lambda(0, 1, 0.0, 0.1) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [dict(total_steps=0), dict(warmup_ratio=1.0), dict(min_lr_ratio=1.5)])
def test_invalid_arguments(kwargs: dict) -> None:
    args = dict(step=0, total_steps=10, warmup_ratio=0.1, min_lr_ratio=0.1) | kwargs
    with pytest.raises(ValueError):
        lr_lambda(**args)


def test_scheduler_drives_optimizer_and_round_trips_state() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=2e-5)
    sched = build_scheduler(opt, total_steps=20, warmup_ratio=0.1, min_lr_ratio=0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[1] == pytest.approx(2e-5) and seen[-1] == pytest.approx(2e-6)
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([param], lr=2e-5)
    sched2 = build_scheduler(opt2, total_steps=20, warmup_ratio=0.1, min_lr_ratio=0.1)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()

