"""The parser on real published artefacts (tests/fixtures/README.md says where each came from)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_corep_35_instance_is_read_through_its_own_release(tmp_path: Path) -> None:
    """Taxonomy 3.x names the same cells with other metrics and dimensions (mi/pi metrics, BAS/MCY/OFS members under
    .../dict/dim): an instance written with the DPM's 3.5 identities, under arbitrary prefixes, reads to the same
    facts. (Written here from regulator/dpm_cells.json: no real 3.x sample is in the fixtures.)"""
    from regulator.taxonomy import DPM_RELEASES, EBA_BASE, NS

    figures = {"C 47.00 r0290 c0010": 240e9, "C 47.00 r0310 c0010": 13.41e9, "C 47.00 r0330 c0010": 0.0559,
               "C 01.00 r0015 c0010": 13.41e9}
    contexts, facts, domains = [], [], set()
    for i, (code, value) in enumerate(figures.items()):
        entry = DPM_RELEASES["3.5"][code]
        members = ""
        for dim, member in entry["dims"]:
            domain, _, local = member.partition(":")
            domains.add(domain.removeprefix("eba_"))
            members += (f'<xbrldi:explicitMember dimension="d:{dim.rpartition(":")[2]}">'
                        f'm{domain.removeprefix("eba_")}:{local}</xbrldi:explicitMember>')
        contexts.append(f'<xbrli:context id="c{i}"><xbrli:entity><xbrli:identifier scheme="https://eurofiling.info/eu/'
                        f'rs">LEI35.CON</xbrli:identifier></xbrli:entity><xbrli:period><xbrli:instant>2023-12-31'
                        f'</xbrli:instant></xbrli:period><xbrli:scenario>{members}</xbrli:scenario></xbrli:context>')
        decimals = "4" if value < 1 else "-3"
        facts.append(f'<met:{entry["metric"]} contextRef="c{i}" unitRef="{"uP" if value < 1 else "uE"}" '
                     f'decimals="{decimals}">{value:.4f}</met:{entry["metric"]}>')
    xmlns = " ".join(f'xmlns:m{d}="{EBA_BASE}dom/{d}"' for d in sorted(domains))
    xml = (f'<xbrli:xbrl xmlns:xbrli="{NS["xbrli"]}" xmlns:link="{NS["link"]}" xmlns:xlink="{NS["xlink"]}" '
           f'xmlns:xbrldi="{NS["xbrldi"]}" xmlns:iso4217="{NS["iso4217"]}" xmlns:met="{NS["eba_met"]}" '
           f'xmlns:d="{NS["eba_dim"]}" {xmlns}><link:schemaRef xlink:type="simple" xlink:href="http://www.eba.europa'
           f'.eu/eu/fr/xbrl/crr/fws/corep/3.5/mod/corep_lr_con.xsd"/>'
           '<xbrli:unit id="uE"><xbrli:measure>iso4217:EUR</xbrli:measure></xbrli:unit>'
           '<xbrli:unit id="uP"><xbrli:measure>xbrli:pure</xbrli:measure></xbrli:unit>'
           + "".join(contexts) + "".join(facts) + "</xbrli:xbrl>")
    path = tmp_path / "corep35.xbrl"
    path.write_text(xml)
    parsed = parse_xbrl_file(path)
    assert parsed.release == "3.5" and parsed.facts == figures


XBRIDGE_LCR_CSV = REAL / "xbridge_eba32_corep_lcr_DUMMYLEI_2023-12-31_xbrl-csv.zip"


def test_an_xbrl_csv_package_of_the_eba_lcr_sample_is_read() -> None:
    """The EBA's COREP LCR sample (taxonomy 3.2, ITS 2020, module corep_lcr_da) as an xBRL-CSV report package, made
    by the xbridge converter (tests/fixtures/README.md): C 76.00 read by DPM datapoint from c_76.00.a.csv (the
    per-currency c_76.00.w rows carry a CUS key and are not the rules' cell), assessed, and the EBA's dummy figures
    found inconsistent (68.41 reported against a buffer / outflows of 19.25%)."""
    from regulator.packages import read_zip
    from regulator.rules import evaluate_rules

    (parsed,) = read_zip(XBRIDGE_LCR_CSV)
    assert (parsed.release, parsed.entity_id, parsed.report_date, parsed.currency) == (
        "3.x", "DUMMYLEI123456789012", "2023-12-31", "EUR")
    assert parsed.facts == {"C 76.00 r0010 c0010": 1340000.0, "C 76.00 r0020 c0010": 6961000.0,
                            "C 76.00 r0030 c0010": 68.41}  # dp134663, dp134665, dp143076 as filed
    assert parsed.unreadable["C 01.00 r0020 c0010"] == "not filed"
    # 68.41 is no plausible decimal LCR (6841%); its components are filed, so it is read as filed and the
    # data-quality check (19.25% from the components) judges it, with a warning that sends the filing to review
    (warning,) = parsed.warnings
    assert warning.startswith("C 76.00 r0030 c0010 = 68.41 is not plausible as a decimal ratio (6841%)")
    result = evaluate_rules(parsed)
    assessed = [(c.code, c.outcome) for c in result.checks if c.outcome != "NOT_ASSESSED"]
    assert assessed == [("LCR", "OK"), ("DATA_QUALITY", "DATA_QUALITY")]
    # every other rule in force has its line, saying why it is not assessed: the module files C 76.00 alone
    assert {c.code: c.detail for c in result.checks if c.outcome == "NOT_ASSESSED"}["CET1_RATIO"] == (
        "not filed vs 4.5% min")
    [analysed] = analyze_filings([XBRIDGE_LCR_CSV], model_dir=None)
    assert analysed.status == "needs_review" and analysed.rule_violations == ["DATA_QUALITY"]


def test_generated_module_wise_filings_read_like_the_eba_module_samples(tmp_path: Path) -> None:
    """eu_module_fraction: generated COREP submissions of one module (the leverage module as the EBA 4.0 XML sample,
    the LCR module as the xbridge xBRL-CSV sample) leave the same datapoints 'not filed' as the real samples, and
    their answers say so, one NOT_ASSESSED line per rule of the modules not filed."""
    from regulator.generator import generate_dataset
    from regulator.packages import read_filing_file, read_zip
    from regulator.rules import NOT_ASSESSED, evaluate_rules

    df = generate_dataset(48, seed=3, out_dir=tmp_path, eu_fraction=1.0, eu_csv_fraction=0.5, eu_module_fraction=1.0)
    not_filed = {name: {c for c, why in p.unreadable.items() if why == "not filed"}
                 for name, p in (("corep_lr", parse_xbrl_file(EBA_LR_40)), ("corep_lcr_da", next(read_zip(
                     XBRIDGE_LCR_CSV))))}
    seen = set()
    for row in df.itertuples():
        path = Path(row.source_file)
        (parsed,) = read_filing_file(path)
        module = next(m for m in ("corep_of", "corep_lr", "corep_lcr_da", "corep_nsfr", "corep_le") if m in path.name)
        assert parsed.unreadable, row.source_file  # a module never carries every template
        if module in not_filed:
            seen.add((module, path.suffix))
            assert {c for c, why in parsed.unreadable.items() if why == "not filed"} == not_filed[module]
        checks = evaluate_rules(parsed).checks
        assert any(c.outcome == NOT_ASSESSED and c.detail.startswith("not filed") for c in checks)
        assert "not filed vs" in row.target and "NOT_ASSESSED" in row.target
    assert {m for m, _ in seen} == {"corep_lr", "corep_lcr_da"} and {s for _, s in seen} == {".xml", ".zip"}


FFIEC = Path(__file__).resolve().parent / "fixtures" / "real" / "ffiec"


@pytest.mark.parametrize(("rssd", "form", "cblr"), [
    ("451965", "031", False), ("480228", "031", False), ("852218", "031", False), ("2758613", "041", False),
    ("493741", "051", True), ("946274", "051", True)])
def test_real_ffiec_call_report_extracts_are_read(rssd: str, form: str, cblr: bool) -> None:
    """Trimmed extracts of real 2026-06-30 Call Reports (tests/fixtures/README.md): identity, form, date, CBLR
    election and total assets (an FFIEC 031 files them consolidated, RCFD2170) are read; the items the extracts
    leave out (RCOAH311, RCOAA224) are named, nothing is guessed."""
    from regulator.analyze import analyze_report

    parsed = parse_xbrl_file(FFIEC / f"bank-{rssd}-2026-06-30.xml")
    assert (parsed.entity_id, parsed.form, parsed.report_date) == (rssd, f"FFIEC {form}", "2026-06-30")
    assert (parsed.framework == "CBLR") is cblr
    assert parsed.facts.get("RCON2170"), "total assets"
    result = analyze_report(parsed)
    assert result.status == "cannot_assess" and "RCOAA224" in " ".join(result.reasons)
    assert result.pca_category == "well_capitalized"
