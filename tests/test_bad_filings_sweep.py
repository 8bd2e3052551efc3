"""Bad inputs found by running ``finetune analyze --rules-only`` over odd filings: each gets the right verdict, a
warning that sends it to review, or a refusal naming what is wrong and where.

Every case is a generated filing (``regulator.generator``) or a generated xBRL-CSV package, changed the way the
odd filing was; the rules-only assessment (``regulator.analyze.assess_filings``) is what ``finetune analyze
--rules-only`` prints.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import zipfile
from datetime import date
from pathlib import Path

import pytest

from finetune.cli import main
from foundation.errors import XBRLError
from regulator.analyze import FilingResult, assess_filings
from regulator.generator import eu_instance, us_instance
from regulator.packages import read_filing_file, read_zip, write_report_package
from regulator.rules import RULES, evaluate_rules
from regulator.taxonomy import BY_CODE, EU_SCHEMA_REF, RATIO_COMPONENTS
from regulator.xbrl import ParsedReport, parse_xbrl_bytes
from tests.test_packages import CSV_CELLS
from tests.test_xbrl import EU_FIGURES, LEI, US_FIGURES

RSSD = "123456"
US_DATE = date(2023, 3, 31)
NSFR, BUFFER_REQ, CET1_EU, T1_EU = "C 84.00 r0220 c0040", "C 03.00 r0170 c0010", "C 03.00 r0010 c0010", \
    "C 03.00 r0030 c0010"


def _us(**figures: float | None) -> str:
    return us_instance(RSSD, "Granite State Bank", US_DATE, {**US_FIGURES, **figures}, random.Random(1))


def _eu(**figures: float | None) -> str:
    return eu_instance(LEI, "Nordhafen Bank AG", "2024-12-31", {**EU_FIGURES, **figures})


def _write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _assess(tmp_path: Path, name: str, content: str | bytes) -> FilingResult:
    [result] = assess_filings([_write(tmp_path, name, content)])
    return result


def _finding(result: FilingResult, code: str) -> dict:
    return next(f for f in result.rule_findings if f["code"] == code)


def _has(result: FilingResult, *fragments: str) -> bool:
    return any(all(f in reason for f in fragments) for reason in result.reasons)


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text, old
    return text.replace(old, new, count)


def _package(figures: dict | None = None, *, release: str = "4.0",
             change: dict[str, bytes | str | None] | None = None) -> bytes:
    """A generated xBRL-CSV package of CSV_CELLS (+ ``figures``), with members replaced (by name suffix) or removed
    (None)."""
    data = write_report_package(LEI, "2024-12-31", {**CSV_CELLS, **(figures or {})}, release=release)
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {i.filename: src.read(i) for i in src.infolist()}
    for suffix, body in (change or {}).items():
        name = next(n for n in members if n.endswith(suffix))
        if body is None:
            del members[name]
        else:
            members[name] = body.encode() if isinstance(body, str) else body
    return _zip_bytes(members)


def _zip_bytes(members: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# 1. Ratios filed as percents


def test_an_nsfr_filed_as_a_percent_is_read_as_one_and_breaches(tmp_path: Path) -> None:
    result = _assess(tmp_path, "nsfr.xml", _eu(**{NSFR: 95.0}))
    assert _finding(result, "NSFR")["figure"] == pytest.approx(0.95) and "NSFR" in result.rule_violations
    assert _has(result, NSFR, "95", "read as a percent") and result.status == "needs_review"


def test_a_conservation_buffer_filed_as_a_percent_breaches(tmp_path: Path) -> None:
    result = _assess(tmp_path, "h311.xml", _us(RCOAH311=1.9))
    assert _finding(result, "COMBINED_BUFFER")["outcome"] == "BREACH"
    assert _finding(result, "COMBINED_BUFFER")["figure"] == pytest.approx(0.019)
    assert _has(result, "RCOAH311 = 1.9", "read as a percent") and result.status == "needs_review"


def test_a_buffer_requirement_filed_as_a_percent_is_no_false_breach(tmp_path: Path) -> None:
    result = _assess(tmp_path, "req.xml", _eu(**{BUFFER_REQ: 7.0}))
    assert _finding(result, "COMBINED_BUFFER")["outcome"] == "OK" and result.rule_violations == []
    assert _finding(result, "COMBINED_BUFFER")["threshold"] == pytest.approx(0.07)
    assert _has(result, BUFFER_REQ, "read as a percent") and result.status == "needs_review"


def test_a_ratio_without_components_is_read_by_plausibility(tmp_path: Path) -> None:
    """An xBRL-CSV package of taxonomy 4.0 has no TREA cell, so the capital ratios come without components: 13.41
    is a percent (a decimal 1341% is not plausible); 1.5 could be either and is read as filed, flagged."""
    (parsed,) = read_zip(_write(tmp_path, "pct.zip", _package({T1_EU: 13.41, CET1_EU: 1.5})))
    assert parsed.facts[T1_EU] == pytest.approx(0.1341) and parsed.facts[CET1_EU] == 1.5
    assert any(w.startswith(f"{T1_EU} = 13.41 is not plausible as a decimal ratio") for w in parsed.warnings)
    assert any(w.startswith(f"{CET1_EU} = 1.5: cannot tell a decimal ratio (150%) from a percent (1.5%)")
               for w in parsed.warnings)


def test_a_percent_ratio_filed_with_its_components_is_left_to_the_data_quality_check(tmp_path: Path) -> None:
    result = _assess(tmp_path, "scale.xml", _us(RCOAP793=11.6))
    assert "DATA_QUALITY" in result.rule_violations
    assert any("scale error x100" in f["description"] for f in result.rule_findings)
    assert _has(result, "RCOAP793 = 11.6 is not plausible as a decimal ratio", "components")
    assert result.status == "needs_review"


def test_a_ratio_whose_unit_says_percent_is_divided_by_100(tmp_path: Path) -> None:
    xml = _replace(_eu(**{NSFR: 95.0}), '<xbrli:unit id="uPURE">',
                   '<xbrli:unit id="uPCT"><xbrli:measure>xbrli:percent</xbrli:measure></xbrli:unit>\n'
                   '<xbrli:unit id="uPURE">')
    metric = BY_CODE[NSFR].metric
    xml = re.sub(rf'(<eba_met:{metric} [^>]*unitRef=")uPURE"', r'\1uPCT"', xml)
    parsed = parse_xbrl_bytes(xml.encode(), source="pct-unit.xml")
    assert parsed.facts[NSFR] == pytest.approx(0.95) and parsed.warnings == ()


def test_ratio_components_match_the_rule_table() -> None:
    assert {r.figure: (r.numerator, r.denominator) for r in RULES if r.numerator} == RATIO_COMPONENTS


# ---------------------------------------------------------------------------------------------------------------
# 2. FFIEC 031: RCFA (standardized) and RCFW (advanced approaches)


def _advanced_031(ratios: dict[str, float]) -> str:
    xml = us_instance(RSSD, "Granite State Bank", US_DATE, US_FIGURES, random.Random(1), form="031")
    facts = "".join(f'<cc:RCFW{code[4:]} contextRef="CI_{RSSD}_{US_DATE}" unitRef="PURE" decimals="4">{value:.4f}'
                    f"</cc:RCFW{code[4:]}>\n" for code, value in ratios.items())
    return _replace(xml, "</xbrli:xbrl>", facts + "</xbrli:xbrl>")


def test_an_advanced_approaches_bank_must_meet_both_sets_of_ratios(tmp_path: Path) -> None:
    result = _assess(tmp_path, "031.xml", _advanced_031({"RCOAP793": 0.02, "RCOA7206": 0.03, "RCOA7205": 0.04}))
    for code in ("CET1_RATIO", "T1_RATIO", "TOTAL_CAPITAL_RATIO"):
        finding = _finding(result, code)
        assert finding["outcome"] == "BREACH" and "advanced approaches, RCFW" in finding["description"], finding
    assert result.rule_violations[:3] == ["CET1_RATIO", "T1_RATIO", "TOTAL_CAPITAL_RATIO"]
    assert result.pca_category == "significantly_undercapitalized"  # from the binding (advanced) ratios


def test_the_lower_of_two_compliant_ratios_is_the_one_checked(tmp_path: Path) -> None:
    result = _assess(tmp_path, "031ok.xml", _advanced_031({"RCOA7206": 0.0999, "RCOA7205": 0.20}))
    t1, total = _finding(result, "T1_RATIO"), _finding(result, "TOTAL_CAPITAL_RATIO")
    assert (t1["outcome"], t1["figure"]) == ("OK", pytest.approx(0.0999)) and "advanced approaches" in t1["description"]
    assert total["figure"] == pytest.approx(US_FIGURES["RCOA7205"]) and "standardized approach" in total["description"]
    assert result.status == "ok" and result.rule_violations == []


# ---------------------------------------------------------------------------------------------------------------
# 3. Entities


def test_two_entities_in_one_instance_are_refused_naming_both(tmp_path: Path) -> None:
    xml = _us()
    other = re.search(r'<xbrli:context id="CI_[^"]+">.*?</xbrli:context>', xml, re.S).group(0)
    other = other.replace(f"CI_{RSSD}_", "CI_999999_").replace(f">{RSSD}<", ">999999<")
    xml = _replace(xml, '<xbrli:unit id="USD">', other + '\n<xbrli:unit id="USD">')
    xml = _replace(xml, "</xbrli:xbrl>", f'<cc:RCOAP793 contextRef="CI_999999_{US_DATE}" unitRef="PURE" '
                   'decimals="4">0.0100</cc:RCOAP793>\n</xbrli:xbrl>')
    result = _assess(tmp_path, "two.xml", xml)
    assert result.status == "error" and "'123456'" in result.reasons[0] and "'999999'" in result.reasons[0]
    assert "2 entities in one instance" in result.reasons[0] and "two.xml" in result.reasons[0]


def test_an_identifier_that_is_no_rssd_id_is_named(tmp_path: Path) -> None:
    xml = _us().replace(f">{RSSD}</xbrli:identifier>", ">0</xbrli:identifier>")
    result = _assess(tmp_path, "zero.xml", xml)
    assert result.entity_id == "0" and result.status == "needs_review"
    assert _has(result, "entity identifier '0' is not an FFIEC RSSD ID")


# ---------------------------------------------------------------------------------------------------------------
# 4. Report date


def test_an_empty_stray_context_does_not_decide_the_report_date(tmp_path: Path) -> None:
    stray = ('<xbrli:context id="stray"><xbrli:entity><xbrli:identifier scheme="http://www.ffiec.gov/cdr">123456'
             "</xbrli:identifier></xbrli:entity><xbrli:period><xbrli:instant>2030-12-31</xbrli:instant>"
             "</xbrli:period></xbrli:context>\n")
    result = _assess(tmp_path, "stray.xml", _replace(_us(), '<xbrli:unit id="USD">', stray + '<xbrli:unit id="USD">'))
    assert result.report_date == "2023-03-31" and result.status == "ok", result.reasons


def test_a_report_date_after_today_goes_to_review(tmp_path: Path) -> None:
    xml = us_instance(RSSD, "Granite State Bank", date(2099, 3, 31), US_FIGURES, random.Random(1))
    result = _assess(tmp_path, "future.xml", xml)
    assert result.report_date == "2099-03-31" and result.status == "needs_review"
    assert _has(result, "report date 2099-03-31 is after today", "not a plausible report date")


# ---------------------------------------------------------------------------------------------------------------
# 5. Overflow and denormals


def _strict(constant: str) -> None:
    raise AssertionError(f"non-JSON constant {constant}")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('decimals="-3">48600000</cc:RCOA8274>', 'decimals="-3" scale="30">48600000</cc:RCOA8274>',
     "RCOA8274 amount 4.86e+37 is not plausible"),
    ('decimals="-3">48600000</cc:RCOA8274>', 'decimals="-3" scale="30">1e300</cc:RCOA8274>',
     "RCOA8274 is non-finite after scale '30'"),
    ('decimals="-3">400000000</cc:RCOAA223>', 'decimals="-3">1e-320</cc:RCOAA223>',
     "RCOAA223 amount 9.99989e-321 is not plausible"),
    ('decimals="-3">400000000</cc:RCOAA223>', 'decimals="-3" scale="-30">400000000</cc:RCOAA223>',
     "RCOAA223 amount 4e-22 is not plausible"),
])
def test_overflowing_scales_and_denormal_amounts_are_not_figures(tmp_path: Path, old: str, new: str,
                                                                 expected: str) -> None:
    result = _assess(tmp_path, "big.xml", _replace(_us(), old, new))
    assert result.status == "cannot_assess" and _has(result, expected), result.reasons
    json.loads(json.dumps(result.to_dict(), allow_nan=False), parse_constant=_strict)


def test_the_rules_keep_ratios_finite_with_a_denormal_denominator() -> None:
    """Past the parser (a report built in code): a ratio from components 1e-320 apart is a data-quality finding,
    never an infinite tolerance that lets every ratio pass."""
    parsed = ParsedReport("code", "US", "FFIEC 041", RSSD, "x", "2023-03-31", "USD",
                          facts={**US_FIGURES, "RCOAA223": 1e-320, "RCON2170": 1e-320})
    result = evaluate_rules(parsed)
    assert "DATA_QUALITY" in result.violations
    assert any("give no finite ratio" in c.description for c in result.checks)
    assert all(c.margin is None or math.isfinite(c.margin) for c in result.checks)


def test_an_overflowing_filing_keeps_every_row_of_the_json_output(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    good = tmp_path / "a_good.xml"
    good.write_text(_us())
    bad = tmp_path / "b_big.xml"
    bad.write_text(_replace(_us(), 'decimals="-3">48600000</cc:RCOA8274>',
                            'decimals="-3" scale="30">48600000</cc:RCOA8274>'))
    out = tmp_path / "out.jsonl"
    assert main(["analyze", str(good), str(bad), "--rules-only", "--json", "--out", str(out)]) == 0
    rows = [json.loads(line, parse_constant=_strict) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "cannot_assess"]
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# 6. Units


def test_a_ratio_in_usd_is_named(tmp_path: Path) -> None:
    result = _assess(tmp_path, "usd.xml", _replace(_us(), 'unitRef="PURE" decimals="4">0.1160</cc:RCOAP793>',
                                                   'unitRef="USD" decimals="4">0.1160</cc:RCOAP793>'))
    assert result.status == "needs_review" and _has(result, "ratio RCOAP793 in unit iso4217:USD, expected xbrli:pure")


def test_an_undeclared_unit_is_named(tmp_path: Path) -> None:
    result = _assess(tmp_path, "unit.xml", _replace(_us(), 'unitRef="PURE" decimals="4">0.1160</cc:RCOAP793>',
                                                    'unitRef="NOSUCH" decimals="4">0.1160</cc:RCOAP793>'))
    assert result.status == "needs_review" and _has(result, "RCOAP793 refers to undeclared unit 'NOSUCH'")


# ---------------------------------------------------------------------------------------------------------------
# 7. CBLR election


@pytest.mark.parametrize("value", ["2", "yes"])
def test_an_invalid_cblr_election_is_named(tmp_path: Path, value: str) -> None:
    figures = {"RCOA8274": 48_600_000.0, "RCOAA224": 540_000_000.0, "RCON2170": 545_000_000.0, "RCOA7204": 0.0901}
    xml = us_instance(RSSD, "Granite State Bank", US_DATE, figures, random.Random(0), form="051", cblr=True)
    result = _assess(tmp_path, "cblr.xml", _replace(xml, ">1</cc:RCOALE74>", f">{value}</cc:RCOALE74>"))
    assert result.status == "cannot_assess"
    assert _has(result, f"RCOALE74 (CBLR election) has value {value!r}, expected 1 (elector) or 0")


# ---------------------------------------------------------------------------------------------------------------
# 8. Unknown EBA release


def test_an_unknown_eba_release_is_named_in_xml_and_csv(tmp_path: Path) -> None:
    xml = _eu().replace(EU_SCHEMA_REF, EU_SCHEMA_REF.replace("/corep/4.0/", "/corep/9.9/"))
    package = _package(change={"reports/report.json": _report_json(
        {"documentType": "https://xbrl.org/2021/xbrl-csv", "extends": [_EXTENDS.replace("/4.0/", "/9.9/")]})})
    for name, content in (("rel.xml", xml), ("rel.zip", package)):
        result = _assess(tmp_path, name, content)
        assert result.status == "needs_review" and _has(result, "taxonomy corep 9.9 is not a release of the DPM"), \
            (name, result.reasons)


# ---------------------------------------------------------------------------------------------------------------
# 9. xBRL-CSV metadata of the wrong type


def _report_json(info: object) -> str:
    return json.dumps({"documentInfo": info})


_EXTENDS = "http://www.eba.europa.eu/eu/fr/xbrl/crr/fws/corep/4.0/mod/corep_of.json"


@pytest.mark.parametrize(("member", "body", "expected"), [
    ("reports/report.json", _report_json("https://xbrl.org/2021/xbrl-csv"),
     "reports/report.json: documentInfo is a string 'https://xbrl.org/2021/xbrl-csv', expected an object"),
    ("reports/report.json", _report_json({"documentType": "https://xbrl.org/2021/xbrl-csv", "extends": 7}),
     "reports/report.json: documentInfo.extends is a number, expected a list of taxonomy entry-point URLs"),
    ("reports/report.json", _report_json({"documentType": "https://xbrl.org/2021/xbrl-csv", "extends": _EXTENDS}),
     f"reports/report.json: documentInfo.extends is a string '{_EXTENDS}', expected a list"),
    ("reports/report.json", json.dumps([1, 2]), "reports/report.json: the document is a list, expected an object"),
    ("reports/c_47.00.csv", "dp,value\r\ndp135745,0.0559\r\n",
     "reports/c_47.00.csv: header 'dp,value' lacks column(s) datapoint, factValue; expected datapoint,factValue"),
    ("reports/parameters.csv", "key,val\r\nrefPeriod,2024-12-31\r\n",
     "reports/parameters.csv: header 'key,val' lacks column(s) name, value"),
])
def test_package_metadata_of_the_wrong_type_is_a_clear_error(tmp_path: Path, member: str, body: str,
                                                             expected: str) -> None:
    result = _assess(tmp_path, "meta.zip", _package(change={member: body}))
    assert result.status == "error" and expected in result.reasons[0], result.reasons
    assert f"meta.zip!{LEI}.CON_FR_COREP_OF_2024-12-31/{member}" in result.reasons[0]


# ---------------------------------------------------------------------------------------------------------------
# 10. Several packages in a zip, zips in a zip


def test_every_report_package_of_a_zip_is_read(tmp_path: Path) -> None:
    first = zipfile.ZipFile(io.BytesIO(_package()))
    second = zipfile.ZipFile(io.BytesIO(_package({NSFR: 0.9})))
    members = {f"a/{i.filename}": first.read(i) for i in first.infolist()}
    members |= {f"b/{i.filename}": second.read(i) for i in second.infolist()}
    path = _write(tmp_path, "two.zip", _zip_bytes(members))
    results = assess_filings([path])
    top = f"{LEI}.CON_FR_COREP_OF_2024-12-31/"
    assert [r.file for r in results] == [f"{path}!a/{top}", f"{path}!b/{top}"]
    assert [r.rule_violations for r in results] == [[], ["NSFR"]]


def test_zips_in_a_bulk_zip_are_read_one_level_deep(tmp_path: Path) -> None:
    inner = _zip_bytes({"bank.xml": _us(), "pkg.zip": _package()})
    bulk = _write(tmp_path, "bulk.zip", _zip_bytes({"inner.zip": inner, "top.xml": _us(RCOAP793=0.04)}))
    results = {r.file.removeprefix(f"{bulk}!"): r for r in assess_filings([bulk])}
    assert set(results) == {"inner.zip!bank.xml", "inner.zip!pkg.zip", "top.xml"}
    assert results["inner.zip!bank.xml"].status == "ok" and results["top.xml"].rule_violations[0] == "CET1_RATIO"
    too_deep = results["inner.zip!pkg.zip"]
    assert too_deep.status == "error" and "only one level of nesting is read" in too_deep.reasons[0]


# ---------------------------------------------------------------------------------------------------------------
# 11. Zips in disguise, macOS zips


def test_a_zip_named_xml_is_recognised(tmp_path: Path) -> None:
    path = _write(tmp_path, "package.xml", _package())
    result = _assess(tmp_path, "package.xml", path.read_bytes())
    assert result.status == "error" and "this is a zip archive (it starts with PK" in result.reasons[0]
    assert "not valid" not in result.reasons[0]
    (parsed,) = read_filing_file(path)  # the loader of generated/real folders reads it as the zip it is
    assert isinstance(parsed, ParsedReport) and parsed.entity_id == LEI


def test_macos_resource_forks_in_a_zip_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "finder.zip", _zip_bytes({"bank.xml": _us(), "__MACOSX/._bank.xml": b"\x00\x05\x16\x07",
                                                      "._other.xml": b"\x00\x05\x16\x07"}))
    results = assess_filings([path])
    assert [(r.file, r.status) for r in results] == [(f"{path}!bank.xml", "ok")]


def test_a_bad_member_never_raises_out_of_a_multi_filing_zip(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.zip", _zip_bytes({"a.xml": _us(), "b.zip": b"PK\x03\x04 not a zip"}))
    got = list(read_zip(path))
    assert isinstance(got[0], ParsedReport) and isinstance(got[1], XBRLError)
    assert "b.zip: not a readable zip" in str(got[1])
