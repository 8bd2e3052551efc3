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
                                                 "real_filings", "vs_production"]
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
        "production_version": None, "production_same_model": False, "f1_vs_production": None, "f1_vs_production_ci_low": None,
        "real_false_violations_production": None,
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


def test_champion_challenger() -> None:
    """Not worse than production on the test split (point or CI's lower end) and on the real filings; the first
    promotion passes and says so; a missing comparison figure fails by name; None compares nothing."""
    from dataclasses import replace

    compare = replace(THRESHOLDS, max_regression_vs_production=0.02)
    first = check_gate({**GOOD, "production_version": None}, compare)
    assert first.passed and "no model in production yet" in first.criteria[-1].message

    versus = {**GOOD, "production_version": "v0003-1a2b3c4d", "f1_vs_production": 0.01,
              "f1_vs_production_ci_low": -0.05, "real_n_filings": 8, "real_false_violations": 1,
              "real_false_violations_production": 1}
    decision = check_gate(versus, compare)  # the CI's lower end -0.05 is below -0.02
    (worse,) = [c for c in decision.criteria if c.name == "not_worse_than_production"]
    assert not decision.passed and not worse.passed and worse.figure == -0.05 and worse.threshold == -0.02
    assert "v0003-1a2b3c4d" in worse.message
    assert check_gate(versus, replace(compare, use_ci_lower_bound=False)).passed  # the point estimate +0.01

    more_false = check_gate({**versus, "real_false_violations": 3}, replace(compare, use_ci_lower_bound=False))
    (real,) = [c for c in more_false.criteria if c.name == "real_not_worse_than_production"]
    assert not more_false.passed and not real.passed and real.figure == 2

    missing = check_gate({**versus, "f1_vs_production": math.nan}, replace(compare, use_ci_lower_bound=False))
    assert not missing.passed and any("not finite" in m for m in missing.failures)

    unset = check_gate(versus, THRESHOLDS).criteria[-1]
    assert unset.name == "vs_production" and unset.passed and "not required" in unset.message


def test_comparison_with_production_pairs_the_same_examples(tmp_path) -> None:
    from evaluation.champion import INFO, PREDICTIONS, REAL, compare_with_production, render_comparison_markdown
    from evaluation.generate import write_predictions
    from foundation.errors import EvaluationError

    ok = "- CET1_RATIO 12.0% vs 4.5% min: OK"
    breach = "- CET1_RATIO 3.0% vs 4.5% min: BREACH\nVIOLATIONS: CET1_RATIO"
    refs = [ok, breach, breach]
    rows = lambda answers: [{"id": f"t{i}", "reference": r, "prediction": a}  # noqa: E731
                            for i, (r, a) in enumerate(zip(refs, answers))]
    production = tmp_path / "production"
    write_predictions(production / PREDICTIONS, rows([ok, ok, ok]))
    (production / INFO).write_text(json.dumps({"version": "v0001-00000000", "model_sha256": "ab" * 32}))
    (production / REAL).write_text(json.dumps({"false_violations": 2}))
    candidate = tmp_path / "predictions-full_FT.jsonl"
    write_predictions(candidate, rows(refs))
    versus = compare_with_production(candidate, production, n_bootstrap=50)
    assert versus["version"] == "v0001-00000000" and versus["real_false_violations"] == 2
    assert versus["f1_candidate"] > versus["f1_production"]
    metrics = gate_metrics({"f1_micro": 1.0}, {}, 0.0, None, versus)
    assert metrics["f1_vs_production"] == versus["paired"]["f1_micro"]["difference"] > 0
    table = render_comparison_markdown(versus, 0)
    assert "production v0001-00000000" in table and "| 2 | 0 | -2 |" in table

    write_predictions(candidate, rows(refs)[:2])
    with pytest.raises(EvaluationError, match="different test examples"):
        compare_with_production(candidate, production, n_bootstrap=50)
