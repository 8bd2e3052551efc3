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

Gap drills (``case_kind`` ``gap_drill``) teach the one decision the missing-denominator finding needs: does the
answer open with a data-quality line (``- DATA_QUALITY leverage assets not reported``, right after the report's last
line ``Not reported: leverage assets``) or with the first rule's check line? Each is a pair of generated US Call
Reports of one bank and quarter with the same figures, one filed without its leverage assets (as the public
extracts of real Call Reports are), one with them, their answers cut after that first line and the loss on its
opening alone: the only difference between the two rows is the item, so the gradient can only teach reading it
(bench/NOTES.md, levers 48-49: the finding was not learned from ~30 pool reports seen once, nor, at the end of the
answer, from these pairs).
"""

from __future__ import annotations

import math
import random
import re
from datetime import date

import pandas as pd

from regulator.generator import (BALANCED, RAW_COLUMNS, TRAIN_ONLY, US_EXTRACT_OMITS, WIDE_MAX_BP, WIDE_SHARE, Bank,
                                 cblr_elector, label_instance, make_banks, quarter_end, report_figures, us_form,
                                 us_instance)
from regulator.rules import BREACH, CBLR, Rule, applicable_rules, check_rule
from regulator.xbrl import ParsedReport, parse_xbrl_bytes

DRILL = "drill"  # the case_kind (and template family) of a drill row
GAP_DRILL = "gap_drill"  # the case_kind (and template family) of a gap drill row
DRILL_KINDS = (DRILL, GAP_DRILL)
# How a data-quality finding's line opens; an answer's first line is one (a required fact left out) or its first
# rule's check line.
DQ_OPENING = "- DATA_QUALITY"
_LEVERAGE_ASSETS, _BUFFER = "RCOAA224", "RCOAH311"
# A gap drill's pair: what the filing with the gap leaves out, and what its twin leaves out (an item whose absence is
# a finding on its rule's own check line, not a first line). Risk-based filers, then CBLR electors.
_GAPS = {"US": (((_LEVERAGE_ASSETS,), US_EXTRACT_OMITS), ((), (_BUFFER,))),
         CBLR: (((_LEVERAGE_ASSETS,),), ((),))}
_GAP_ELECTOR_SHARE = 0.5  # of the gap drills' banks: real extracts and bulk data hold many electors
DRILL_PROMPT = ("Rule drill, training only: each line states a figure and its threshold; say whether the figure "
                "meets it (OK) or not (BREACH).")
# Report dates the drills draw their rule versions from: the generator's quarters (2022-2025).
_DATES = tuple(f"{y}-{md}" for y in range(2022, 2026) for md in ("03-31", "06-30", "09-30", "12-31"))
_CBLR_SHARE = 0.1  # of the US drills: community bank leverage ratio electors (one rule, leverage vs 9%)
_OUTCOME = re.compile(r": (OK|BREACH)$", re.MULTILINE)


def _line(rule: Rule, rng: random.Random, report_date: str, spread: tuple[int, ...] = (1,),
          wide_share: float = 0.0, fine: float = 0.0) -> tuple[str, str]:
    """One check line for ``rule`` with a drawn figure (and, for a bank-specific requirement, a drawn requirement);
    a healthy margin is multiplied by a factor drawn from ``spread``; a margin of 60 bp or more is, with probability
    ``wide_share``, redrawn log-uniformly from 9 to 60 points (a CET1 ratio of 40% against its 4.5% minimum).
    ``fine`` (0 to 1 bp) moves the figure further from its threshold, on the side it already is: a ratio of a real
    Call Report's precision (``2.2936%``, four decimals of a percentage) where whole basis points give two."""
    threshold = rule.threshold if rule.threshold is not None else rng.randint(700, 1250) / 10000
    # near (within 60 bp), moderate (to 3 points) or healthy (0.6 to 9 points; ``spread`` (3, 6) would also draw x3
    # and x6 as banks hold LCR and NSFR far above 100%: drills so spread did not teach the comparison in 120 rows
    # over three seeds, bench/NOTES.md lever 16)
    margin = rng.choice((rng.randint(1, 60), rng.randint(1, 300), rng.randint(60, 900) * rng.choice(spread)))
    if margin >= 60 and rng.random() < wide_share:  # far from it, as real banks are (generator._margin)
        margin = int(math.exp(rng.uniform(math.log(900), math.log(WIDE_MAX_BP))))
    breach = rng.random() < 0.5
    upward = rule.comparison in (">=", ">")  # a minimum: a breach is below it; a limit: above it
    away = margin / 10000 + fine / 10000
    figure = threshold - away if upward == breach else threshold + away
    if figure <= 0:  # a small threshold cannot be undershot by more than itself
        figure = threshold * rng.randint(1, 99) / 100
    facts: dict[str, float | None] = {rule.figure: round(figure, 6 if fine else 4)}
    if rule.threshold_fact:
        facts[rule.threshold_fact] = threshold
    parsed = ParsedReport(source="", jurisdiction="", form="", entity_id="", entity_name="",
                          report_date=report_date, currency="", facts=facts)
    check = check_rule(rule, parsed)
    return check.line(), check.outcome


def generate_drills(n: int, seed: int, lines: int = 24, eu_fraction: float = 0.5,
                    spread: tuple[int, ...] = (1,), weights: dict[str, int] | None = None,
                    wide_share: float = WIDE_SHARE, fine_share: float = 0.0) -> pd.DataFrame:
    """``n`` drill rows of ``lines`` check lines each, deterministic for ``seed``.

    Each drill takes the rules of one regime (EU with probability ``eu_fraction``, else US, a tenth of them US-CBLR)
    in force on a drawn report date, one random rule per line; data-quality lines are not drilled (they are
    findings, not comparisons). ``spread``: the factors a healthy margin (0.6 to 9 points) is multiplied by
    (x1 only: the figure stays within 9 points of its threshold, where the comparison is learned). ``wide_share``:
    the share of those healthy margins redrawn from 9 to 60 points, as far over a minimum as real banks are.
    ``weights``: a rule code's draw weight for a line (1 when absent; None draws every rule alike).
    ``fine_share``: the share of lines whose figure has a real Call Report's precision (four decimals of a
    percentage) instead of whole basis points; drawn from a stream of its own, so the drills are otherwise the same.
    Columns are the raw table's, with ``train_only`` True.
    """
    if n < 0 or lines < 1:
        raise ValueError(f"need n >= 0 and lines >= 1, got n={n}, lines={lines}")
    rng = random.Random(f"drills/{seed}")
    precision = random.Random(f"drills/{seed}/precision")
    rows = []
    for i in range(n):
        regime = "EU" if rng.random() < eu_fraction else CBLR if rng.random() < _CBLR_SHARE else "US"
        report_date = rng.choice(_DATES)
        rules = [r for r in applicable_rules(regime, report_date) if r.code != "DATA_QUALITY"]
        draw = [weights.get(r.code, 1) for r in rules] if weights else None
        drawn = [_line(rng.choices(rules, draw)[0] if draw else rng.choice(rules), rng, report_date, spread,
                       wide_share, _fine(precision, fine_share))
                 for _ in range(lines)]
        violations = sorted({line.split(" ", 1)[0] for line, outcome in drawn if outcome == BREACH})
        rows.append({
            "id": f"DRILL-{seed}-{i:05d}", "bank_id": f"DRILL-{seed}-{i:05d}", "bank_name": "drill",
            "jurisdiction": regime[:2], "report_date": report_date, "template_family": DRILL, "case_kind": DRILL,
            "report_text": DRILL_PROMPT, "target": "ANALYSIS:\n" + "\n".join(f"- {line}" for line, _ in drawn),
            "violations": violations, "directive": "", "source_file": "", TRAIN_ONLY: True,
        })
    return pd.DataFrame(rows, columns=[*RAW_COLUMNS, TRAIN_ONLY])


def _fine(precision: random.Random, share: float) -> float:
    """A sub-basis-point move (0.01 to 0.99 bp) with probability ``share``, else 0 (whole basis points)."""
    return precision.randint(1, 99) / 100 if precision.random() < share else 0.0


def outcome_spans(target: str) -> list[tuple[int, int]]:
    """Character spans of the outcome words (``OK``, ``BREACH``) of ``target``'s check lines: a drill's loss."""
    return [match.span(1) for match in _OUTCOME.finditer(target)]


def decision_point(target: str) -> tuple[str, str, str]:
    """Where an answer decides whether the filing leaves a required fact out: its first line, a data-quality finding
    (``- DATA_QUALITY leverage assets not reported: DATA_QUALITY``) or the first rule's check line. Returns the
    answer before it (``ANALYSIS:\n``), that line, and the first rule's line opening (``- LEVERAGE``): the other
    way the answer could have gone."""
    lines = target.split("\n")
    rule_line = next((line for line in lines[1:] if line.startswith("- ") and not line.startswith(DQ_OPENING)), None)
    if rule_line is None:
        raise ValueError(f"no rule's check line in the answer {target[:80]!r}...")
    return lines[0] + "\n", lines[1], line_opening(rule_line)


def line_opening(line: str) -> str:
    """A check line's opening: its dash and code (``- LEVERAGE``, ``- DATA_QUALITY``)."""
    return " ".join(line.split(" ", 2)[:2])


def _gap_bank(rng: random.Random, elector: bool, taken: list[Bank]) -> Bank:
    """A generated US bank (a CBLR elector or a risk-based filer, as asked), unique among ``taken``."""
    while True:
        (bank,) = make_banks(rng, 1, 0.0, taken)
        if cblr_elector(bank) == elector:
            taken.append(bank)
            return bank


def _gap_row(bank: Bank, report_date: date, figures: dict[str, float | None], omit: tuple[str, ...], seed: int,
             i: int, side: str, xml_seed: str) -> dict:
    """One gap drill row: the report filed without ``omit``, its answer cut after its first line (the decision)."""
    kept = {code: value for code, value in figures.items() if code not in omit}
    xml = us_instance(bank.bank_id, bank.name, report_date, kept, random.Random(xml_seed), form=us_form(bank),
                      cblr=cblr_elector(bank))
    parsed = parse_xbrl_bytes(xml.encode(), source=f"gap-drill-{seed}-{i}-{side}")
    row = label_instance(parsed, family=bank.family, bank_name=bank.name)
    prefix, line, _ = decision_point(row["target"])
    return {**row, "id": f"GAPDRILL-{seed}-{i:05d}-{side}", "bank_id": f"GAPDRILL-{seed}-{i:05d}",
            "template_family": GAP_DRILL, "case_kind": GAP_DRILL, "directive": "", "source_file": "",
            "target": prefix + line, TRAIN_ONLY: True}


def generate_gap_drills(n: int, seed: int) -> pd.DataFrame:
    """``2 * n`` gap drill rows (``n`` pairs), deterministic for ``seed``: a generated US report (a CBLR elector for
    about ``_GAP_ELECTOR_SHARE`` of the banks; half of the risk-based filers without additional Tier 1, as most US
    banks file) with its leverage assets (and, for half of the risk-based pairs, its conservation buffer too: the
    public extracts) left out, and the same report with them filed (for half of the risk-based pairs without the
    buffer, whose finding is the buffer's own check line, not a first line). Reports that break by their draw
    (a data-quality finding of their own) are drawn again. Columns are the raw table's, ``train_only`` True."""
    if n < 0:
        raise ValueError(f"need n >= 0 gap drills, got {n}")
    rng = random.Random(f"gap-drills/{seed}")
    taken: list[Bank] = []
    rows: list[dict] = []
    for i in range(n):
        elector = rng.random() < _GAP_ELECTOR_SHARE
        bank = _gap_bank(rng, elector, taken)
        report_date = quarter_end(bank.first_quarter + rng.randrange(8))
        gaps, twins = _GAPS[CBLR if elector else "US"]
        gap, twin = rng.choice(gaps), rng.choice(twins)
        while True:
            figures = report_figures(bank, rng.choice(("compliant", BALANCED)), rng,
                                     no_at1=not elector and rng.random() < 0.5)
            pair = [_gap_row(bank, report_date, figures, omit, seed, i, side, f"gap-drills/{seed}/{i}")
                    for omit, side in ((gap, "gap"), (twin, "twin"))]
            if pair[0]["target"].endswith(": DATA_QUALITY") and DQ_OPENING not in pair[1]["target"]:
                break
        rows += pair
    return pd.DataFrame(rows, columns=[*RAW_COLUMNS, TRAIN_ONLY])


def gap_spans(target: str) -> list[tuple[int, int]]:
    """Character span of a gap drill's decision: the opening of its one line (``- DATA_QUALITY`` or the first
    rule's ``- CODE``), the one place its loss looks."""
    start = target.index("\n") + 1
    return [(start, start + len(line_opening(target[start:])))]


def loss_spans(case_kind: str, target: str) -> list[tuple[int, int]] | None:
    """Where a drill row's loss looks (character spans of ``target``); None for a report, whose loss is all of it."""
    if case_kind == DRILL:
        return outcome_spans(target)
    if case_kind == GAP_DRILL:
        return gap_spans(target)
    return None
