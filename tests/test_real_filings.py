"""The parser on real published artefacts (tests/fixtures/README.md says where each came from)."""

from __future__ import annotations

from pathlib import Path

from finetune.analysis import analyze_filings
from regulator.xbrl import parse_xbrl_file, render_report

REAL = Path(__file__).parent / "fixtures" / "real"
EBA_LR_40 = REAL / "eba40_corep_lr_sample_DUMMYLEI_2024-12-31.xbrl"


def test_eba_corep_40_sample_identity_period_and_currency_are_read() -> None:
    parsed = parse_xbrl_file(EBA_LR_40)
    assert (parsed.jurisdiction, parsed.form) == ("EU", "COREP")
    assert parsed.entity_id == "DUMMYLEI123456789012"  # filed as DUMMYLEI123456789012.CON
    assert parsed.report_date == "2024-12-31" and parsed.currency == "EUR"
    assert parsed.warnings == ()


def test_eba_corep_40_sample_is_never_an_error() -> None:
    [result] = analyze_filings([EBA_LR_40], model_dir=None)
    assert result.status != "error" and result.report_date == "2024-12-31"


def test_eba_corep_40_sample_leverage_cells_are_read_through_the_dpm_mapping() -> None:
    """C 47.00 of the sample, read by metric + dimension members through regulator/dpm_cells.json (EBA DPM 2.0):
    the filed values (c165: qTP:qx2007 = fully phased-in; c159: qx2008 = transitional)."""
    parsed = parse_xbrl_file(EBA_LR_40)
    assert parsed.release == "4.0"
    assert parsed.facts["C 47.00 r0330 c0010"] == 0.47  # qIHM on c165: leverage ratio, fully phased-in
    assert parsed.facts["C 47.00 r0290 c0010"] == 67814.0  # qIHN on c165: exposure measure
    assert parsed.facts["C 47.00 r0310 c0010"] == 83744.0  # qABJ on c165: Tier 1, fully phased-in
    assert parsed.facts["C 01.00 r0015 c0010"] == 60919.0  # qABJ on c159: Tier 1, transitional (the same DPM
    # datapoint as C 01.00 r0015, reported here in C 47.00 r0320)


def test_eba_corep_40_sample_is_assessed_as_far_as_it_goes() -> None:
    """Only the leverage module was filed (filing indicators): the leverage rule is assessed (47% >= 3%), the sample's
    inconsistent figures (Tier 1 / exposure = 123% against a reported 47%) are DATA_QUALITY, and the rules of
    templates it did not file are 'not filed', not 'not reported' and not data-quality findings."""
    [result] = analyze_filings([EBA_LR_40], model_dir=None)
    findings = {f["code"]: f for f in result.rule_findings}
    assert findings["LEVERAGE"]["outcome"] == "OK"
    assert result.rule_violations == ["DATA_QUALITY"]
    assert result.status == "needs_review"
    assert any(r.startswith("not assessed: CET1_RATIO") and "C 03.00 r0010 c0010 not filed" in r
               for r in result.reasons), result.reasons
    parsed = parse_xbrl_file(EBA_LR_40)
    assert parsed.unreadable["C 76.00 r0030 c0010"] == "not filed"
    assert "LCR not filed" in render_report(parsed)
