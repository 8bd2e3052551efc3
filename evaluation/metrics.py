"""Metrics of the regulator task: violation F1, exact match, check-line accuracy, directive ROUGE-L.

Definitions (REGULATOR_DOMAIN.md, "Target format"):

- Violation F1 is computed on the violation sets the answers' check lines imply against the reference sets, over
  example x code pairs
  (micro), per code, and as the macro mean over the codes that occur in the references or the predictions (a code
  nobody mentions has no defined F1 and is left out rather than counted as 0 or 1). An unparseable answer predicts
  nothing.
- Exact match: the predicted violation set equals the reference set.
- Check-line accuracy: over every reference check line, the share the model reproduced with the same outcome.
- Parse rate: the share of answers with at least one readable check line of a known rule.
- ROUGE-L: F-measure of ``rouge_score``'s ``rougeL`` with stemming on the directives (each answer's ``measure:`` lines,
  then its ``DIRECTIVE`` closing sentence: ``ParsedAnswer.directive``), averaged.

Bootstrap CIs resample examples with replacement (seeded); the paired bootstrap uses the same resamples for both
systems, so the CI of the difference reflects only how the systems differ on the same examples. Undefined figures
(NaN) are returned as ``None`` so every result is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from regulator.answers import RULE_CODES, ParsedAnswer, decides, parse_answer
from foundation.errors import EvaluationError

DEFAULT_N_BOOTSTRAP = 1000
CI_LEVEL = 0.95


@dataclass(frozen=True)
class ExampleScores:
    """Per-example figures from which every aggregate (and every bootstrap resample) is computed.

    Attributes:
        y_true, y_pred: (n_examples, n_codes) 0/1 violation matrices, columns in ``codes`` order.
        rouge_l: (n,) directive ROUGE-L F-measure per example.
        checks_correct, checks_total: (n,) reference check lines reproduced with the right outcome / present, over
            the rules the engine assessed (a ``NOT_ASSESSED`` line is a statement, not a decision: not counted).
        exact: (n,) 1 when the predicted violation set equals the reference set.
        parsed_ok: (n,) 1 when the answer had at least one readable check line.
        spurious_checks: (n,) model check lines for codes the reference does not check.
    """

    codes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    rouge_l: np.ndarray
    checks_correct: np.ndarray
    checks_total: np.ndarray
    exact: np.ndarray
    parsed_ok: np.ndarray
    spurious_checks: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y_true.shape[0])


def _clean(value: float) -> float | None:
    """Return a plain float, or None for NaN/inf (undefined), so results serialise as strict JSON."""
    value = float(value)
    return value if math.isfinite(value) else None


def _parse_references(references: Sequence[str]) -> list[ParsedAnswer]:
    parsed = [parse_answer(r) for r in references]
    bad = [i for i, p in enumerate(parsed) if not p.parsed_ok]
    if bad:
        raise EvaluationError(
            f"{len(bad)} reference answer(s) have no readable check line (first indexes {bad[:5]}): "
            "the references come from the rule engine and must follow the answer format; check the dataset's "
            "'target' column"
        )
    return parsed


def score_examples(
    references: Sequence[str], predictions: Sequence[str], *, codes: Sequence[str] = RULE_CODES
) -> ExampleScores:
    """Parse references and predictions and compute the per-example figures.

    Raises:
        EvaluationError: lengths differ, nothing to score, or a reference does not parse.
    """
    if len(references) != len(predictions):
        raise EvaluationError(
            f"{len(references)} references but {len(predictions)} predictions: they must be aligned one to one"
        )
    if not references:
        raise EvaluationError("no examples to score: the evaluation split is empty")
    refs = _parse_references(references)
    preds = [parse_answer(p) for p in predictions]
    codes = tuple(codes)
    binarizer = MultiLabelBinarizer(classes=list(codes))
    y_true = binarizer.fit_transform([sorted(r.violations) for r in refs])
    y_pred = binarizer.transform([sorted(p.violations & set(codes)) for p in preds])

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r.directive, p.directive)["rougeL"].fmeasure for r, p in zip(refs, preds)]
    decided = [{code: outcome for code, outcome in r.checks.items() if decides(outcome)} for r in refs]
    correct = [sum(p.checks.get(code) == outcome for code, outcome in d.items()) for d, p in zip(decided, preds)]
    spurious = [len(set(p.checks) - set(r.checks)) for r, p in zip(refs, preds)]
    return ExampleScores(
        codes=codes,
        y_true=y_true,
        y_pred=y_pred,
        rouge_l=np.asarray(rouge, dtype=float),
        checks_correct=np.asarray(correct, dtype=float),
        checks_total=np.asarray([len(d) for d in decided], dtype=float),
        exact=np.asarray([p.violations == r.violations for r, p in zip(refs, preds)], dtype=float),
        parsed_ok=np.asarray([p.parsed_ok for p in preds], dtype=float),
        spurious_checks=np.asarray(spurious, dtype=float),
    )


def _resample_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    if n_bootstrap < 1:
        raise EvaluationError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def _micro_f1_resampled(scores: ExampleScores, idx: np.ndarray) -> np.ndarray:
    """Micro F1 for each row of resample indices, from per-example tp/fp/fn counts (NaN where undefined)."""
    tp = (scores.y_true & scores.y_pred).sum(axis=1)
    fp = ((1 - scores.y_true) & scores.y_pred).sum(axis=1)
    fn = (scores.y_true & (1 - scores.y_pred)).sum(axis=1)
    tp_s, fp_s, fn_s = tp[idx].sum(axis=1), fp[idx].sum(axis=1), fn[idx].sum(axis=1)
    denom = 2 * tp_s + fp_s + fn_s
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp_s / np.maximum(denom, 1), np.nan)


def _ci(samples: np.ndarray) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None, None
    alpha = (1 - CI_LEVEL) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return _clean(lo), _clean(hi)


def _safe_ratio(num: float, den: float) -> float | None:
    return _clean(num / den) if den > 0 else None


def aggregate(scores: ExampleScores, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Aggregate per-example figures into the metrics dict (see :func:`score_predictions`)."""
    y_true, y_pred = scores.y_true, scores.y_pred
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=np.nan
    )
    p_micro, r_micro, f1_micro, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=np.nan
    )
    per_code = {
        code: {
            "precision": _clean(precision[j]),
            "recall": _clean(recall[j]),
            "f1": _clean(f1[j]),
            "support": int(support[j]),
            "predicted": int(y_pred[:, j].sum()),
        }
        for j, code in enumerate(scores.codes)
    }
    idx = _resample_indices(scores.n, n_bootstrap, seed)
    f1_lo, f1_hi = _ci(_micro_f1_resampled(scores, idx))
    rouge_lo, rouge_hi = _ci(scores.rouge_l[idx].mean(axis=1))
    return {
        "n_examples": scores.n,
        "parse_rate": _clean(scores.parsed_ok.mean()),
        "f1_micro": _clean(f1_micro),
        "f1_micro_ci_low": f1_lo,
        "f1_micro_ci_high": f1_hi,
        "precision_micro": _clean(p_micro),
        "recall_micro": _clean(r_micro),
        "f1_macro": _clean(f1_score(y_true, y_pred, average="macro", zero_division=np.nan)),
        "exact_match": _clean(scores.exact.mean()),
        "check_accuracy": _safe_ratio(scores.checks_correct.sum(), scores.checks_total.sum()),
        "spurious_checks_per_answer": _clean(scores.spurious_checks.mean()),
        "rouge_l": _clean(scores.rouge_l.mean()),
        "rouge_l_ci_low": rouge_lo,
        "rouge_l_ci_high": rouge_hi,
        "n_bootstrap": n_bootstrap,
        "per_code": per_code,
    }


def score_predictions(
    references: list[str],
    predictions: list[str],
    *,
    codes: Sequence[str] = RULE_CODES,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Score model answers against reference answers (both full answer texts in the regulator format).

    Returns:
        A JSON-able dict: ``n_examples``, ``parse_rate``, ``f1_micro`` (+ ``_ci_low``/``_ci_high``),
        ``precision_micro``, ``recall_micro``, ``f1_macro``, ``exact_match``, ``check_accuracy``,
        ``spurious_checks_per_answer``, ``rouge_l`` (+ CI), ``n_bootstrap`` and ``per_code``
        (code -> precision, recall, f1, support, predicted). Undefined figures are ``None``.
    """
    return aggregate(score_examples(references, predictions, codes=codes), n_bootstrap=n_bootstrap, seed=seed)


def _paired_summary(a: np.ndarray, b: np.ndarray, point_a: float, point_b: float) -> dict[str, float | None]:
    diff = a - b
    lo, hi = _ci(diff)
    finite = diff[np.isfinite(diff)]
    return {
        "a": _clean(point_a),
        "b": _clean(point_b),
        "difference": _clean(point_a - point_b),
        "ci_low": lo,
        "ci_high": hi,
        # Share of resamples in which A does not beat B: a one-sided bootstrap p-value for "A > B".
        "p_not_better": _clean((finite <= 0).mean()) if finite.size else None,
    }


def paired_bootstrap(
    references: list[str],
    predictions_a: list[str],
    predictions_b: list[str],
    *,
    codes: Sequence[str] = RULE_CODES,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of system A minus system B (e.g. full FT minus LoRA) on the same examples.

    Returns:
        ``{"n_examples", "n_bootstrap", "f1_micro": {...}, "rouge_l": {...}}`` where each inner dict holds ``a``,
        ``b``, ``difference`` (point estimates), ``ci_low``/``ci_high`` (95% CI of A - B) and ``p_not_better``.
    """
    sa = score_examples(references, predictions_a, codes=codes)
    sb = score_examples(references, predictions_b, codes=codes)
    idx = _resample_indices(sa.n, n_bootstrap, seed)
    full = np.arange(sa.n)[None, :]
    return {
        "n_examples": sa.n,
        "n_bootstrap": n_bootstrap,
        "f1_micro": _paired_summary(
            _micro_f1_resampled(sa, idx),
            _micro_f1_resampled(sb, idx),
            _micro_f1_resampled(sa, full)[0],
            _micro_f1_resampled(sb, full)[0],
        ),
        "rouge_l": _paired_summary(
            sa.rouge_l[idx].mean(axis=1), sb.rouge_l[idx].mean(axis=1), sa.rouge_l.mean(), sb.rouge_l.mean()
        ),
    }
