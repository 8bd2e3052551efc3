"""Deployment gate: passes when every criterion holds, fails on each criterion alone and on unusable figures."""

from __future__ import annotations

import json
import math

import pytest

from evaluation.gate import GateThresholds, check_gate, gate_metrics
from foundation.errors import ConfigError, GateRejected

THRESHOLDS = GateThresholds(
    f1_floor=0.80, rouge_floor=0.60, min_margin_over_lora=0.02, use_ci_lower_bound=True, forgetting_ceiling=0.10
)
GOOD = {
    "f1_micro": 0.91,
    "rouge_l": 0.74,
    "f1_margin_over_lora": 0.12,
    "f1_margin_over_lora_ci_low": 0.05,
    "forgetting_increase": 0.04,
}


def test_passes_when_every_criterion_holds() -> None:
    decision = check_gate(GOOD, THRESHOLDS)
    assert decision.passed
    assert [c.name for c in decision.criteria] == ["f1_floor", "rouge_floor", "margin_over_lora", "forgetting_ceiling",
                                                 "real_filings"]
    assert all(c.passed for c in decision.criteria) and decision.failures == []
    decision.raise_if_rejected()
    json.dumps(decision.to_dict(), allow_nan=False)


def test_threshold_equal_to_figure_passes() -> None:
    exact = dict(GOOD, f1_micro=0.80, rouge_l=0.60, f1_margin_over_lora_ci_low=0.02, forgetting_increase=0.10)
    assert check_gate(exact, THRESHOLDS).passed


@pytest.mark.parametrize(
    ("key", "value", "criterion"),
    [
        ("f1_micro", 0.79, "f1_floor"),
        ("rouge_l", 0.59, "rouge_floor"),
        ("f1_margin_over_lora_ci_low", -0.01, "margin_over_lora"),
        ("forgetting_increase", 0.25, "forgetting_ceiling"),
    ],
)
def test_each_criterion_fails_alone(key: str, value: float, criterion: str) -> None:
    decision = check_gate(dict(GOOD, **{key: value}), THRESHOLDS)
    assert not decision.passed
    failed = [c for c in decision.criteria if not c.passed]
    assert [c.name for c in failed] == [criterion]
    assert failed[0].figure == value
    assert key in failed[0].message and "FAILED" in failed[0].message
    with pytest.raises(GateRejected, match=criterion) as info:
        decision.raise_if_rejected()
    assert len(info.value.failures) == 1


def test_margin_uses_point_estimate_without_ci_flag() -> None:
    # point margin 0.12 passes, CI lower end -0.01 would fail: the flag picks which one is judged
    metrics = dict(GOOD, f1_margin_over_lora_ci_low=-0.01)
    assert not check_gate(metrics, THRESHOLDS).passed
    point = GateThresholds(**{**vars(THRESHOLDS), "use_ci_lower_bound": False})
    assert check_gate(metrics, point).passed


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf, "0.9", True])
def test_unusable_figures_fail_with_the_metric_named(bad: object) -> None:
    for key, criterion in [("f1_micro", "f1_floor"), ("forgetting_increase", "forgetting_ceiling")]:
        decision = check_gate(dict(GOOD, **{key: bad}), THRESHOLDS)
        failed = [c for c in decision.criteria if not c.passed]
        assert not decision.passed and [c.name for c in failed] == [criterion]
        assert key in failed[0].message and failed[0].figure is None


def test_missing_metric_and_all_failures_listed() -> None:
    decision = check_gate({}, THRESHOLDS)
    assert not decision.passed and len(decision.failures) == 4
    assert all("missing" in m for m in decision.failures)
    assert "f1_margin_over_lora_ci_low" in decision.failures[2]


def test_gate_metrics_from_evaluation_results() -> None:
    full = {"f1_micro": 0.9, "rouge_l": 0.7}
    paired = {"f1_micro": {"difference": 0.1, "ci_low": 0.03, "ci_high": 0.2}}
    assert gate_metrics(full, paired, 0.05) == {
        "f1_micro": 0.9,
        "rouge_l": 0.7,
        "f1_margin_over_lora": 0.1,
        "f1_margin_over_lora_ci_low": 0.03,
        "forgetting_increase": 0.05,
        "real_n_filings": None, "real_false_violations": None, "real_invented_figures": None,
        "real_cleared_share": None, "real_unreadable_answers": None,
    }
    assert not check_gate(gate_metrics(full, {}, None), THRESHOLDS).passed


def test_thresholds_are_validated() -> None:
    with pytest.raises(ConfigError, match="f1_floor"):
        GateThresholds(
            f1_floor=math.nan, rouge_floor=0.5, min_margin_over_lora=0, use_ci_lower_bound=True, forgetting_ceiling=1
        )
