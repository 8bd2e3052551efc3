"""Render the model's target (analysis, violations, directive) from the rule engine's result.

Directives come from template families: a family is a supervisor's house style (how a notice is phrased), the
situation (capital shortfall, buffer shortfall, liquidity, ...) decides the legal remedy. Families are orthogonal to
violation codes, so a held-out family tests new wording without hiding any violation class from training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from regulator.rules import BREACH, CBLR, DATA_QUALITY, NOT_ASSESSED, RuleResult, regime
from regulator.xbrl import ParsedReport

# Per family: (first sentence, follow-up sentence for a further remedy, sentence when no measure is needed).
# {bank}, {action}, {legal}, {deadline}, {date}, {finding} are filled per example.
TEMPLATE_FAMILIES: dict[str, tuple[str, str, str]] = {
    "formal_notice": (
        "The supervisor notifies {bank} that it must {action} ({legal}) by {deadline}.",
        "It must also {action} ({legal}) by {deadline}.",
        "The supervisor notifies {bank} that no measure is required; next review {deadline}.",
    ),
    "directive_order": (
        "{bank} is directed to {action} under {legal} by {deadline}.",
        "It is further directed to {action} under {legal} by {deadline}.",
        "{bank} is not subject to any new direction; next review {deadline}.",
    ),
    "deadline_first": (
        "By {deadline}, {bank} must {action} ({legal}).",
        "By {deadline}, it must also {action} ({legal}).",
        "No measure for {bank} until the next review on {deadline}.",
    ),
    "legal_basis_first": (
        "Pursuant to {legal}, {bank} shall {action} by {deadline}.",
        "Pursuant to {legal}, it shall also {action} by {deadline}.",
        "No measure is imposed on {bank}; next review {deadline}.",
    ),
    "supervisory_letter": (
        "We require {bank} to {action} ({legal}) by {deadline}.",
        "We also require it to {action} ({legal}) by {deadline}.",
        "We require no measure from {bank}; next review {deadline}.",
    ),
    "findings_based": (
        "Given the {finding}, {bank} must {action} under {legal} by {deadline}.",
        "In addition, it must {action} under {legal} by {deadline}.",
        "Given the {finding}, no measure is required from {bank}; next review {deadline}.",
    ),
    "escalation": (
        "Escalation for {bank}: {action} ({legal}), due {deadline}.",
        "Further measure: {action} ({legal}), due {deadline}.",
        "No escalation for {bank}; next review {deadline}.",
    ),
    "plain_instruction": (
        "{bank}: {action} ({legal}) by {deadline}.",
        "Also {action} ({legal}) by {deadline}.",
        "{bank}: no measure; next review {deadline}.",
    ),
}


@dataclass(frozen=True)
class _Remedy:
    actions: tuple[str, ...]
    legal: dict[str, str]
    days: int


# Ordered by priority: the first situations of a report get the directive's sentences (at most three). Each family
# words an action its own way (its house style), so the wording follows from the supervisor, not from chance.
_REMEDIES: dict[str, _Remedy] = {
    "capital": _Remedy(
        (
            "submit a capital restoration plan",
            "raise capital or reduce risk-weighted assets under a capital restoration plan",
        ),
        {"EU": "CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)"},
        45,
    ),
    "buffer": _Remedy(
        (
            "submit a capital conservation plan and restrict distributions",
            "limit distributions to the maximum distributable amount",
        ),
        {"EU": "CRD Art 141 and 142", "US": "12 CFR 324.11"},
        7,
    ),
    "leverage": _Remedy(
        (
            "restore the leverage ratio above the minimum",
            "submit a plan to restore the leverage ratio",
        ),
        # a CBLR elector below the framework's ratio has a two-quarter grace period, then the generally applicable
        # capital rule (12 CFR 324.12(c))
        {"EU": "CRR Art 92(1)(d) and CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)", CBLR: "12 CFR 324.12(c)"},
        30,
    ),
    "liquidity": _Remedy(
        (
            "submit a liquidity restoration plan",
            "restore its liquidity ratios to 100% and report liquidity daily",
        ),
        {"EU": "CRR Art 414", "US": "12 CFR part 329"},
        14,
    ),
    "exposure": _Remedy(
        (
            "reduce the large exposure below 25% of Tier 1 capital",
            "bring the large exposure back within the limit",
        ),
        {"EU": "CRR Art 395(1) and 396(1)", "US": "12 CFR part 32"},
        30,
    ),
    "data": _Remedy(
        (
            "resubmit the report with consistent figures",
            "correct the inconsistent figures and resubmit the report",
        ),
        {"EU": "Implementing Regulation (EU) 2021/451", "US": "12 U.S.C. 1817(a)"},
        10,
    ),
    "watch": _Remedy(
        (
            "submit capital and liquidity projections",
            "report monthly on the ratios close to their thresholds",
        ),
        {"EU": "CRD Art 104(1)(j)", "US": "12 CFR 324.10", CBLR: "12 CFR 324.12"},
        30,
    ),
    "none": _Remedy(("",), {"EU": "", "US": ""}, 90),
}
_SITUATION_OF_CODE = {
    "CET1_RATIO": "capital",
    "T1_RATIO": "capital",
    "TOTAL_CAPITAL_RATIO": "capital",
    "COMBINED_BUFFER": "buffer",
    "LEVERAGE": "leverage",
    "LCR": "liquidity",
    "NSFR": "liquidity",
    "LARGE_EXPOSURE": "exposure",
    "DATA_QUALITY": "data",
}
_REVIEW_LAG_DAYS = 40  # supervisors review a quarter-end report about six weeks after the reference date


def situations(parsed: ParsedReport, result: RuleResult) -> list[str]:
    """The remedies a report calls for, highest priority first (US leverage breaches are PCA capital matters, except
    under the CBLR framework, which has its own consequence)."""
    found = {_SITUATION_OF_CODE[code] for code in result.violations}
    if parsed.jurisdiction == "US" and regime(parsed) != CBLR and "leverage" in found:
        found = (found - {"leverage"}) | {"capital"}
    if not found:
        near = any(c.severity == "watch" for c in result.checks)
        return ["watch" if near else "none"]
    return [s for s in _REMEDIES if s in found]


def render_directive(parsed: ParsedReport, result: RuleResult, family: str,
                     remedies: Sequence[str] | None = None) -> str:
    """One to three sentences: what the bank must do, by when, citing the legal remedy, in ``family``'s wording.
    ``remedies`` (situations such as ``["capital"]`` or ``["none"]``) replaces the report's own: the directive a
    model would write had it chosen those (bench/probe_ceiling.py)."""
    first, follow, no_measure = TEMPLATE_FAMILIES[family]
    style = sorted(TEMPLATE_FAMILIES).index(family)
    review = date.fromisoformat(parsed.report_date) + timedelta(days=_REVIEW_LAG_DAYS)
    finding = _finding(result)
    sentences = []
    for i, situation in enumerate((situations(parsed, result) if remedies is None else list(remedies))[:3]):
        remedy = _REMEDIES[situation]
        legal = remedy.legal.get(regime(parsed), remedy.legal[parsed.jurisdiction])
        if situation == "capital" and parsed.jurisdiction == "US" and result.pca_category:
            legal = f"{legal}, as {result.pca_category.replace('_', ' ')} under 12 CFR 324.403"
        deadline = _fmt_date(review + timedelta(days=remedy.days))
        frame = no_measure if situation == "none" else first if i == 0 else follow
        sentences.append(
            frame.format(
                bank=parsed.entity_name,
                action=remedy.actions[style % len(remedy.actions)],
                legal=legal,
                deadline=deadline,
                date=_fmt_date(date.fromisoformat(parsed.report_date)),
                finding=finding,
            )
        )
    return " ".join(sentences)


def _finding(result: RuleResult) -> str:
    """The main finding in a few words, for families that cite it: the first breach, else data quality, else CET1."""
    for outcome in (BREACH, DATA_QUALITY):
        for check in result.checks:
            if check.outcome == outcome and check.code == DATA_QUALITY:
                return "data-quality findings"
            if check.outcome == outcome:
                return f"reported {check.description.split(' vs ')[0]}"
    assessed = [c for c in result.checks if c.outcome != NOT_ASSESSED]
    return f"reported {assessed[0].description.split(' vs ')[0]}" if assessed else "reported figures"


def _fmt_date(d: date) -> str:
    return f"{d.day} {d.strftime('%B %Y')}"


def render_target(result: RuleResult, directive: str) -> str:
    """The full answer text: one check line per rule (``- CODE figure vs threshold kind: OUTCOME``), then the directive.

    There is no separate verdict line: the violation set is what the check lines say (BREACH codes, plus
    DATA_QUALITY for any DATA_QUALITY line), so an answer cannot contradict itself.
    """
    lines = ["ANALYSIS:"]
    lines.extend(f"- {check.line()}" for check in result.checks)
    lines.append(f"DIRECTIVE: {directive}")
    return "\n".join(lines)


def family_for_bank(bank_id: str) -> str:
    """A stable family for a bank seen without a generator (e.g. a folder of real filings): its house style."""
    names = sorted(TEMPLATE_FAMILIES)
    return names[sum(bank_id.encode()) % len(names)]
