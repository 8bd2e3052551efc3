"""Decision drills: training-only rows that teach the one thing a short run does not learn from reports alone.

A drill is an answer of many check lines (``- CET1_RATIO 3.84% vs 4.5% min: BREACH``) written exactly as the rule
engine writes them for a report, with figures drawn on both sides of each rule's threshold (half of them broken,
margins from 1 bp to several points) and no report behind them. Training takes the loss on the outcome words only
(``outcome_spans``), so every token of gradient a drill carries is a comparison of a figure with its threshold;
a report's answer spends ~3% of its tokens on that. Measured (bench/NOTES.md, levers 9 and 16): 120 drills of 24
lines alone took the teacher-forced check-line accuracy on natural validation reports from 0.68 to 0.92 (every
minimum rule right, the large-exposure limit mostly wrong), where 160 reports of the rebalanced pool reached
0.85-0.89.

Drills are rows of the raw table (``case_kind`` ``drill``, ``train_only``), so they pass the same data contract;
they never reach validation or test.
"""

from __future__ import annotations

import math
import random
import re

import pandas as pd

from regulator.generator import RAW_COLUMNS, TRAIN_ONLY, WIDE_MAX_BP, WIDE_SHARE
from regulator.rules import BREACH, CBLR, Rule, applicable_rules, check_rule
from regulator.xbrl import ParsedReport

DRILL = "drill"  # the case_kind (and template family) of a drill row
DRILL_PROMPT = ("Rule drill, training only: each line states a figure and its threshold; say whether the figure "
                "meets it (OK) or not (BREACH).")
# Report dates the drills draw their rule versions from: the generator's quarters (2022-2025).
_DATES = tuple(f"{y}-{md}" for y in range(2022, 2026) for md in ("03-31", "06-30", "09-30", "12-31"))
_CBLR_SHARE = 0.1  # of the US drills: community bank leverage ratio electors (one rule, leverage vs 9%)
_OUTCOME = re.compile(r": (OK|BREACH)$", re.MULTILINE)


def _line(rule: Rule, rng: random.Random, report_date: str, spread: tuple[int, ...] = (1,),
          wide_share: float = 0.0) -> tuple[str, str]:
    """One check line for ``rule`` with a drawn figure (and, for a bank-specific requirement, a drawn requirement);
    a healthy margin is multiplied by a factor drawn from ``spread``; a margin of 60 bp or more is, with probability
    ``wide_share``, redrawn log-uniformly from 9 to 60 points (a CET1 ratio of 40% against its 4.5% minimum)."""
    threshold = rule.threshold if rule.threshold is not None else rng.randint(700, 1250) / 10000
    # near (within 60 bp), moderate (to 3 points) or healthy (0.6 to 9 points; ``spread`` (3, 6) would also draw x3
    # and x6 as banks hold LCR and NSFR far above 100%: drills so spread did not teach the comparison in 120 rows
    # over three seeds, bench/NOTES.md lever 16)
    margin = rng.choice((rng.randint(1, 60), rng.randint(1, 300), rng.randint(60, 900) * rng.choice(spread)))
    if margin >= 60 and rng.random() < wide_share:  # far from it, as real banks are (generator._margin)
        margin = int(math.exp(rng.uniform(math.log(900), math.log(WIDE_MAX_BP))))
    breach = rng.random() < 0.5
    upward = rule.comparison in (">=", ">")  # a minimum: a breach is below it; a limit: above it
    figure = threshold - margin / 10000 if upward == breach else threshold + margin / 10000
    if figure <= 0:  # a small threshold cannot be undershot by more than itself
        figure = threshold * rng.randint(1, 99) / 100
    facts: dict[str, float | None] = {rule.figure: round(figure, 4)}
    if rule.threshold_fact:
        facts[rule.threshold_fact] = threshold
    parsed = ParsedReport(source="", jurisdiction="", form="", entity_id="", entity_name="",
                          report_date=report_date, currency="", facts=facts)
    check = check_rule(rule, parsed)
    return check.line(), check.outcome


def generate_drills(n: int, seed: int, lines: int = 24, eu_fraction: float = 0.5,
                    spread: tuple[int, ...] = (1,), weights: dict[str, int] | None = None,
                    wide_share: float = WIDE_SHARE) -> pd.DataFrame:
    """``n`` drill rows of ``lines`` check lines each, deterministic for ``seed``.

    Each drill takes the rules of one regime (EU with probability ``eu_fraction``, else US, a tenth of them US-CBLR)
    in force on a drawn report date, one random rule per line; data-quality lines are not drilled (they are
    findings, not comparisons). ``spread``: the factors a healthy margin (0.6 to 9 points) is multiplied by
    (x1 only: the figure stays within 9 points of its threshold, where the comparison is learned). ``wide_share``:
    the share of those healthy margins redrawn from 9 to 60 points, as far over a minimum as real banks are.
    ``weights``: a rule code's draw weight for a line (1 when absent; None draws every rule alike).
    Columns are the raw table's, with ``train_only`` True.
    """
    if n < 0 or lines < 1:
        raise ValueError(f"need n >= 0 and lines >= 1, got n={n}, lines={lines}")
    rng = random.Random(f"drills/{seed}")
    rows = []
    for i in range(n):
        regime = "EU" if rng.random() < eu_fraction else CBLR if rng.random() < _CBLR_SHARE else "US"
        report_date = rng.choice(_DATES)
        rules = [r for r in applicable_rules(regime, report_date) if r.code != "DATA_QUALITY"]
        draw = [weights.get(r.code, 1) for r in rules] if weights else None
        drawn = [_line(rng.choices(rules, draw)[0] if draw else rng.choice(rules), rng, report_date, spread,
                       wide_share)
                 for _ in range(lines)]
        violations = sorted({line.split(" ", 1)[0] for line, outcome in drawn if outcome == BREACH})
        rows.append({
            "id": f"DRILL-{seed}-{i:05d}", "bank_id": f"DRILL-{seed}-{i:05d}", "bank_name": "drill",
            "jurisdiction": regime[:2], "report_date": report_date, "template_family": DRILL, "case_kind": DRILL,
            "report_text": DRILL_PROMPT, "target": "ANALYSIS:\n" + "\n".join(f"- {line}" for line, _ in drawn),
            "violations": violations, "directive": "", "source_file": "", TRAIN_ONLY: True,
        })
    return pd.DataFrame(rows, columns=[*RAW_COLUMNS, TRAIN_ONLY])


def outcome_spans(target: str) -> list[tuple[int, int]]:
    """Character spans of the outcome words (``OK``, ``BREACH``) of ``target``'s check lines: a drill's loss."""
    return [match.span(1) for match in _OUTCOME.finditer(target)]
