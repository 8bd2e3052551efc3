"""Zip inputs: an EBA xBRL-CSV report package reads to the same results as the xBRL-XML instance of the same
report; a bulk zip of instances (the FFIEC CDR's bulk download shape) gives one result per member; hostile or
broken zips are refused with the member named, and never stop the other filings.

The packages here are written by the project (regulator.packages.write_report_package) from the EBA DPM's
datapoint ids; no real xBRL-CSV package was found in public repositories to test against."""

from __future__ import annotations

import io
import json
import random
import zipfile
from datetime import date
from pathlib import Path

import pytest

from foundation.errors import XBRLError
from finetune.analysis import analyze_filings
from regulator.generator import eu_instance, us_instance
from regulator.packages import MAX_RATIO, read_zip, write_report_package
from regulator.rules import evaluate_rules
from regulator.xbrl import parse_xbrl_bytes, render_report
from tests.test_xbrl import EU_FIGURES, LEI, US_FIGURES

CSV_CELLS = {code: v for code, v in EU_FIGURES.items() if not code.startswith(("C 02.00", "C 28.00"))}


def _zip(tmp_path: Path, name: str, members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", method) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def test_an_xbrl_csv_package_reads_like_its_xml_twin(tmp_path: Path) -> None:
    """Same figures as xBRL-XML and as xBRL-CSV: same facts, same rendered report, same rule results. (C 02.00 has
    no cells in the DPM 2.0 database for 4.0 and C 28.00 is an open table: both are filed and "not mapped".)"""
    path = tmp_path / "package.zip"
    path.write_bytes(write_report_package(LEI, "2024-12-31", CSV_CELLS))
    (from_csv,) = list(read_zip(path))
    from_xml = parse_xbrl_bytes(eu_instance(LEI, "x", "2024-12-31", CSV_CELLS).encode(), source="twin.xml")
    assert from_csv.release == "4.0" and from_csv.entity_id == LEI and from_csv.report_date == "2024-12-31"
    assert from_csv.facts == pytest.approx(from_xml.facts)
    assert from_csv.currency == "EUR" and from_csv.warnings == from_xml.warnings
    assert render_report(from_csv).splitlines()[1:] == render_report(from_xml).splitlines()[1:]
    assert evaluate_rules(from_csv) == evaluate_rules(from_xml)
    assert from_csv.unreadable == from_xml.unreadable == {
        "C 02.00 r0010 c0010": "not mapped", "C 28.00 r0010 c0322": "not mapped", "C 28.00 r0010 c0350": "not mapped"}
    assert any("cells C 02.00 r0010, C 28.00 r0010, C 28.00 r0010 not mapped" in w for w in from_csv.warnings)


def test_a_bulk_zip_gives_one_result_per_instance(tmp_path: Path) -> None:
    us = us_instance("3705098", "Pioneer Savings Bank", date(2024, 6, 30), US_FIGURES, random.Random(0))
    eu = eu_instance(LEI, "Nordhafen Bank AG", "2024-12-31", EU_FIGURES)
    bulk = _zip(tmp_path, "bulk.zip", {"Call_Cert1_063024.xml": us, "sub/eu.xbrl": eu, "broken.xml": "<xbrl",
                                       "readme.txt": "ignored"})
    results = analyze_filings([bulk], model_dir=None)
    assert [r.file for r in results] == [f"{bulk}!Call_Cert1_063024.xml", f"{bulk}!broken.xml", f"{bulk}!sub/eu.xbrl"]
    by_file = {r.file: r for r in results}
    assert by_file[f"{bulk}!broken.xml"].status == "error"
    assert "not well-formed" in by_file[f"{bulk}!broken.xml"].reasons[0]
    direct = analyze_filings([_zip(tmp_path, "one.zip", {"a.xml": us})], model_dir=None)[0]
    assert by_file[f"{bulk}!Call_Cert1_063024.xml"].rule_violations == direct.rule_violations
    assert by_file[f"{bulk}!Call_Cert1_063024.xml"].status == "ok"


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = _zip(tmp_path, "bomb.zip", {"a.xml": b"<" + b" " * (MAX_RATIO * 10_000) + b"/>"})
    (result,) = analyze_filings([bomb], model_dir=None)
    assert result.status == "error" and "refused as a zip bomb" in result.reasons[0] and "a.xml" in result.reasons[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.pop(next(k for k in m if k.endswith("reports/report.json"))), "without reports/report.json"),
        (lambda m: m.update({next(k for k in m if k.endswith("report.json") and "reports/" in k):
                             json.dumps({"documentInfo": {"documentType": "https://xbrl.org/2021/xbrl-csv",
                                                          "extends": ["http://example.com/other.json"]}})}),
         "unsupported taxonomy"),
        (lambda m: m.update({next(k for k in m if k.endswith("parameters.csv")): "name,value\r\nrefPeriod,31/12/2024\r\n"}),
         "not an xs:date"),
        (lambda m: m.update({next(k for k in m if k.endswith("c_47.00.csv")): "datapoint,factValue\r\ndp135745,NaN\r\n"}),
         None),
    ],
)
def test_a_broken_package_is_refused_with_the_member_named(tmp_path: Path, change, expected: str | None) -> None:
    good = zipfile.ZipFile(io.BytesIO(write_report_package(LEI, "2024-12-31", CSV_CELLS)))
    members = {i.filename: good.read(i) for i in good.infolist()}
    change(members)
    path = _zip(tmp_path, "p.zip", members)
    if expected is None:  # a non-finite value: the fact is not reported, with a warning; the rest is read
        (parsed,) = list(read_zip(path))
        assert parsed.facts["C 47.00 r0330 c0010"] is None
        assert any("non-finite" in w for w in parsed.warnings)
        return
    with pytest.raises(XBRLError, match=expected):
        list(read_zip(path))


def test_a_folder_of_zips_and_instances(tmp_path: Path) -> None:
    (tmp_path / "pkg.zip").write_bytes(write_report_package(LEI, "2024-12-31", CSV_CELLS))
    (tmp_path / "eu.xml").write_text(eu_instance(LEI, "x", "2024-12-31", CSV_CELLS))
    (tmp_path / "notzip.zip").write_text("plain text")
    results = {Path(r.file).name: r for r in analyze_filings([tmp_path], model_dir=None)}
    assert results["pkg.zip"].rule_violations == results["eu.xml"].rule_violations
    assert results["notzip.zip"].status == "error" and "not a readable zip" in results["notzip.zip"].reasons[0]
