"""Scores of a model on real filings: what a supervisor would see if it analysed them, judged by the rule engine.

Each real filing is read and labelled by the rule engine (``regulator``), the model's answer is reviewed exactly
as ``finetune analyze`` reviews it (``regulator.analyze.analyze_report``), and the reviews are counted here:
filings cleared correctly, false and missed violations (per filing and per rule), answers quoting a figure that is
in neither the filing nor the rule table, checks of rules that do not apply, unreadable answers. Generated reports
cannot show these: a model that learned the generator's ranges calls a real bank's 38% CET1 ratio a breach.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from regulator.analyze import ERROR, OK, FilingResult, expand_paths, read_filings
from regulator.xbrl import ParsedReport

# How regulator.analyze.review_answer words each kind of defect (tests/test_real_set.py pins them to its output).
INVENTED = ("a figure not in the filing", "a number that cannot be checked against the filing")
MISATTRIBUTED = ("which the filing reports for",)
INAPPLICABLE = ("which does not apply to", "which is not a rule of")
UNREADABLE = ("has no readable check line",)


def read_real_set(source: Path) -> tuple[list[ParsedReport], list[FilingResult]]:
    """The readable filings under ``source`` (files, zips, folders) and an ``error`` result for each unreadable one."""
    files, errors = expand_paths([Path(source)])
    parsed: list[ParsedReport] = []
    for path in files:
        for got in read_filings(path):
            (errors if isinstance(got, FilingResult) else parsed).append(got)
    return parsed, errors


def _has(reasons: Iterable[str], phrases: tuple[str, ...]) -> bool:
    return any(p in r for r in reasons for p in phrases)


def score_real_filings(results: list[FilingResult], unreadable_files: int = 0) -> dict[str, Any]:
    """Count what the reviews of one system's answers found (see the module docstring)."""
    n = len(results)
    compliant = [r for r in results if not r.rule_violations]
    false_by_rule: Counter[str] = Counter()
    missed_by_rule: Counter[str] = Counter()
    filings_false = filings_missed = 0
    for r in results:
        if r.model_violations is None:
            continue
        false = set(r.model_violations) - set(r.rule_violations)
        missed = set(r.rule_violations) - set(r.model_violations)
        false_by_rule.update(false)
        missed_by_rule.update(missed)
        filings_false += bool(false)
        filings_missed += bool(missed)
    cleared = sum(1 for r in compliant if r.status == OK)
    return {
        "n_filings": n,
        "unreadable_files": unreadable_files,
        "compliant": len(compliant),
        "cleared_correctly": cleared,
        "cleared_share": cleared / len(compliant) if compliant else None,
        "auto_ok": sum(1 for r in results if r.status == OK),
        "false_violations": sum(false_by_rule.values()),
        "filings_with_false_violation": filings_false,
        "false_by_rule": dict(sorted(false_by_rule.items())),
        "missed_violations": sum(missed_by_rule.values()),
        "filings_with_missed_violation": filings_missed,
        "missed_by_rule": dict(sorted(missed_by_rule.items())),
        "invented_figures": sum(1 for r in results if _has(r.reasons, INVENTED)),
        "misattributed_figures": sum(1 for r in results if _has(r.reasons, MISATTRIBUTED)),
        "inapplicable_checks": sum(1 for r in results if _has(r.reasons, INAPPLICABLE)),
        "unreadable_answers": sum(1 for r in results if r.model_violations is None or _has(r.reasons, UNREADABLE)),
    }


REAL_COLUMNS = (
    ("n_filings", "real filings"), ("compliant", "compliant (rules)"), ("cleared_correctly", "cleared correctly"),
    ("false_violations", "false violations"), ("filings_with_false_violation", "filings with a false violation"),
    ("missed_violations", "missed violations"), ("invented_figures", "answers with an invented figure"),
    ("misattributed_figures", "answers quoting another rule's figure"),
    ("inapplicable_checks", "answers checking a rule not in force"), ("unreadable_answers", "unreadable answers"),
)


def real_rows(scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measure, one column per system (for a table artifact)."""
    return [{"measure": label, **{name: s.get(key) for name, s in scores.items()}} for key, label in REAL_COLUMNS]


def render_real_markdown(scores: dict[str, dict[str, Any]], results: dict[str, list[FilingResult]],
                         source: str) -> str:
    """The real-filing section of the evaluation report: the counts per system, then each filing's verdicts."""
    systems = list(scores)
    lines = [f"Source: `{source}` (labelled by the rule engine; never trained on)", "",
             "| measure | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for row in real_rows(scores):
        lines.append(f"| {row['measure']} | " + " | ".join(str(row[s]) for s in systems) + " |")
    for name in systems:
        wrong = scores[name]["false_by_rule"]
        if wrong:
            lines.append(f"\n{name}: false violations by rule: " + ", ".join(f"{k} {v}" for k, v in wrong.items()))
    lines += ["", "| filing | form | rule engine | " + " | ".join(systems) + " |",
              "|---|---|---|" + "---|" * len(systems)]
    by_file = {name: {r.file: r for r in rs} for name, rs in results.items()}
    for r in next(iter(results.values()), []):
        cells = []
        for name in systems:
            got = by_file[name].get(r.file)
            said = "unreadable" if got is None or got.model_violations is None else (
                ", ".join(got.model_violations) or "none")
            cells.append(f"{said} ({got.status if got else ERROR})")
        lines.append(f"| {Path(r.file).name} | {r.jurisdiction} {r.form} | {', '.join(r.rule_violations) or 'none'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
