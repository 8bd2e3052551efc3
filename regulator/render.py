"""Render the model's target (analysis, violations, directive) from the rule engine's result.

Directives come from template families: a family is a supervisor's house style (how a notice is phrased), the
situation (capital shortfall, buffer shortfall, liquidity, ...) decides the legal remedy. Families are orthogonal to
violation codes, so a held-out family tests new wording without hiding any violation class from training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from regulator.rules import BREACH, DATA_QUALITY, RuleResult
from regulator.xbrl import ParsedReport

# Per family: (first sentence, follow-up sentence for a further remedy, sentence when no measure is needed).
# {bank}, {action}, {legal}, {deadline}, {date}, {finding} are filled per example.
TEMPLATE_FAMILIES: dict[str, tuple[str, str, str]] = {
    "formal_notice": (
        "The supervisor notifies {bank} that it must {action} ({legal}) by {deadline}.",
        "{bank} must also {action} ({legal}) by {deadline}.",
        "The supervisor notifies {bank} that no measure is required; it must {action} ({legal}) until the next "
        "review on {deadline}.",
    ),
    "directive_order": (
        "{bank} is directed to {action} under {legal} no later than {deadline}.",
        "It is further directed to {action} under {legal} by {deadline}.",
        "{bank} is not subject to any new direction and is expected to {action} under {legal} until {deadline}.",
    ),
    "deadline_first": (
        "By {deadline}, {bank} must {action}, as required by {legal}.",
        "By {deadline}, it must also {action} ({legal}).",
        "Until the next review on {deadline}, {bank} must {action}, as required by {legal}.",
    ),
    "legal_basis_first": (
        "Pursuant to {legal}, {bank} shall {action} by {deadline}.",
        "Pursuant to {legal}, it shall also {action} by {deadline}.",
        "Pursuant to {legal}, no measure is imposed; {bank} shall {action} until {deadline}.",
    ),
    "supervisory_letter": (
        "Following our review of the {date} report, we require {bank} to {action} ({legal}) by {deadline}.",
        "We also require the bank to {action} ({legal}) by {deadline}.",
        "Following our review of the {date} report, we require no measure from {bank}; it should {action} "
        "({legal}) until {deadline}.",
    ),
    "findings_based": (
        "In view of the {finding}, {bank} must {action} under {legal} by {deadline}.",
        "In addition, {bank} must {action} under {legal} by {deadline}.",
        "In view of the {finding}, no measure is required; {bank} must {action} under {legal} until {deadline}.",
    ),
    "escalation": (
        "Supervisory escalation for {bank}: {action} pursuant to {legal}, due {deadline}.",
        "Further measure: {action} pursuant to {legal}, due {deadline}.",
        "No escalation for {bank}: {action} pursuant to {legal}; next review {deadline}.",
    ),
    "plain_instruction": (
        "{bank}: {action} ({legal}); deadline {deadline}.",
        "Also {action} ({legal}); deadline {deadline}.",
        "{bank}: no measure; {action} ({legal}); next review {deadline}.",
    ),
}


@dataclass(frozen=True)
class _Remedy:
    actions: tuple[str, ...]
    legal: dict[str, str]
    days: int


# Ordered by priority: the first situations of a report get the directive's sentences (at most three).
_REMEDIES: dict[str, _Remedy] = {
    "capital": _Remedy(
        (
            "submit a capital restoration plan and restore its risk-based capital ratios above the minimum",
            "raise capital or reduce risk-weighted assets under a capital restoration plan",
            "file a capital restoration plan showing how the capital ratios return above the minimum",
        ),
        {"EU": "CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)"},
        45,
    ),
    "buffer": _Remedy(
        (
            "submit a capital conservation plan and apply the restrictions on distributions",
            "restrict dividends, variable remuneration and AT1 coupons to the maximum distributable amount",
            "halt distributions beyond the maximum distributable amount and present a capital conservation plan",
        ),
        {"EU": "CRD Art 141 and 142", "US": "12 CFR 324.11"},
        7,
    ),
    "leverage": _Remedy(
        (
            "restore the leverage ratio above the minimum through Tier 1 capital or lower exposures",
            "submit a plan to bring the leverage ratio back above the minimum",
        ),
        {"EU": "CRR Art 92(1)(d) and CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)"},
        30,
    ),
    "liquidity": _Remedy(
        (
            "submit a liquidity restoration plan and report liquidity daily until the requirement is met",
            "restore the liquidity and stable funding ratios to 100% under a liquidity restoration plan",
        ),
        {"EU": "CRR Art 414", "US": "12 CFR part 329"},
        14,
    ),
    "exposure": _Remedy(
        (
            "reduce the exposure to the affected client group below 25% of Tier 1 capital",
            "bring the large exposure back within the limit and report the excess without delay",
        ),
        {"EU": "CRR Art 395(1) and 396(1)", "US": "12 CFR part 32"},
        30,
    ),
    "data": _Remedy(
        (
            "resubmit the report with corrected and internally consistent figures",
            "correct the inconsistent figures and resubmit the report",
            "file a corrected resubmission of the report with reconciled ratios",
        ),
        {"EU": "Implementing Regulation (EU) 2021/451", "US": "12 U.S.C. 1817(a)"},
        10,
    ),
    "watch": _Remedy(
        (
            "submit capital and liquidity projections showing headroom above the requirements",
            "report monthly on the ratios close to their thresholds under heightened monitoring",
        ),
        {"EU": "CRD Art 104(1)(j)", "US": "12 CFR 324.10"},
        30,
    ),
    "none": _Remedy(
        (
            "continue to meet all prudential requirements",
            "maintain its current capital and liquidity positions above all requirements",
        ),
        {"EU": "CRR Art 92", "US": "12 CFR part 324"},
        90,
    ),
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
    """The remedies a report calls for, highest priority first (US leverage breaches are PCA capital matters)."""
    found = {_SITUATION_OF_CODE[code] for code in result.violations}
    if parsed.jurisdiction == "US" and "leverage" in found:
        found = (found - {"leverage"}) | {"capital"}
    if not found:
        near = any(c.severity == "watch" for c in result.checks)
        return ["watch" if near else "none"]
    return [s for s in _REMEDIES if s in found]


def render_directive(parsed: ParsedReport, result: RuleResult, family: str, rng: random.Random) -> str:
    """One to three sentences: what the bank must do, by when, citing the legal remedy, in ``family``'s wording."""
    first, follow, no_measure = TEMPLATE_FAMILIES[family]
    review = date.fromisoformat(parsed.report_date) + timedelta(days=_REVIEW_LAG_DAYS)
    finding = _finding(result)
    sentences = []
    for i, situation in enumerate(situations(parsed, result)[:3]):
        remedy = _REMEDIES[situation]
        legal = remedy.legal[parsed.jurisdiction]
        if situation == "capital" and parsed.jurisdiction == "US" and result.pca_category:
            legal = f"{legal}, as {result.pca_category.replace('_', ' ')} under 12 CFR 324.403"
        deadline = _fmt_date(review + timedelta(days=remedy.days))
        frame = no_measure if situation == "none" else first if i == 0 else follow
        sentences.append(
            frame.format(
                bank=parsed.entity_name,
                action=rng.choice(remedy.actions),
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
                return f"data-quality finding ({check.description})"
            if check.outcome == outcome:
                return f"reported {check.description.split(' vs ')[0]}"
    return f"reported {result.checks[0].description.split(' vs ')[0]}" if result.checks else "reported figures"


def _fmt_date(d: date) -> str:
    return f"{d.day} {d.strftime('%B %Y')}"


def render_target(result: RuleResult, directive: str) -> str:
    """The full answer text in the format of CONVENTIONS (analysis lines, violations, directive)."""
    lines = ["ANALYSIS:"]
    lines.extend(f"- {check.line()}" for check in result.checks)
    lines.append(f"VIOLATIONS: {', '.join(result.violations) if result.violations else 'NONE'}")
    lines.append(f"DIRECTIVE: {directive}")
    return "\n".join(lines)


def family_for_bank(bank_id: str) -> str:
    """A stable family for a bank seen without a generator (e.g. a folder of real filings): its house style."""
    names = sorted(TEMPLATE_FAMILIES)
    return names[sum(bank_id.encode()) % len(names)]
