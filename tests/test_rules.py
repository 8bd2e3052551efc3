"""Rule engine: every threshold exactly at, 1 bp below and 1 bp above; dated thresholds; data quality; PCA."""

from __future__ import annotations

from dataclasses import replace

import pytest

from regulator.rules import BREACH, DATA_QUALITY, OK, RULE_CODES, applicable_rules, evaluate_rules, pca_category
from regulator.xbrl import ParsedReport
from tests.test_xbrl import EU_FIGURES, US_FIGURES

BP = 0.0001


def _report(jurisdiction: str, facts: dict, report_date: str = "2024-12-31") -> ParsedReport:
    return ParsedReport(
        source="test", jurisdiction=jurisdiction, form="COREP" if jurisdiction == "EU" else "FFIEC 041",
        entity_id="X", entity_name="Test Bank", report_date=report_date,
        currency="EUR" if jurisdiction == "EU" else "USD", facts=dict(facts),
    )


def _outcome(report: ParsedReport, code: str) -> str:
    return next(c.outcome for c in evaluate_rules(report).checks if c.code == code)


BASE = {"EU": EU_FIGURES, "US": US_FIGURES}
THRESHOLD_CASES = [
    (rule.jurisdiction, rule.code, rule.figure, rule.threshold, rule.comparison)
    for rule in applicable_rules("EU", "2024-12-31") + applicable_rules("US", "2024-12-31")
    if rule.threshold is not None
]


def test_healthy_baselines_are_clean() -> None:
    for jur, facts in BASE.items():
        result = evaluate_rules(_report(jur, facts))
        assert result.violations == ()
        assert all(c.outcome == OK for c in result.checks)
    assert {c for _, c, *_ in THRESHOLD_CASES} == set(RULE_CODES) - {"DATA_QUALITY"}


@pytest.mark.parametrize(("jur", "code", "figure", "threshold", "cmp"), THRESHOLD_CASES)
@pytest.mark.parametrize("offset_bp", [0, -1, 1])
def test_threshold_boundaries(jur: str, code: str, figure: str, threshold: float, cmp: str, offset_bp: int) -> None:
    value = round(threshold + offset_bp * BP, 6)
    outcome = _outcome(_report(jur, {**BASE[jur], figure: value}), code)
    passes = offset_bp >= 0 if cmp == ">=" else offset_bp <= 0
    assert outcome == (OK if passes else BREACH), (code, value)


@pytest.mark.parametrize(("offset_bp", "expected"), [(0, OK), (-1, BREACH), (1, OK)])
def test_eu_combined_buffer_uses_reported_requirement(offset_bp: int, expected: str) -> None:
    facts = {**EU_FIGURES, "C 03.00 r0170 c0010": 0.0875, "C 03.00 r0010 c0010": round(0.0875 + offset_bp * BP, 6)}
    assert _outcome(_report("EU", facts), "COMBINED_BUFFER") == expected


def test_check_lines_quote_reported_figures() -> None:
    facts = {**EU_FIGURES, "C 03.00 r0010 c0010": 0.0351}
    lines = [c.line() for c in evaluate_rules(_report("EU", facts)).checks]
    # The answer line states the figure once and the threshold (a constant as briefly as it is exact, a
    # bank-specific requirement as the report states it); the readable sentence stays in ``description``.
    assert "CET1_RATIO 3.51% vs 4.5% min: BREACH" in lines
    assert "COMBINED_BUFFER 3.51% vs 9.00% req: BREACH" in lines
    checks = {c.code: c for c in evaluate_rules(_report("EU", facts)).checks}
    assert checks["CET1_RATIO"].description == "CET1 ratio 3.51% vs 4.50% minimum"
    checks = {c.code: c for c in evaluate_rules(_report("EU", facts)).checks}
    assert checks["CET1_RATIO"].legal_reference == "CRR Art 92(1)(a)"  # cited in the directive instead


def test_dated_thresholds_phase_in() -> None:
    lcr_2016 = {r.code: r for r in applicable_rules("EU", "2016-06-30")}
    assert lcr_2016["LCR"].threshold == 0.70 and "NSFR" not in lcr_2016 and "LEVERAGE" not in lcr_2016
    us_2017 = {r.code: r for r in applicable_rules("US", "2017-06-30")}
    assert us_2017["COMBINED_BUFFER"].threshold == 0.0125
    assert {r.code: r for r in applicable_rules("US", "2019-01-01")}["COMBINED_BUFFER"].threshold == 0.025


def test_violations_in_fixed_order_and_margin_severity() -> None:
    facts = {**US_FIGURES, "RCOA7204": 0.0399, "RCOAH311": 0.02, "RCOAP793": 0.044}
    result = evaluate_rules(_report("US", facts))
    assert result.violations[:3] == ("CET1_RATIO", "COMBINED_BUFFER", "LEVERAGE")
    lev = next(c for c in result.checks if c.code == "LEVERAGE")
    assert lev.margin == pytest.approx(-BP) and lev.severity == "high"


def test_ratio_disagreement_beyond_tolerance_is_data_quality() -> None:
    within = {**US_FIGURES, "RCOAP793": 0.1165}  # components give 11.60%: 5 bp is rounding, not an error
    assert evaluate_rules(_report("US", within)).violations == ()
    off = {**US_FIGURES, "RCOAP793": 0.1260}
    result = evaluate_rules(_report("US", off))
    assert result.violations == ("DATA_QUALITY",)
    dq = [c for c in result.checks if c.code == DATA_QUALITY]
    assert dq[0].description == "Reported CET1 ratio 12.60% vs components 11.60%"


def test_scale_error_is_named() -> None:
    result = evaluate_rules(_report("EU", {**EU_FIGURES, "C 03.00 r0010 c0010": 1.282}))
    assert any("scale error x10" in c.description for c in result.checks if c.code == DATA_QUALITY)
    amounts = evaluate_rules(_report("US", {**US_FIGURES, "RCOAP859": 46_400.0}))
    assert any("scale error x1000" in c.description for c in amounts.checks)


def test_missing_and_nil_facts_are_data_quality() -> None:
    facts = {k: v for k, v in US_FIGURES.items() if k != "RCOAA223"}
    missing = evaluate_rules(_report("US", facts))
    assert "DATA_QUALITY" in missing.violations
    assert any(c.description == "Required fact RWA (RCOAA223) not reported" for c in missing.checks)
    nil_ratio = evaluate_rules(_report("EU", {**EU_FIGURES, "C 84.00 r0220 c0040": None}))
    nsfr = next(c for c in nil_ratio.checks if c.code == "NSFR")
    assert nsfr.outcome == DATA_QUALITY and "NSFR nil vs 100.00% minimum" in nsfr.description


@pytest.mark.parametrize(
    ("changes", "category"),
    [
        ({}, "well_capitalized"),
        ({"RCOA7205": 0.10, "RCOA7206": 0.08, "RCOAP793": 0.065, "RCOA7204": 0.05}, "well_capitalized"),
        ({"RCOA7205": 0.10, "RCOA7206": 0.08, "RCOAP793": 0.065, "RCOA7204": 0.0499}, "adequately_capitalized"),
        ({"RCOA7205": 0.0799}, "undercapitalized"),
        ({"RCOA7205": 0.0599}, "significantly_undercapitalized"),
        ({"RCOA7205": 0.06}, "undercapitalized"),
        ({"RCOA8274": 0.02 * 980_000_000.0}, "critically_undercapitalized"),
    ],
)
def test_pca_categories(changes: dict, category: str) -> None:
    assert pca_category({**US_FIGURES, **changes}) == category


def test_pca_only_for_us_and_case_kinds() -> None:
    assert evaluate_rules(_report("EU", EU_FIGURES)).pca_category is None
    assert evaluate_rules(_report("EU", EU_FIGURES)).case_kind == "compliant"
    near = {**EU_FIGURES, "C 84.00 r0220 c0040": 1.0049}
    assert evaluate_rules(_report("EU", near)).case_kind == "near_miss"
    one = {**EU_FIGURES, "C 84.00 r0220 c0040": 0.9999}
    assert evaluate_rules(_report("EU", one)).case_kind == "single_breach"
    two = {**one, "C 76.00 r0030 c0010": 0.9999, "C 76.00 r0010 c0010": 19_998_000_000.0}
    assert evaluate_rules(_report("EU", two)).case_kind == "multi_breach"
    assert evaluate_rules(replace(_report("US", US_FIGURES), facts={**US_FIGURES, "RCOAP793": 0.5})).case_kind == (
        "data_quality")


def test_a_rule_the_filing_cannot_give_is_stated_not_assessed_never_a_violation() -> None:
    """A cell the filing's DPM mapping lacks (``not mapped``) or a template it did not file: the rule in force keeps
    its line, quoting why, so every answer names every rule in force; the verdict and the case kind ignore it."""
    le_cells = ("C 28.00 r0010 c0350", "C 28.00 r0010 c0322")
    facts = {code: value for code, value in EU_FIGURES.items() if code not in le_cells}
    report = replace(_report("EU", facts), unreadable=dict.fromkeys(le_cells, "not mapped"))
    result = evaluate_rules(report)
    line = next(c for c in result.checks if c.code == "LARGE_EXPOSURE")
    assert (line.line(), line.margin) == ("LARGE_EXPOSURE not mapped vs 25% limit: NOT_ASSESSED", None)
    assert [c.code for c in result.checks][:8] == [r.code for r in applicable_rules("EU", "2024-12-31")]
    assert result.violations == () and result.case_kind == "compliant"
    assert all(c.code != DATA_QUALITY for c in result.checks)  # not a data-quality finding either


def test_a_directive_can_be_rendered_for_chosen_findings() -> None:
    """render_directive's ``codes`` (what bench/probe_ceiling scores): the report's own findings by default, else the
    directive a model would write had it found those, in the same house style: each finding's measure, then the
    closing sentence."""
    from regulator.render import render_directive

    report = _report("EU", EU_FIGURES)
    result = evaluate_rules(report)
    none = render_directive(report, result, "formal_notice")
    assert none == render_directive(report, result, "formal_notice", codes=[])
    assert none == "The supervisor notifies Test Bank that no measure is required until the next report."
    found = render_directive(report, result, "formal_notice", codes=["CET1_RATIO", "LCR"])
    assert found == ("raise CET1 capital or reduce risk-weighted assets (CRD Art 104(1)(c)) within 45 days. "
                     "restore the liquidity coverage ratio and report liquidity daily (CRR Art 414) within 14 days. "
                     "The supervisor notifies Test Bank that it must take the measures above.")
