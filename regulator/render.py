"""Render the model's target (check lines, each finding's measure, the directive's closing) from the rule engine.

The answer holds the directive in two parts. Each finding's **measure** follows its check line (``  measure: ...``):
the remedy the law attaches to that rule, its legal basis for the report's jurisdiction and a time limit in days,
so a model writes it from the line it has just written (a per-rule constant, like the line's threshold). The
``DIRECTIVE:`` line **closes** the answer in the supervisor's house style (a template family): the measures above
are due, or no measure is. Families are orthogonal to violation codes, so a held-out family tests new wording
without hiding any violation class from training. The directive scored and shown is the measures in order, then
the closing sentence (``render_directive``; ``regulator.answers.parse_answer`` reads the same from an answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from regulator.rules import BREACH, CBLR, DATA_QUALITY, NOT_ASSESSED, Check, RuleResult, regime
from regulator.xbrl import ParsedReport

MEASURE_PREFIX = "measure:"

# Per family: (closing when measures are due, closing when none is). {bank} and {finding} are filled per example.
TEMPLATE_FAMILIES: dict[str, tuple[str, str]] = {
    "formal_notice": (
        "The supervisor notifies {bank} that it must take the measures above.",
        "The supervisor notifies {bank} that no measure is required until the next report.",
    ),
    "directive_order": (
        "{bank} is directed to take the measures above.",
        "{bank} is not subject to any new direction.",
    ),
    "deadline_first": (
        "Within the time limits stated, {bank} must take the measures above.",
        "No measure for {bank} until the next report.",
    ),
    "legal_basis_first": (
        "Pursuant to the provisions cited, {bank} shall take the measures above.",
        "No measure is imposed on {bank}.",
    ),
    "supervisory_letter": (
        "We require {bank} to take the measures above.",
        "We require no measure from {bank}.",
    ),
    "findings_based": (
        "Given the {finding}, {bank} must take the measures above.",
        "Given the {finding}, no measure is required from {bank}.",
    ),
    "escalation": (
        "Escalation for {bank}: the measures above are due within their time limits.",
        "No escalation for {bank}.",
    ),
    "plain_instruction": (
        "{bank}: take the measures above.",
        "{bank}: no measure.",
    ),
}


@dataclass(frozen=True)
class _Remedy:
    action: str
    legal: dict[str, str]  # by jurisdiction or regime (``US-CBLR``)
    days: int


_CAPITAL = {"EU": "CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)"}
_LIQUIDITY = {"EU": "CRR Art 414", "US": "12 CFR part 329"}
# The remedy of each finding: what the bank must do, under which provision, within how many days.
_REMEDIES: dict[str, _Remedy] = {
    "CET1_RATIO": _Remedy("raise CET1 capital or reduce risk-weighted assets", _CAPITAL, 45),
    "T1_RATIO": _Remedy("raise Tier 1 capital or reduce risk-weighted assets", _CAPITAL, 45),
    "TOTAL_CAPITAL_RATIO": _Remedy("raise own funds or reduce risk-weighted assets", _CAPITAL, 45),
    "COMBINED_BUFFER": _Remedy("submit a capital conservation plan and restrict distributions",
                               {"EU": "CRD Art 141 and 142", "US": "12 CFR 324.11"}, 7),
    # a CBLR elector below the framework's ratio has a two-quarter grace period, then the generally applicable
    # capital rule (12 CFR 324.12(c)); for other US banks leverage is a PCA capital measure
    "LEVERAGE": _Remedy("restore the leverage ratio above the minimum",
                        {"EU": "CRD Art 104(1)(c)", "US": "12 U.S.C. 1831o(e)(2)", CBLR: "12 CFR 324.12(c)"}, 30),
    "LCR": _Remedy("restore the liquidity coverage ratio and report liquidity daily", _LIQUIDITY, 14),
    "NSFR": _Remedy("restore stable funding under a liquidity restoration plan", _LIQUIDITY, 14),
    "LARGE_EXPOSURE": _Remedy("reduce the large exposure below the limit",
                              {"EU": "CRR Art 395(1) and 396(1)", "US": "12 CFR part 32"}, 30),
    DATA_QUALITY: _Remedy("correct or complete the reported figures and resubmit the report",
                          {"EU": "Implementing Regulation (EU) 2021/451", "US": "12 U.S.C. 1817(a)"}, 10),
}
MEASURED_CODES: frozenset[str] = frozenset(_REMEDIES)
# Every family's closing for measures due says this and none of its closings for no measure does (tests check it).
DUE_PHRASE = "the measures above"


def due(check: Check) -> bool:
    """True for a check line that carries a measure: a breach or a data-quality finding."""
    return check.outcome in (BREACH, DATA_QUALITY)


def remedy_code(code: str, outcome: str) -> str:
    """Whose remedy a finding calls for: a breach calls for its rule's, a data-quality finding for the report's
    correction, whichever line it is on. A buffer the filing does not report (``COMBINED_BUFFER not reported vs
    2.5% min: DATA_QUALITY``) calls for the missing figure, not a capital conservation plan."""
    return DATA_QUALITY if outcome == DATA_QUALITY else code


def measure(parsed: ParsedReport, code: str) -> str:
    """The measure for a finding of rule ``code`` in this report: ``action (legal basis) within N days``."""
    return _measure_text(code, parsed.jurisdiction, regime(parsed))


def _measure_text(code: str, jurisdiction: str, rule_set: str) -> str:
    remedy = _REMEDIES[code]
    legal = remedy.legal.get(rule_set, remedy.legal[jurisdiction])
    return f"{remedy.action} ({legal}) within {remedy.days} days"


def remedies(jurisdiction: str, rule_set: str) -> list[str]:
    """Every measure the law table attaches to a finding under this rule set (``regulator.rules.regime``): one per
    rule code, each with its legal basis there. Which of them an answer writes is the model's decision."""
    return list(dict.fromkeys(_measure_text(code, jurisdiction, rule_set) for code in _REMEDIES))


def closing(parsed: ParsedReport, result: RuleResult, family: str, measures_due: bool) -> str:
    """The ``DIRECTIVE:`` sentence in ``family``'s wording: the measures above are due, or no measure is."""
    frame = TEMPLATE_FAMILIES[family][0 if measures_due else 1]
    return frame.format(bank=parsed.entity_name, finding=_finding(result))


def render_directive(parsed: ParsedReport, result: RuleResult, family: str,
                     codes: Sequence[str] | None = None) -> str:
    """The directive as scored and shown: each finding's measure in the check lines' order, closed by a full stop,
    then the closing sentence. ``codes`` replaces the report's findings (rule codes, one per measure): the directive
    a model would write had it found those (bench/probe_ceiling.py)."""
    found = [remedy_code(c.code, c.outcome) for c in result.checks if due(c)] if codes is None else list(codes)
    return join_directive([measure(parsed, code) for code in found], closing(parsed, result, family, bool(found)))


def join_directive(measures: Sequence[str], closing_text: str) -> str:
    """The directive as one text: each measure closed by a full stop, then the closing sentence (empty parts are
    left out). The reference (``render_directive``) and the parser of answers (``parse_answer``) both use it."""
    return " ".join([*(f"{m.rstrip('.')}." for m in measures if m), *([closing_text] if closing_text else [])])


def render_target(parsed: ParsedReport, result: RuleResult, family: str) -> str:
    """The full answer text: one check line per rule (``- CODE figure vs threshold kind: OUTCOME``), each finding
    followed by its measure (``  measure: ...``), then the ``DIRECTIVE:`` closing sentence.

    There is no separate verdict line: the violation set is what the check lines say (BREACH codes, plus
    DATA_QUALITY for any DATA_QUALITY line), so an answer cannot contradict itself.
    """
    lines = ["ANALYSIS:"]
    for check in result.checks:
        lines.append(f"- {check.line()}")
        if due(check):
            lines.append(f"  {MEASURE_PREFIX} {measure(parsed, remedy_code(check.code, check.outcome))}")
    lines.append(f"DIRECTIVE: {closing(parsed, result, family, any(due(c) for c in result.checks))}")
    return "\n".join(lines)


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


def finding_phrases(heads: Sequence[str]) -> list[str]:
    """Every main finding (``_finding``) a directive may cite on a filing whose check lines have these ``heads``
    (``CODE figure vs threshold kind``): each rule's reported figure, under each description its code has in the
    rule table, and the two phrases that cite no figure. Which one is the main finding is not told."""
    from regulator.rules import RULES

    descriptions: dict[str, list[str]] = {}
    for rule in RULES:
        descriptions.setdefault(rule.code, []).append(rule.description)
    phrases = ["data-quality findings", "reported figures"]
    for head in heads:
        code, _, detail = head.partition(" ")
        figure = detail.split(" vs ")[0]
        phrases.extend(f"reported {d} {figure}" for d in descriptions.get(code, ()))
    return list(dict.fromkeys(phrases))


def closings(bank: str, findings: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every closing sentence a directive to ``bank`` may end with, as ``(measures due, no measure)``: each house
    style's, those that cite the main finding once per phrase of ``findings``. Which style, and whether measures are
    due, is the answer's: the closing only has to agree with the measures written above it."""
    due: dict[str, None] = {}
    none: dict[str, None] = {}
    for frames in TEMPLATE_FAMILIES.values():
        for out, frame in zip((due, none), frames):
            out.update(dict.fromkeys(frame.format(bank=bank, finding=f) for f in findings))
    return list(due), list(none)


def family_for_bank(bank_id: str) -> str:
    """A stable family for a bank seen without a generator (e.g. a folder of real filings): its house style."""
    names = sorted(TEMPLATE_FAMILIES)
    return names[sum(bank_id.encode()) % len(names)]
