"""Deployment-gate criteria: every configured threshold must hold, and a missing or undefined figure fails.

The gate reads one flat dict of figures (build it with :func:`gate_metrics` from the evaluation results):

- ``f1_micro``: violation F1 (micro) of the candidate (full fine-tune) on the test split;
- ``rouge_l``: its directive ROUGE-L;
- ``f1_margin_over_lora``: candidate F1 minus LoRA F1 (point estimate of the paired bootstrap);
- ``f1_margin_over_lora_ci_low``: the lower end of the paired bootstrap 95% CI of that difference;
- ``forgetting_increase``: relative increase of the general-domain NLL over the base model;
- ``real_n_filings``, ``real_false_violations``, ``real_invented_figures``, ``real_cleared_share``,
  ``real_unreadable_answers``: the candidate
  on the real filings (``evaluation.real_set``); ``real_n_filings`` None when no real set was scored;
- ``production_version`` (None: nothing in production, or not compared), ``f1_vs_production`` and
  ``f1_vs_production_ci_low`` (candidate minus production on the same test split, paired bootstrap),
  ``real_false_violations_production``: the model in production on the same real filings.

The lead raises :class:`foundation.errors.GateRejected` from a failed decision (``decision.raise_if_rejected()``),
so a rejected model fails the run instead of completing quietly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from foundation.errors import ConfigError, GateRejected


_OPTIONAL = frozenset({"real_max_false_violations", "real_max_invented_figures", "real_min_cleared_share",
                       "real_max_unreadable_answers", "max_regression_vs_production"})


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds of the deployment gate.

    Attributes:
        f1_floor: minimum violation F1 (micro) of the candidate.
        rouge_floor: minimum directive ROUGE-L of the candidate.
        min_margin_over_lora: minimum F1 advantage of the candidate over the LoRA baseline (0 = at least as good).
        use_ci_lower_bound: judge the margin by the lower end of its paired bootstrap CI instead of the point
            estimate, so a margin that could be noise does not pass.
        forgetting_ceiling: maximum relative increase of the general-domain NLL (0.10 = at most 10% worse).
        real_max_false_violations, real_max_invented_figures, real_min_cleared_share,
            real_max_unreadable_answers: criteria on the real
            filings; None: not required (the decision still states what the real set showed, or that none was
            scored).
        max_regression_vs_production: the most the candidate's F1 may fall below the production model's on the
            same test split (its CI's lower end with ``use_ci_lower_bound``), and the candidate may report no more
            false violations on the real filings than production; None: production is not compared.
    """

    f1_floor: float
    rouge_floor: float
    min_margin_over_lora: float
    use_ci_lower_bound: bool
    forgetting_ceiling: float
    real_max_false_violations: float | None = None
    real_max_invented_figures: float | None = None
    real_min_cleared_share: float | None = None
    real_max_unreadable_answers: float | None = None
    max_regression_vs_production: float | None = None

    def __post_init__(self) -> None:
        bad = [
            f"gate.{name} = {value!r} is not a finite number"
            for name, value in vars(self).items()
            if name != "use_ci_lower_bound" and not (value is None and name in _OPTIONAL)
            and (not isinstance(value, (int, float)) or not math.isfinite(value))
        ]
        if bad:
            raise ConfigError(bad, source="gate thresholds")


class GateCriterion(NamedTuple):
    """One criterion's outcome: the figure it judged, its threshold, and a sentence for the report."""

    name: str
    figure: float | None
    threshold: float
    passed: bool
    message: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with every criterion, passed or not."""

    passed: bool
    criteria: list[GateCriterion]

    @property
    def failures(self) -> list[str]:
        """Messages of the failed criteria."""
        return [c.message for c in self.criteria if not c.passed]

    def raise_if_rejected(self) -> None:
        """Raise :class:`GateRejected` listing every failed criterion when the gate did not pass."""
        if not self.passed:
            raise GateRejected(self.failures, decision=self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form (for the model card and run manifest)."""
        return {"passed": self.passed, "criteria": [c._asdict() for c in self.criteria]}


def gate_metrics(full_scores: dict[str, Any], paired: dict[str, Any], forgetting_increase: float | None,
                 real: dict[str, Any] | None = None, production: dict[str, Any] | None = None) -> dict:
    """Build the gate's input from ``score_predictions`` of the candidate, ``paired_bootstrap(full, lora)``, the
    candidate's forgetting increase, its ``score_real_filings`` (None: no real set) and the comparison with the
    production model (``evaluation.champion.compare_with_production``; None: not compared). Absent figures become
    None (the gate then fails them by name)."""
    margin = paired.get("f1_micro", {})
    real, production = real or {}, production or {}
    versus = (production.get("paired") or {}).get("f1_micro", {})
    return {
        "production_version": production.get("version"),
        "production_same_model": bool(production.get("same_model")),
        "f1_vs_production": versus.get("difference"),
        "f1_vs_production_ci_low": versus.get("ci_low"),
        "real_false_violations_production": production.get("real_false_violations"),
        "f1_micro": full_scores.get("f1_micro"),
        "rouge_l": full_scores.get("rouge_l"),
        "f1_margin_over_lora": margin.get("difference"),
        "f1_margin_over_lora_ci_low": margin.get("ci_low"),
        "forgetting_increase": forgetting_increase,
        "real_n_filings": real.get("n_filings"),
        "real_false_violations": real.get("false_violations"),
        "real_invented_figures": real.get("invented_figures"),
        "real_cleared_share": real.get("cleared_share"),
        "real_unreadable_answers": real.get("unreadable_answers"),
    }


def _figure(metrics: dict[str, Any], key: str) -> tuple[float | None, str | None]:
    """Return (figure, None) for a finite number, else (None, why it is unusable)."""
    if key not in metrics or metrics[key] is None:
        return None, f"metric {key!r} is missing"
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"metric {key!r} is not a number ({value!r})"
    if not math.isfinite(value):
        return None, f"metric {key!r} is {value} (not finite)"
    return float(value), None


def _criterion(
    name: str,
    metrics: dict[str, Any],
    key: str,
    threshold: float,
    ok: Callable[[float, float], bool],
    relation: str,
) -> GateCriterion:
    figure, problem = _figure(metrics, key)
    if problem is not None:
        return GateCriterion(name, None, threshold, False, f"{name}: {problem}; the gate cannot pass without it")
    passed = ok(figure, threshold)
    verdict = "ok" if passed else "FAILED"
    return GateCriterion(name, figure, threshold, passed, f"{name}: {key} = {figure:.4f}, required {relation} "
                         f"{threshold:.4f}: {verdict}")


def check_gate(metrics: dict[str, Any], thresholds: GateThresholds) -> GateDecision:
    """Judge every criterion (all are evaluated, so a rejection lists every reason at once)."""
    margin_key = "f1_margin_over_lora_ci_low" if thresholds.use_ci_lower_bound else "f1_margin_over_lora"
    criteria = [
        _criterion("f1_floor", metrics, "f1_micro", thresholds.f1_floor, lambda f, t: f >= t, ">="),
        _criterion("rouge_floor", metrics, "rouge_l", thresholds.rouge_floor, lambda f, t: f >= t, ">="),
        _criterion(
            "margin_over_lora", metrics, margin_key, thresholds.min_margin_over_lora, lambda f, t: f >= t, ">="
        ),
        _criterion(
            "forgetting_ceiling", metrics, "forgetting_increase", thresholds.forgetting_ceiling,
            lambda f, t: f <= t, "<=",
        ),
        *_real_criteria(metrics, thresholds),
        *_production_criteria(metrics, thresholds),
    ]
    return GateDecision(passed=all(c.passed for c in criteria), criteria=criteria)


_REAL = (  # name, metric, threshold attribute, passes, relation
    ("real_false_violations", "real_false_violations", "real_max_false_violations", lambda f, t: f <= t, "<="),
    ("real_invented_figures", "real_invented_figures", "real_max_invented_figures", lambda f, t: f <= t, "<="),
    ("real_cleared_share", "real_cleared_share", "real_min_cleared_share", lambda f, t: f >= t, ">="),
    ("real_unreadable_answers", "real_unreadable_answers", "real_max_unreadable_answers", lambda f, t: f <= t, "<="),
)


def _real_criteria(metrics: dict[str, Any], thresholds: GateThresholds) -> list[GateCriterion]:
    """The criteria on the real filings. A required one fails when no real set was scored; when none is
    required, one line still states what the real set showed (or that there was none): never silently passed."""
    required = [(n, key, getattr(thresholds, attr), ok, rel) for n, key, attr, ok, rel in _REAL
                if getattr(thresholds, attr) is not None]
    scored = metrics.get("real_n_filings")
    if not required:
        shown = (f"{scored} real filings scored: {metrics.get('real_false_violations')} false violations, "
                 f"{metrics.get('real_invented_figures')} answers with an invented figure" if scored
                 else "no real filings were scored (eval.real_source unset or unreadable)")
        return [GateCriterion("real_filings", None, 0.0, True, f"real_filings: not required by this config; {shown}")]
    if not scored:
        return [GateCriterion(name, None, threshold, False,
                              f"{name}: no real filings were scored (eval.real_source unset or unreadable); the gate "
                              "cannot pass without them") for name, _, threshold, _, _ in required]
    return [_criterion(name, metrics, key, float(threshold), ok, rel) for name, key, threshold, ok, rel in required]


def _production_criteria(metrics: dict[str, Any], thresholds: GateThresholds) -> list[GateCriterion]:
    """Champion / challenger: the candidate may not be worse than the model in production, on the same test split
    (F1, by at most ``max_regression_vs_production``) and on the same real filings (false violations). The first
    promotion, with nothing in production, passes and says so."""
    margin = thresholds.max_regression_vs_production
    if margin is None:
        return [GateCriterion("vs_production", None, 0.0, True,
                              "vs_production: not required by this config (gate.max_regression_vs_production unset)")]
    version = metrics.get("production_version")
    if version is None:
        return [GateCriterion("vs_production", None, -margin, True,
                              "vs_production: no model in production yet: the first promotion has nothing to compare "
                              "with")]
    if metrics.get("production_same_model"):
        return [GateCriterion("vs_production", 0.0, -margin, True,
                              f"vs_production: the candidate is production {version} itself (trained on the same data "
                              "with the same settings and code): no new data, nothing to compare")]
    key = "f1_vs_production_ci_low" if thresholds.use_ci_lower_bound else "f1_vs_production"
    criteria = [_criterion("not_worse_than_production", metrics, key, -margin, lambda f, t: f >= t, ">=")]
    if metrics.get("real_n_filings") and metrics.get("real_false_violations_production") is not None:
        candidate = metrics.get("real_false_violations")
        extra = {"real_false_violations_over_production":
                 None if candidate is None else candidate - metrics["real_false_violations_production"]}
        criteria.append(_criterion("real_not_worse_than_production", extra, "real_false_violations_over_production",
                                   0.0, lambda f, t: f <= t, "<="))
    return [c._replace(message=f"{c.message} (production {version})") for c in criteria]
