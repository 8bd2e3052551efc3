"""The prudential rule engine: thresholds as dated data, and the label oracle ``evaluate_rules``.

Each rule compares one figure the report states with a threshold (a constant, or a bank-specific requirement the
report also states), so an answer can quote both figures without arithmetic. Arithmetic belongs here: the
data-quality checks recompute every ratio from its components and flag disagreements, scale errors and missing facts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from regulator.taxonomy import BY_CODE
from regulator.xbrl import ParsedReport, format_threshold, render_value

RULE_CODES: tuple[str, ...] = (
    "CET1_RATIO",
    "T1_RATIO",
    "TOTAL_CAPITAL_RATIO",
    "COMBINED_BUFFER",
    "LEVERAGE",
    "LCR",
    "NSFR",
    "LARGE_EXPOSURE",
    "DATA_QUALITY",
)
CASE_KINDS: tuple[str, ...] = ("compliant", "near_miss", "single_breach", "multi_breach", "data_quality")
OK, BREACH, DATA_QUALITY = "OK", "BREACH", "DATA_QUALITY"
# The outcome of a rule in force whose figure or threshold this filing cannot give (a template not filed in a
# module-wise submission, a cell the DPM mapping lacks): stated, not guessed, and never a violation.
NOT_ASSESSED = "NOT_ASSESSED"
CBLR = "US-CBLR"  # the rule set of a US community bank leverage ratio elector
NEAR_MISS_MARGIN = 0.005  # 50 bp
# A reported ratio may differ from numerator/denominator by rounding; beyond this it is a data-quality finding.
RATIO_TOLERANCE_ABS = 0.001
RATIO_TOLERANCE_REL = 0.005
_SCALE_FACTORS = (10.0, 100.0, 1000.0, 0.1, 0.01, 0.001)
# The threshold's kind as the answer line states it (one token each for SmolLM2's tokenizer).
_SHORT_LABEL = {"minimum": "min", "buffer requirement": "req", "limit": "limit"}


@dataclass(frozen=True)
class Rule:
    """One prudential rule: ``figure`` (a datapoint code) must satisfy ``comparison`` against the threshold.

    ``threshold`` is a constant, or ``None`` when the bank-specific requirement is the reported ``threshold_fact``.
    ``numerator``/``denominator`` name the components the figure must agree with (data-quality check).
    """

    code: str
    jurisdiction: str
    description: str
    figure: str
    threshold: float | None
    comparison: str
    legal_reference: str
    effective_from: str
    threshold_label: str = "minimum"
    threshold_fact: str = ""
    numerator: str = ""
    denominator: str = ""


def _r(
    code: str, jur: str, desc: str, figure: str, threshold: float | None, legal: str, since: str, *,
    cmp: str = ">=", label: str = "minimum", fact: str = "", num: str = "", den: str = "",
) -> Rule:
    return Rule(code, jur, desc, figure, threshold, cmp, legal, since, label, fact, num, den)


_EU_RWA = "C 02.00 r0010 c0010"
_US_RWA = "RCOAA223"
RULES: tuple[Rule, ...] = (
    _r("CET1_RATIO", "EU", "CET1 ratio", "C 03.00 r0010 c0010", 0.045, "CRR Art 92(1)(a)", "2014-01-01",
       num="C 01.00 r0020 c0010", den=_EU_RWA),
    _r("T1_RATIO", "EU", "T1 ratio", "C 03.00 r0030 c0010", 0.06, "CRR Art 92(1)(b)", "2014-01-01",
       num="C 01.00 r0015 c0010", den=_EU_RWA),
    _r("TOTAL_CAPITAL_RATIO", "EU", "Total capital ratio", "C 03.00 r0050 c0010", 0.08, "CRR Art 92(1)(c)",
       "2014-01-01", num="C 01.00 r0010 c0010", den=_EU_RWA),
    _r("COMBINED_BUFFER", "EU", "CET1 ratio", "C 03.00 r0010 c0010", None, "CRD Art 141", "2016-01-01",
       label="buffer requirement", fact="C 03.00 r0170 c0010"),
    _r("LEVERAGE", "EU", "Leverage ratio", "C 47.00 r0330 c0010", 0.03, "CRR Art 92(1)(d)", "2021-06-28",
       num="C 47.00 r0310 c0010", den="C 47.00 r0290 c0010"),
    # LCR phase-in under Delegated Regulation 2015/61 Art 38: 60% -> 70% -> 80% -> 100%.
    _r("LCR", "EU", "LCR", "C 76.00 r0030 c0010", 0.60, "CRR Art 412(1)", "2015-10-01",
       num="C 76.00 r0010 c0010", den="C 76.00 r0020 c0010"),
    _r("LCR", "EU", "LCR", "C 76.00 r0030 c0010", 0.70, "CRR Art 412(1)", "2016-01-01",
       num="C 76.00 r0010 c0010", den="C 76.00 r0020 c0010"),
    _r("LCR", "EU", "LCR", "C 76.00 r0030 c0010", 0.80, "CRR Art 412(1)", "2017-01-01",
       num="C 76.00 r0010 c0010", den="C 76.00 r0020 c0010"),
    _r("LCR", "EU", "LCR", "C 76.00 r0030 c0010", 1.00, "CRR Art 412(1)", "2018-01-01",
       num="C 76.00 r0010 c0010", den="C 76.00 r0020 c0010"),
    _r("NSFR", "EU", "NSFR", "C 84.00 r0220 c0040", 1.00, "CRR Art 428b", "2021-06-28"),
    _r("LARGE_EXPOSURE", "EU", "Large exposure % of Tier 1", "C 28.00 r0010 c0350", 0.25, "CRR Art 395(1)",
       "2014-01-01", cmp="<=", label="limit", num="C 28.00 r0010 c0322", den="C 01.00 r0015 c0010"),
    _r("CET1_RATIO", "US", "CET1 ratio", "RCOAP793", 0.045, "12 CFR 324.10(a)(1)(i)", "2015-01-01",
       num="RCOAP859", den=_US_RWA),
    _r("T1_RATIO", "US", "T1 ratio", "RCOA7206", 0.06, "12 CFR 324.10(a)(1)(ii)", "2015-01-01",
       num="RCOA8274", den=_US_RWA),
    _r("TOTAL_CAPITAL_RATIO", "US", "Total capital ratio", "RCOA7205", 0.08, "12 CFR 324.10(a)(1)(iii)",
       "2015-01-01", num="RCOA3792", den=_US_RWA),
    _r("LEVERAGE", "US", "Leverage ratio", "RCOA7204", 0.04, "12 CFR 324.10(a)(1)(iv)", "2015-01-01",
       num="RCOA8274", den="RCOAA224"),
    # Capital conservation buffer phase-in (12 CFR 324.300): 0.625% a year from 2016, fully 2.5% from 2019.
    _r("COMBINED_BUFFER", "US", "Conservation buffer", "RCOAH311", 0.00625, "12 CFR 324.11", "2016-01-01"),
    _r("COMBINED_BUFFER", "US", "Conservation buffer", "RCOAH311", 0.0125, "12 CFR 324.11", "2017-01-01"),
    _r("COMBINED_BUFFER", "US", "Conservation buffer", "RCOAH311", 0.01875, "12 CFR 324.11", "2018-01-01"),
    _r("COMBINED_BUFFER", "US", "Conservation buffer", "RCOAH311", 0.025, "12 CFR 324.11", "2019-01-01"),
    # Community bank leverage ratio framework (12 CFR 324.12) for banks that elect it (Call Report RCOALE74 = 1):
    # the leverage ratio alone, greater than 9 percent, and no risk-based ratio at all. The CARES Act interim rules
    # lowered it to 8 percent from Q2 2020 and 8.5 percent for 2021 (12 CFR 324.303(e)).
    _r("LEVERAGE", CBLR, "CBLR leverage ratio", "RCOA7204", 0.09, "12 CFR 324.12(a)(1)", "2020-01-01", cmp=">",
       num="RCOA8274", den="RCOAA224"),
    _r("LEVERAGE", CBLR, "CBLR leverage ratio", "RCOA7204", 0.08, "12 CFR 324.303(e)", "2020-04-01", cmp=">",
       num="RCOA8274", den="RCOAA224"),
    _r("LEVERAGE", CBLR, "CBLR leverage ratio", "RCOA7204", 0.085, "12 CFR 324.303(e)", "2021-01-01", cmp=">",
       num="RCOA8274", den="RCOAA224"),
    _r("LEVERAGE", CBLR, "CBLR leverage ratio", "RCOA7204", 0.09, "12 CFR 324.12(a)(1)", "2022-01-01", cmp=">",
       num="RCOA8274", den="RCOAA224"),
)

PCA_REFERENCE = "12 CFR 324.403"
PCA_CATEGORIES: tuple[str, ...] = (
    "well_capitalized",
    "adequately_capitalized",
    "undercapitalized",
    "significantly_undercapitalized",
    "critically_undercapitalized",
)


@dataclass(frozen=True)
class Check:
    """One line of the analysis: a rule (or a data-quality finding) with the reported figure and its outcome.

    ``margin`` is the headroom in ratio units (positive = compliant side; 0.0001 = 1 bp); ``None`` when unknown.
    """

    code: str
    description: str
    figure: float | None
    threshold: float | None
    outcome: str
    margin: float | None
    severity: str
    legal_reference: str = ""
    detail: str = ""

    def line(self) -> str:
        """The check line of the answer format, without the leading ``- ``: ``CODE detail: OUTCOME``.

        ``detail`` is the compact form the model writes (``4.30% vs 4.50% min``): the figure once, the threshold,
        nothing the report does not state; ``description`` is the readable sentence shown to people.
        """
        return f"{self.code} {self.detail or self.description}: {self.outcome}"


@dataclass(frozen=True)
class RuleResult:
    """All checks of one report, the violation codes (fixed order) and, for US banks, the PCA category."""

    checks: tuple[Check, ...]
    violations: tuple[str, ...]
    pca_category: str | None

    @property
    def case_kind(self) -> str:
        """Classify the report for the class mix: data quality first, then breaches, then near misses."""
        if DATA_QUALITY in self.violations:
            return "data_quality"
        if len(self.violations) >= 2:
            return "multi_breach"
        if len(self.violations) == 1:
            return "single_breach"
        near = any(c.margin is not None and c.margin < NEAR_MISS_MARGIN for c in self.checks)
        return "near_miss" if near else "compliant"


def regime(parsed: ParsedReport) -> str:
    """The rule set a filing is assessed under: its jurisdiction, or ``US-CBLR`` for a community bank leverage
    ratio elector."""
    return CBLR if parsed.jurisdiction == "US" and parsed.framework == "CBLR" else parsed.jurisdiction


def rendered_regime(report_text: str) -> tuple[str, str]:
    """``(jurisdiction, rule set)`` read back from the header of ``regulator.xbrl.render_report``
    (``US FFIEC 051 CBLR 2026-06-30 ...``): what ``regime`` says of the parsed filing, for a dataset row that keeps
    the report text and not the filing."""
    words = report_text.split("\n", 1)[0].split()
    dated = next((i for i, w in enumerate(words) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", w)), len(words))
    jurisdiction = words[0] if words else ""
    return jurisdiction, CBLR if jurisdiction == "US" and "CBLR" in words[1:dated] else jurisdiction


def rendered_entity(report_text: str) -> str:
    """The entity name read back from the header of ``regulator.xbrl.render_report`` (``... 2026-06-30 First
    Bank (USD m)``): the bank a dataset row's directive is addressed to."""
    header = report_text.split("\n", 1)[0]
    dated = re.search(r" \d{4}-\d{2}-\d{2} ", header)
    named = header[dated.end():] if dated else header
    return named.rsplit(" (", 1)[0] if named.endswith(" m)") else named


def applicable_rules(jurisdiction: str, report_date: str) -> list[Rule]:
    """The rules in force at ``report_date`` for ``jurisdiction`` (a ``regime``): per code, the latest version not
    after the date."""
    current: dict[str, Rule] = {}
    for rule in RULES:
        if rule.jurisdiction == jurisdiction and rule.effective_from <= report_date:
            if rule.code not in current or rule.effective_from > current[rule.code].effective_from:
                current[rule.code] = rule
    return sorted(current.values(), key=lambda r: RULE_CODES.index(r.code))


def meets(value: float, threshold: float, comparison: str) -> bool:
    """True when ``value`` satisfies the rule; exactly at the threshold satisfies ``>=`` and ``<=``, not ``>``
    (the community bank leverage ratio must be *greater than* 9 percent)."""
    diff = round(value - threshold, 10)  # reported decimals like 0.045 must compare equal to the constant
    if comparison == ">":
        return diff > 0
    return diff >= 0 if comparison == ">=" else diff <= 0


def evaluate_rules(parsed: ParsedReport) -> RuleResult:
    """Evaluate every rule in force on the reported figures (``NOT_ASSESSED`` where the filing cannot give a figure
    or threshold) and the data-quality checks of the assessable ones: the checks in answer order, a missing required
    fact's finding first, then the rules, then a ratio that disagrees with its components; return the result."""
    rules = assessable_rules(parsed)
    # A required fact the filing leaves out is found first, right after the report whose last line names it
    # (``render_report``'s gap line): a small model copies that finding where it cannot recall it after every rule's
    # line (bench/NOTES.md, lever 49); a ratio at odds with its components is found after the rules.
    checks = [*_missing_fact_checks(rules, parsed),
              *(binding_check(rule, parsed) for rule in applicable_rules(regime(parsed), parsed.report_date)),
              *_disagreement_checks(rules, parsed)]
    codes = {c.code for c in checks if c.outcome == BREACH}
    if any(c.outcome == DATA_QUALITY for c in checks):
        codes.add(DATA_QUALITY)
    violations = tuple(code for code in RULE_CODES if code in codes)
    pca = pca_category(binding_facts(parsed)) if parsed.jurisdiction == "US" else None
    if regime(parsed) == CBLR:  # an elector above the CBLR requirement is deemed well capitalized (324.12(a)(2))
        leverage = next((c for c in checks if c.code == "LEVERAGE"), None)
        pca = "well_capitalized" if leverage is not None and leverage.outcome == OK else None
    return RuleResult(tuple(checks), violations, pca)


def assessable_rules(parsed: ParsedReport) -> list[Rule]:
    """The rules in force on the report date whose figures this filing can give (see ``_readable``)."""
    return [rule for rule in applicable_rules(regime(parsed), parsed.report_date) if _readable(rule, parsed)]


def _readable(rule: Rule, parsed: ParsedReport) -> bool:
    """False when the filing cannot give the rule's figure or threshold whatever the bank reported (its template
    is not in this module-wise submission, or the DPM mapping lacks the cell): the rule is not assessed."""
    return not any(code in parsed.unreadable for code in (rule.figure, rule.threshold_fact) if code)


def binding_facts(parsed: ParsedReport) -> dict[str, float | None]:
    """The facts with each ratio an FFIEC 031 advanced-approaches bank files twice (RCFA standardized, RCFW advanced)
    at the lower of the two: the ratio that binds, since the bank must meet every minimum under both."""
    facts = dict(parsed.facts)
    for code, advanced in parsed.advanced.items():
        if advanced is not None and (facts.get(code) is None or advanced < facts[code]):
            facts[code] = advanced
    return facts


def binding_check(rule: Rule, parsed: ParsedReport) -> Check:
    """``check_rule``, for a ratio filed under both approaches (``ParsedReport.advanced``) checked under each: a
    breach under either is the finding, else the lower margin; its description names the approach."""
    standard = check_rule(rule, parsed)
    advanced_value = parsed.advanced.get(rule.figure)
    if advanced_value is None or standard.outcome == NOT_ASSESSED:
        return standard
    advanced = check_rule(rule, replace(parsed, facts={**parsed.facts, rule.figure: advanced_value}))
    both = [replace(standard, description=f"{standard.description} (standardized approach, RCFA)"),
            replace(advanced, description=f"{advanced.description} (advanced approaches, RCFW)")]
    breaches = [c for c in both if c.outcome == BREACH]
    if breaches:
        return min(breaches, key=lambda c: c.margin if c.margin is not None else 0.0)
    if standard.margin is None:  # the standardized figure is missing: that data-quality line stands
        return both[0]
    return min(both, key=lambda c: c.margin if c.margin is not None else math.inf)


def check_rule(rule: Rule, parsed: ParsedReport) -> Check:
    """The check line of one rule on one filing: OK, BREACH, DATA_QUALITY when its figure or threshold is missing,
    or NOT_ASSESSED when the filing cannot give them (``_readable``; the line quotes why, e.g. ``not mapped``).
    Also used by ``regulator.drills`` so that drill lines are written exactly like report answers."""
    facts = parsed.facts
    figure = facts.get(rule.figure)
    threshold = facts.get(rule.threshold_fact) if rule.threshold_fact else rule.threshold
    why = parsed.unreadable
    fig_text = render_value(rule.figure, figure, rule.figure in facts, why.get(rule.figure, "not reported"))
    if rule.threshold_fact:
        thr_text = render_value(rule.threshold_fact, threshold, rule.threshold_fact in facts,
                                why.get(rule.threshold_fact, "not reported"))
    else:
        thr_text = render_value(rule.figure, threshold, True)
    # The legal reference is cited in the directive, not on every check line: it is constant per rule, and on a
    # CPU it would cost ~20% of every answer's generated tokens.
    text = f"{rule.description} {fig_text} vs {thr_text} {rule.threshold_label}"
    short_thr = thr_text if rule.threshold_fact or threshold is None else format_threshold(threshold)
    detail = f"{fig_text} vs {short_thr} {_SHORT_LABEL.get(rule.threshold_label, rule.threshold_label)}"
    if not _readable(rule, parsed):
        return Check(rule.code, text, None, None, NOT_ASSESSED, None, "none", rule.legal_reference, detail)
    if figure is None or threshold is None:
        return Check(rule.code, text, figure, threshold, DATA_QUALITY, None, "medium", rule.legal_reference, detail)
    margin = round(figure - threshold if rule.comparison in (">=", ">") else threshold - figure, 10)
    if meets(figure, threshold, rule.comparison):
        severity = "watch" if margin < NEAR_MISS_MARGIN else "none"
        return Check(rule.code, text, figure, threshold, OK, margin, severity, rule.legal_reference, detail)
    severity = "high" if margin >= -0.01 else "critical"
    return Check(rule.code, text, figure, threshold, BREACH, margin, severity, rule.legal_reference, detail)


def _missing_fact_checks(rules: list[Rule], parsed: ParsedReport) -> list[Check]:
    """A data-quality finding for each numerator or denominator of an assessable rule the filing leaves out or
    files empty (``nil``)."""
    facts = parsed.facts
    out: list[Check] = []
    missing: list[str] = []
    for rule in rules:
        for code in (rule.numerator, rule.denominator):
            if code and facts.get(code) is None and code not in missing and code not in parsed.unreadable:
                missing.append(code)
    for code in missing:
        state = "nil" if code in facts else "not reported"
        text = f"Required fact {BY_CODE[code].label} ({code}) {state}"
        detail = f"{BY_CODE[code].label} {state}"
        out.append(Check(DATA_QUALITY, text, None, None, DATA_QUALITY, None, "medium", detail=detail))
    return out


def _disagreement_checks(rules: list[Rule], parsed: ParsedReport) -> list[Check]:
    """A data-quality finding for each reported ratio that disagrees with its components."""
    facts = parsed.facts
    out: list[Check] = []
    for rule in rules:
        finding = _ratio_disagreement(rule, facts)
        if finding:
            # The answer line quotes only what the report states: recomputing a ratio is the rule engine's job.
            detail = f"{rule.description} {render_value(rule.figure, facts.get(rule.figure), True)} " \
                     "disagrees with its components"
            out.append(Check(DATA_QUALITY, finding, facts.get(rule.figure), None, DATA_QUALITY, None, "medium",
                             detail=detail))
    return out


def _ratio_disagreement(rule: Rule, facts: dict[str, float | None]) -> str:
    """Describe a reported ratio that disagrees with numerator/denominator, or return ``""``."""
    if not (rule.numerator and rule.denominator):
        return ""
    reported, num, den = facts.get(rule.figure), facts.get(rule.numerator), facts.get(rule.denominator)
    if reported is None or num is None or den is None:
        return ""
    label = rule.description
    if den == 0:
        return f"{label} denominator {BY_CODE[rule.denominator].label} is zero"
    computed = num / den
    if not math.isfinite(computed):  # a denominator too small to divide by (the parser drops such amounts)
        return f"{label} components {num:.6g} / {den:.6g} give no finite ratio"
    if abs(reported - computed) <= RATIO_TOLERANCE_ABS + RATIO_TOLERANCE_REL * abs(computed):
        return ""
    text = f"Reported {label} {render_value(rule.figure, reported, True)} vs components " \
           f"{render_value(rule.figure, round(computed, 4), True)}"
    if computed:
        for factor in _SCALE_FACTORS:
            if abs(reported / computed / factor - 1) < 0.02:
                return f"{text} (scale error x{factor:g})"
    return text


def pca_category(facts: dict[str, float | None]) -> str | None:
    """US prompt-corrective-action category (12 CFR 324.403) from the reported ratios; ``None`` if any is missing.

    Tangible equity is approximated by Tier 1 capital (RCOA8274) over total assets (RCON2170).
    """
    needed = ("RCOA7205", "RCOA7206", "RCOAP793", "RCOA7204", "RCOA8274", "RCON2170")
    if any(facts.get(c) is None for c in needed) or not facts["RCON2170"]:
        return None
    if not math.isfinite(facts["RCOA8274"] / facts["RCON2170"]):
        return None
    total, t1, cet1, lev = (facts[c] for c in needed[:4])
    if meets(0.02, facts["RCOA8274"] / facts["RCON2170"], ">="):
        return "critically_undercapitalized"
    if not (meets(total, 0.06, ">=") and meets(t1, 0.04, ">=") and meets(cet1, 0.03, ">=") and meets(lev, 0.03, ">=")):
        return "significantly_undercapitalized"
    if not (meets(total, 0.08, ">=") and meets(t1, 0.06, ">=") and meets(cet1, 0.045, ">=") and meets(lev, 0.04, ">=")):
        return "undercapitalized"
    if meets(total, 0.10, ">=") and meets(t1, 0.08, ">=") and meets(cet1, 0.065, ">=") and meets(lev, 0.05, ">="):
        return "well_capitalized"
    return "adequately_capitalized"
