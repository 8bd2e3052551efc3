"""Render the model's target (analysis, violations, directive) from the rule engine's result.

A directive answers each finding of the check lines in their order, one sentence each: the remedy the breached rule
calls for (capital restoration, conservation plan and distribution limits, liquidity restoration, exposure
reduction, resubmission), quoting the finding's figures, its legal basis and its time limit. Template families are
supervisors' house styles (how a notice is phrased); they are orthogonal to violation codes, so a held-out family
tests new wording without hiding any violation class from training.
"""

from __future__ import annotations

from dataclasses import dataclass

from regulator.rules import BREACH, CBLR, DATA_QUALITY, Check, RuleResult, regime
from regulator.xbrl import ParsedReport

# Per family: (first sentence, follow-up sentence for each further finding, sentence when no measure is needed).
# {bank}, {action}, {legal}, {days} and {finding} (``the LCR breach``) are filled per finding.
TEMPLATE_FAMILIES: dict[str, tuple[str, str, str]] = {
    "formal_notice": (
        "The supervisor notifies {bank} that it must {action} ({legal}) within {days} days.",
        "It must also {action} ({legal}) within {days} days.",
        "The supervisor notifies {bank} that no measure is required until the next report.",
    ),
    "directive_order": (
        "{bank} is directed to {action} under {legal} within {days} days.",
        "It is further directed to {action} under {legal} within {days} days.",
        "{bank} is not subject to any new direction until the next report.",
    ),
    "deadline_first": (
        "Within {days} days, {bank} must {action} ({legal}).",
        "Within {days} days, it must also {action} ({legal}).",
        "No measure for {bank} until the next report.",
    ),
    "legal_basis_first": (
        "Pursuant to {legal}, {bank} shall {action} within {days} days.",
        "Pursuant to {legal}, it shall also {action} within {days} days.",
        "No measure is imposed on {bank} until the next report.",
    ),
    "supervisory_letter": (
        "We require {bank} to {action} ({legal}) within {days} days.",
        "We also require it to {action} ({legal}) within {days} days.",
        "We require no measure from {bank} until the next report.",
    ),
    "findings_based": (
        "Given {finding}, {bank} must {action} under {legal} within {days} days.",
        "Given {finding}, it must also {action} under {legal} within {days} days.",
        "Given the reported figures, no measure is required from {bank} until the next report.",
    ),
    "escalation": (
        "Escalation for {bank}: {action} ({legal}), due within {days} days.",
        "Further measure: {action} ({legal}), due within {days} days.",
        "No escalation for {bank} until the next report.",
    ),
    "plain_instruction": (
        "{bank}: {action} ({legal}) within {days} days.",
        "Also {action} ({legal}) within {days} days.",
        "{bank}: no measure until the next report.",
    ),
}


@dataclass(frozen=True)
class _Remedy:
    actions: tuple[str, str]  # two wordings, ``{f}`` the finding's figures; a family uses one (its house style)
    legal: dict[str, str]  # by regime (EU, US, US-CBLR), falling back to the jurisdiction
    days: int


# One measure per finding, in the check lines' order: each sentence of a directive answers one non-OK check line and
# quotes its figures, so writing the directive is reading the check lines again (bench/NOTES.md, lever 12).
_CAPITAL_LEGAL = {"EU": "CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)"}
_LIQUIDITY_LEGAL = {"EU": "CRR Art 414", "US": "12 CFR part 329"}
_REMEDIES: dict[str, _Remedy] = {
    "CET1_RATIO": _Remedy(("restore the CET1 ratio from {f}", "raise CET1 capital from {f}"), _CAPITAL_LEGAL, 45),
    "T1_RATIO": _Remedy(("restore the Tier 1 ratio from {f}", "raise Tier 1 capital from {f}"), _CAPITAL_LEGAL, 45),
    "TOTAL_CAPITAL_RATIO": _Remedy(("restore the total capital ratio from {f}", "raise own funds from {f}"),
                                   _CAPITAL_LEGAL, 45),
    "COMBINED_BUFFER": _Remedy(
        ("submit a capital conservation plan for the buffer at {f}", "limit distributions while the buffer is {f}"),
        {"EU": "CRD Art 141 and 142", "US": "12 CFR 324.11"},
        7,
    ),
    "LEVERAGE": _Remedy(
        ("restore the leverage ratio from {f}", "submit a plan to lift the leverage ratio from {f}"),
        # a CBLR elector below the framework's ratio has a two-quarter grace period, then the generally applicable
        # capital rule (12 CFR 324.12(c)); otherwise a US leverage breach is a PCA capital matter
        {"EU": "CRR Art 92(1)(d) and CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)", CBLR: "12 CFR 324.12(c)"},
        30,
    ),
    "LCR": _Remedy(("submit a liquidity restoration plan for the LCR at {f}", "restore the LCR from {f}"),
                   _LIQUIDITY_LEGAL, 14),
    "NSFR": _Remedy(("submit a funding restoration plan for the NSFR at {f}", "restore the NSFR from {f}"),
                    _LIQUIDITY_LEGAL, 14),
    "LARGE_EXPOSURE": _Remedy(("reduce the large exposure from {f}", "bring the large exposure at {f} within the limit"),
                              {"EU": "CRR Art 395(1) and 396(1)", "US": "12 CFR part 32"}, 30),
    DATA_QUALITY: _Remedy(("resubmit the report with consistent figures",
                           "correct the inconsistent figures and resubmit the report"),
                          {"EU": "Implementing Regulation (EU) 2021/451", "US": "12 U.S.C. 1817(a)"}, 10),
}
_PCA_CODES = ("CET1_RATIO", "T1_RATIO", "TOTAL_CAPITAL_RATIO", "LEVERAGE")


def findings(result: RuleResult) -> list[Check]:
    """The checks a directive answers, in the check lines' order: every BREACH line, and the first data-quality
    line (one resubmission answers all of a report's data-quality findings)."""
    out: list[Check] = []
    for check in result.checks:
        if check.outcome == BREACH or (check.outcome == DATA_QUALITY and all(c.outcome != DATA_QUALITY for c in out)):
            out.append(check)
    return out


def render_directive(parsed: ParsedReport, result: RuleResult, family: str) -> str:
    """One sentence per finding (``findings``), each naming the remedy, its legal basis and its time limit and
    quoting the finding's figures, in ``family``'s wording; one sentence when no measure is needed."""
    first, follow, no_measure = TEMPLATE_FAMILIES[family]
    style = sorted(TEMPLATE_FAMILIES).index(family) % 2
    found = findings(result)
    if not found:
        return no_measure.format(bank=parsed.entity_name)
    sentences = []
    pca_cited = False
    for i, check in enumerate(found):
        remedy = _REMEDIES[DATA_QUALITY if check.outcome == DATA_QUALITY else check.code]
        legal = remedy.legal.get(regime(parsed), remedy.legal[parsed.jurisdiction])
        if (parsed.jurisdiction == "US" and regime(parsed) != CBLR and check.code in _PCA_CODES
                and result.pca_category and not pca_cited):
            legal = f"{legal}, as {result.pca_category.replace('_', ' ')} under 12 CFR 324.403"
            pca_cited = True
        action = remedy.actions[style].format(f=check.detail or check.description)
        sentences.append((first if i == 0 else follow).format(
            bank=parsed.entity_name, action=action, legal=legal, days=remedy.days,
            finding="the data-quality findings" if check.outcome == DATA_QUALITY else f"the {check.code} breach"))
    return " ".join(sentences)


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
