"""XBRL parsing: round trips for both jurisdictions, periods, scale/decimals, nil facts, and hostile input."""

from __future__ import annotations

import random
import re
from datetime import date
from pathlib import Path

import pytest

from foundation.errors import XBRLError
from regulator.generator import eu_instance, us_instance
from regulator.taxonomy import BY_CODE, EU_SCHEMA_REF
from regulator.xbrl import parse_xbrl_bytes, parse_xbrl_file, render_report

EU_FIGURES = {
    "C 01.00 r0010 c0010": 15_240_000_000.0,
    "C 01.00 r0015 c0010": 13_410_000_000.0,
    "C 01.00 r0020 c0010": 12_820_000_000.0,
    "C 02.00 r0010 c0010": 100_000_000_000.0,
    "C 03.00 r0010 c0010": 0.1282,
    "C 03.00 r0030 c0010": 0.1341,
    "C 03.00 r0050 c0010": 0.1524,
    "C 03.00 r0170 c0010": 0.09,
    "C 47.00 r0290 c0010": 240_000_000_000.0,
    "C 47.00 r0310 c0010": 13_410_000_000.0,
    "C 47.00 r0330 c0010": 0.0559,
    "C 76.00 r0010 c0010": 30_000_000_000.0,
    "C 76.00 r0020 c0010": 20_000_000_000.0,
    "C 76.00 r0030 c0010": 1.5,
    "C 84.00 r0220 c0040": 1.141,
    "C 28.00 r0010 c0322": 3_000_000_000.0,
    "C 28.00 r0010 c0350": 0.2237,
}
US_FIGURES = {
    "RCOAP859": 46_400_000.0,
    "RCOA8274": 48_600_000.0,
    "RCOA3792": 55_400_000.0,
    "RCOAA223": 400_000_000.0,
    "RCOAA224": 972_000_000.0,
    "RCON2170": 980_000_000.0,
    "RCOAP793": 0.116,
    "RCOA7206": 0.1215,
    "RCOA7205": 0.1385,
    "RCOA7204": 0.05,
    "RCOAH311": 0.0585,
}
LEI = "529900ABCDEFGHIJKL46"


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_eu_round_trip_same_facts(tmp_path: Path) -> None:
    path = _write(tmp_path, "eu.xml", eu_instance(LEI, "Nordhafen Bank AG", "2024-12-31", EU_FIGURES))
    parsed = parse_xbrl_file(path)
    assert (parsed.jurisdiction, parsed.form, parsed.entity_id) == ("EU", "COREP", LEI)
    assert parsed.entity_name == "Nordhafen Bank AG" and parsed.report_date == "2024-12-31"
    assert parsed.facts == pytest.approx(EU_FIGURES)
    assert parsed.units["C 03.00 r0010 c0010"] == "xbrli:pure"
    assert parsed.units["C 01.00 r0020 c0010"] == "iso4217:EUR"
    assert parsed.currency == "EUR" and parsed.warnings == ()


def test_us_round_trip_ignores_irrelevant_facts_and_other_periods(tmp_path: Path) -> None:
    xml = us_instance("3705098", "Pioneer Savings Bank", date(2024, 6, 30), US_FIGURES, random.Random(0))
    assert "CD_3705098_2024-06-30" in xml and "CI_3705098_2024-03-31" in xml and "RIAD4340" in xml
    parsed = parse_xbrl_file(_write(tmp_path, "us.xml", xml))
    assert (parsed.jurisdiction, parsed.entity_id, parsed.report_date) == ("US", "3705098", "2024-06-30")
    assert parsed.entity_name == "Pioneer Savings Bank"
    # the prior-quarter RCON2170 and the irrelevant RCON/RIAD concepts must not leak in
    assert parsed.facts == pytest.approx(US_FIGURES)


def test_several_periods_pick_latest_instant_and_scale_and_nil(tmp_path: Path) -> None:
    xml = eu_instance(LEI, "Nordhafen Bank AG", "2024-12-31", {**EU_FIGURES, "C 84.00 r0220 c0040": None})
    cet1_ratio, trea = BY_CODE["C 03.00 r0010 c0010"].metric, BY_CODE["C 02.00 r0010 c0010"].metric
    # add an older context carrying a conflicting CET1 ratio, and express TREA with an inline-XBRL scale
    older = xml.replace('id="c4"', 'id="old4"').split('<xbrli:context id="old4">', 1)
    assert len(older) == 2
    old_ctx = '<xbrli:context id="old4">' + older[1].split("</xbrli:context>", 1)[0].replace(
        "2024-12-31", "2024-09-30") + "</xbrli:context>"
    xml = xml.replace("<find:fIndicators>", old_ctx + "\n<find:fIndicators>")
    xml = xml.replace("</xbrli:xbrl>", f'<eba_met:{cet1_ratio} contextRef="old4" unitRef="uPURE" decimals="4">0.0100'
                      f"</eba_met:{cet1_ratio}>\n</xbrli:xbrl>")
    xml = xml.replace(f'decimals="-3">100000000000</eba_met:{trea}>',
                      f'decimals="-3" scale="3">100000000</eba_met:{trea}>')
    parsed = parse_xbrl_bytes(xml.encode(), source="multi.xml")
    assert parsed.report_date == "2024-12-31"
    assert parsed.facts["C 03.00 r0010 c0010"] == pytest.approx(0.1282)
    assert parsed.facts["C 02.00 r0010 c0010"] == pytest.approx(1e11)
    assert parsed.facts["C 84.00 r0220 c0040"] is None
    text = render_report(parsed)
    assert "NSFR nil" in text


def test_render_is_compact_stable_and_marks_missing() -> None:
    figures = dict(US_FIGURES)
    del figures["RCOAA223"]
    xml = us_instance("123456", "Granite State Bank", date(2023, 3, 31), figures, random.Random(1))
    parsed = parse_xbrl_bytes(xml.encode())
    text = render_report(parsed)
    assert text == render_report(parse_xbrl_bytes(xml.encode()))
    assert text.splitlines()[0] == "US FFIEC 041 2023-03-31 Granite State Bank (USD m)"
    assert "; RWA not reported;" in text and "CET1 ratio 11.60%" in text
    # the last line names what the filing leaves out (the gap a data-quality finding answers); total assets, which
    # no rule reads, is not shown
    assert text.splitlines()[-1] == "Not reported: RWA" and "total assets" not in text
    assert len(text.splitlines()) == 4 and len(text) < 400
    full = render_report(parse_xbrl_bytes(us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES,
                                                      random.Random(1)).encode()))
    assert len(full.splitlines()) == 3 and "Not reported" not in full  # a complete filing has no gap line


def test_unknown_concepts_and_bad_values_are_ignored_with_warnings() -> None:
    xml = us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES, random.Random(1))
    xml = xml.replace('decimals="4">0.0500</cc:RCOA7204>', 'decimals="4">n/a</cc:RCOA7204>')
    xml = xml.replace("</xbrli:xbrl>", '<cc:ZZZZ9999 contextRef="CI_123456_2023-03-31" unitRef="USD">1</cc:ZZZZ9999>'
                      '<cc:RCOA7205 contextRef="nowhere" unitRef="PURE">0.2</cc:RCOA7205></xbrli:xbrl>')
    parsed = parse_xbrl_bytes(xml.encode())
    assert "ZZZZ9999" not in parsed.facts
    assert parsed.facts["RCOA7204"] is None
    assert any("non-numeric" in w for w in parsed.warnings)
    assert any("unknown context" in w for w in parsed.warnings)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xbrli:xbrl xmlns:xbrli="http://www.xbrl.org/2003/instance">&lol3;</xbrli:xbrl>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xbrli:xbrl xmlns:xbrli="http://www.xbrl.org/2003/instance"><x>&xxe;</x></xbrli:xbrl>"""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("laughs.xml", BILLION_LAUGHS, "entity-expansion"),
        ("xxe.xml", XXE, "XXE"),
        ("notxml.xml", "CET1 ratio,0.12\nT1 ratio,0.13\n", "not well-formed XML at line 1"),
        ("corrupt.xml", eu_instance(LEI, "N", "2024-12-31", EU_FIGURES)[:900], "not well-formed XML"),
        ("root.xml", '<?xml version="1.0"?><html><body/></html>', "root element is html, not xbrli:xbrl"),
        ("latin1.xml", "<?xml version='1.0'?><a>Caf\xe9</a>".encode("latin-1"), "not valid utf-8"),
        ("empty.xml", "", "file is empty"),
        ("taxonomy.xml", eu_instance(LEI, "N", "2024-12-31", EU_FIGURES).replace(
            EU_SCHEMA_REF, "http://example.org/ifrs/full.xsd"), "unsupported taxonomy"),
    ],
)
def test_hostile_or_broken_files_are_refused_with_file_and_problem(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(XBRLError, match=message) as err:
        parse_xbrl_file(path)
    assert name in str(err.value)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.xml", eu_instance(LEI, "N", "2024-12-31", EU_FIGURES))
    with pytest.raises(XBRLError, match="over the 1,000-byte limit"):
        parse_xbrl_file(path, max_bytes=1000)



def test_call_report_shapes_of_the_cdr(tmp_path: Path) -> None:
    """As the FFIEC CDR hands instances out: relative schemaRefs (no host), RC-R items as RCFA* on FFIEC 031 (RCFW*
    for advanced-approaches banks: a ratio filed under both is kept in ``advanced`` for the rules, which check the
    lower; an item filed only as RCFW* is a fact), the conservation buffer on the year-to-date duration context."""
    xml = us_instance("3705098", "Pioneer Savings Bank", date(2024, 6, 30), US_FIGURES, random.Random(0), form="031")
    assert 'xlink:href="call-report031-2024-06-30.xsd"' in xml and 'xlink:href="concepts.xsd"' in xml
    assert "cc:RCFA7206" in xml and "cc:RCOA7206" not in xml
    xml = xml.replace('<cc:RCFAH311 contextRef="CI_3705098_2024-06-30"', '<cc:RCFAH311 contextRef="CD_3705098_2024-06-30"')
    xml = xml.replace("</xbrli:xbrl>", '<cc:RCFW7206 contextRef="CI_3705098_2024-06-30" unitRef="PURE" '
                      'decimals="4">0.0999</cc:RCFW7206>\n<cc:RCFWA223 contextRef="CI_3705098_2024-06-30" unitRef="USD"'
                      ' decimals="-3">1</cc:RCFWA223>\n</xbrli:xbrl>')
    xml = re.sub(r"<cc:RCFAA223 [^>]*>[^<]*</cc:RCFAA223>", "", xml)
    parsed = parse_xbrl_file(_write(tmp_path, "cdr.xml", xml))
    assert (parsed.jurisdiction, parsed.form) == ("US", "FFIEC 031")
    assert parsed.facts["RCOAH311"] == pytest.approx(0.0585)  # from the CD_ context
    assert parsed.facts["RCOA7206"] == pytest.approx(US_FIGURES["RCOA7206"])  # RCFA kept over RCFW
    assert parsed.advanced == {"RCOA7206": pytest.approx(0.0999)}  # RCFW beside it, for the binding-ratio check
    assert parsed.facts["RCOAA223"] == 1.0  # only RCFW filed: used


def test_a_cblr_elector_is_assessed_under_the_cblr_framework(tmp_path: Path) -> None:
    """RCOALE74 = 1: the leverage ratio against the CBLR framework's 9% (greater than, 12 CFR 324.12), no
    risk-based rule and so no 'cannot assess' for the RWA an elector does not report."""
    from finetune.analysis import analyze_filings
    from regulator.rules import evaluate_rules

    figures = {"RCOA8274": 48_600_000.0, "RCOAA224": 540_000_000.0, "RCON2170": 545_000_000.0, "RCOA7204": 0.09}
    xml = us_instance("3705098", "Pioneer Savings Bank", date(2024, 6, 30), figures, random.Random(0), form="051",
                      cblr=True)
    parsed = parse_xbrl_file(_write(tmp_path, "cblr.xml", xml))
    assert parsed.framework == "CBLR" and render_report(parsed).startswith("US FFIEC 051 CBLR 2024-06-30")
    assert "CET1 ratio n/a" in render_report(parsed)
    result = evaluate_rules(parsed)
    (check,) = [c for c in result.checks if c.code == "LEVERAGE"]
    assert check.outcome == "BREACH" and check.legal_reference == "12 CFR 324.12(a)(1)"  # 9.00% is not > 9%
    assert [c.code for c in result.checks] == ["LEVERAGE"]
    above = _write(tmp_path, "above.xml", xml.replace(">0.0900<", ">0.0901<"))  # within rounding of T1 / assets
    [r] = analyze_filings([above], model_dir=None)
    assert r.status == "ok" and r.pca_category == "well_capitalized" and r.rule_violations == [], r.reasons
