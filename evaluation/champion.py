"""Champion / challenger: the candidate against the model in production, on the same test split and real filings.

The production model's answers are generated once per (production model, test data, evaluation settings) and kept
in a folder of their own (``PREDICTIONS``, ``REAL``); the candidate's come from the evaluation's folder. The
comparison pairs the two answer by answer (``paired_bootstrap``), so "not worse" is judged on the same examples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.generate import read_predictions
from evaluation.metrics import paired_bootstrap
from foundation.errors import EvaluationError

PREDICTIONS = "predictions-production.jsonl"  # the production model's answers on the test split
REAL = "real-production.json"  # its scores on the real filings (evaluation.real_set.score_real_filings)
INFO = "production.json"  # which version, its model hash


def compare_with_production(candidate_predictions: Path, production_dir: Path, *, n_bootstrap: int) -> dict[str, Any]:
    """The candidate (``candidate_predictions``: the evaluation's full-FT predictions file) minus production
    (``production_dir``: the folder ``tasks/evaluate_production.py`` wrote) on the same test examples.

    Returns:
        ``version``, ``model_sha256``, ``paired`` (``paired_bootstrap(candidate, production)``), ``f1_candidate``,
        ``f1_production`` and ``real_false_violations`` of production (None without a real set).

    Raises:
        EvaluationError: the two answer sets are not for the same examples (the test splits differ).
    """
    production_dir = Path(production_dir)
    candidate = read_predictions(candidate_predictions)
    production = read_predictions(production_dir / PREDICTIONS)
    if [r["id"] for r in candidate] != [r["id"] for r in production]:
        raise EvaluationError(f"{candidate_predictions} and {production_dir / PREDICTIONS} answer different test "
                              "examples: production and candidate must be compared on the same split")
    refs = [r["reference"] for r in candidate]
    paired = paired_bootstrap(refs, [r["prediction"] for r in candidate], [r["prediction"] for r in production],
                              n_bootstrap=n_bootstrap)
    info = json.loads((production_dir / INFO).read_text())
    real_file = production_dir / REAL
    real = json.loads(real_file.read_text()) if real_file.is_file() else None
    return {"version": info["version"], "model_sha256": info["model_sha256"], "paired": paired,
            "f1_candidate": paired["f1_micro"]["a"], "f1_production": paired["f1_micro"]["b"],
            "real_false_violations": real.get("false_violations") if real else None}


def render_comparison_markdown(comparison: dict[str, Any] | None, candidate_real_false: int | None) -> str:
    """Production vs candidate as a markdown table (for the gate's decision); a sentence when not compared."""
    if comparison is None:
        return "Production not compared (nothing in production yet, or gate.max_regression_vs_production unset)."
    if comparison.get("same_model"):
        return f"The candidate is production {comparison['version']} itself: no new data since it was trained."
    f1 = comparison["paired"]["f1_micro"]
    real = comparison.get("real_false_violations")
    rows = ["| | production " + comparison["version"] + " | candidate | candidate - production (95% CI) |",
            "|---|---|---|---|",
            f"| violation F1 | {_num(f1['b'])} | {_num(f1['a'])} | {_num(f1['difference'], '+')} "
            f"({_num(f1['ci_low'], '+')} to {_num(f1['ci_high'], '+')}) |"]
    if real is not None and candidate_real_false is not None:
        rows.append(f"| false violations on the real filings | {real} | {candidate_real_false} | "
                    f"{candidate_real_false - real:+d} |")
    return "\n".join(rows)


def _num(value: float | None, sign: str = "") -> str:
    """A figure to three places, or "n/a" where it is undefined."""
    return "n/a" if value is None else f"{value:{sign}.3f}"
