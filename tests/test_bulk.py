"""The FFIEC CDR's bulk Call Report data (regulator.bulk), on the real 2024-06-30 RC-R Part I schedule of 17 banks
(tests/fixtures/README.md: source, sha256, how the banks were chosen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foundation.errors import XBRLError
from regulator.analyze import analyze_report, expand_paths, read_filings
from regulator.bulk import is_bulk_schedule, read_bulk_schedule, trim_schedule
from regulator.generator import load_xbrl_folder
from regulator.rules import evaluate_rules, regime
from regulator.xbrl import ParsedReport, normalise_ratios, render_report

BULK = Path(__file__).resolve().parent / "fixtures" / "real" / "ffiec-bulk"
SCHEDULE = BULK / "FFIEC CDR Call Schedule RCRI 06302024.txt"
POR = BULK / "FFIEC CDR Call Bulk POR 06302024.txt"
# The rule engine's verdicts on the fixture's banks (what the FFIEC data says, read by hand from the source lines).
VIOLATIONS = {"937834": ["COMBINED_BUFFER"], "5592340": ["COMBINED_BUFFER"], "927134": ["LEVERAGE"],
              "943273": ["LEVERAGE"]}


@pytest.fixture(scope="module")
def banks() -> dict[str, ParsedReport]:
    got = read_bulk_schedule(SCHEDULE)
    assert all(isinstance(g, ParsedReport) for g in got), got
    return {p.entity_id: p for p in got}


def test_every_bank_of_the_schedule_is_read_with_its_name_form_and_date(banks: dict[str, ParsedReport]) -> None:
    assert len(banks) == 17
    assert {p.report_date for p in banks.values()} == {"2024-06-30"}
    assert {p.form for p in banks.values()} == {"FFIEC 031", "FFIEC 041", "FFIEC 051"}
    jpm = banks["852218"]
    assert (jpm.entity_name, jpm.form, jpm.currency, jpm.warnings) == (
        "JPMORGAN CHASE BANK, NATIONAL ASSOCIATION", "FFIEC 031", "USD", ())
    assert jpm.source == f"{SCHEDULE}#852218"
    # RCFA read as RCOA, thousands as dollars, percent as decimals; RCFW (advanced approaches) beside them
    assert jpm.facts["RCOA8274"] == 277_099_000_000 and jpm.facts["RCOAA223"] == 1_692_925_260_000
    assert jpm.facts["RCOAP793"] == pytest.approx(0.163679) and jpm.facts["RCOA7204"] == pytest.approx(0.081292)
    assert jpm.facts["RCOAP859"] == 277_096_000_000  # filed as RCFWP859 only, as the 2026 extract does
    assert jpm.advanced["RCOAP793"] == pytest.approx(0.17669)
    assert "CET1 ratio 16.3679%" in render_report(jpm) and "JPMORGAN CHASE BANK" in render_report(jpm)


def test_electors_trust_banks_and_breaches_are_assessed_as_filed(banks: dict[str, ParsedReport]) -> None:
    elector = banks["956554"]
    assert (elector.framework, regime(elector)) == ("CBLR", "US-CBLR")
    assert elector.facts["RCOA7204"] == pytest.approx(0.222742) and "RCOAP793" not in elector.facts
    assert elector.unreadable["RCOAP793"] == "n/a" and elector.facts["RCON2170"] > 0  # RC-R's RCOA2170
    trust = banks["62110"]  # a trust bank: CET1 ratio 370.7%, conservation buffer 362.7%, filed in percent
    assert trust.facts["RCOAP793"] == pytest.approx(3.70734) and trust.facts["RCOAH311"] == pytest.approx(3.62734)
    assert trust.warnings == ()
    verdicts = {rssd: list(evaluate_rules(p).violations) for rssd, p in banks.items()}
    assert {rssd: v for rssd, v in verdicts.items() if v} == VIOLATIONS
    statuses = {analyze_report(p).status for p in banks.values()}
    assert statuses == {"ok"}  # every figure a rule in force needs is filed: nothing left to a human by the rules


def test_the_schedule_is_found_in_folders_and_read_like_the_other_filings(tmp_path: Path) -> None:
    files, errors = expand_paths([BULK])
    assert files == [SCHEDULE] and not errors  # the panel of reporters is read with it, never as a filing
    assert len(read_filings(SCHEDULE)) == 17
    df = load_xbrl_folder(BULK)
    assert len(df) == 17 and set(df["source_file"]) == {f"{SCHEDULE}#{p}" for p in df["bank_id"]}
    assert df.loc[df["bank_id"] == "927134", "violations"].tolist() == [["LEVERAGE"]]
    assert is_bulk_schedule(Path("ffiec cdr call schedule rcri 03312025.TXT"))
    assert not is_bulk_schedule(POR) and not is_bulk_schedule(tmp_path / "notes.txt")


def _copy(tmp_path: Path, text: str | None = None, *, with_panel: bool = True) -> Path:
    out = tmp_path / SCHEDULE.name
    out.write_bytes(SCHEDULE.read_bytes() if text is None else text.encode())
    if with_panel:
        shutil.copy(POR, tmp_path / POR.name)
    return out


def test_a_cut_line_is_an_error_naming_it_and_the_other_banks_are_read(tmp_path: Path) -> None:
    lines = SCHEDULE.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:40])
    got = read_bulk_schedule(_copy(tmp_path, "\n".join(lines)))
    errors = [g for g in got if isinstance(g, XBRLError)]
    assert len(got) == 17 and len(errors) == 1
    rssd = lines[3].split("\t")[0]
    assert f"line 4 (RSSD {rssd}): 40 fields where the header has 155" in str(errors[0])


def test_without_its_panel_of_reporters_the_form_is_read_from_the_items_with_a_warning(tmp_path: Path) -> None:
    banks = {p.entity_id: p for p in read_bulk_schedule(_copy(tmp_path, with_panel=False))}
    assert banks["852218"].form == "FFIEC 031" and banks["956554"].form == "FFIEC 041"
    assert banks["852218"].entity_name == "852218"
    assert "not in a panel of reporters beside the schedule" in banks["852218"].warnings[0]
    assert analyze_report(banks["852218"]).status == "needs_review"  # a parser warning is a human's call


@pytest.mark.parametrize(("text", "message"), [
    ("IDRSSD\tRCOA7204\n\tLEVERAGE RATIO\n", "holds no bank"),
    ("RSSD\tRCOA7204\n\tx\n5\t9%\n", "line 1 does not start with IDRSSD"),
    ('"IDRSSD"\tRCOA7204\n\tx\nABC\t9%\n', "is not an FFIEC RSSD ID"),
])
def test_a_file_that_is_not_a_schedule_is_refused_naming_why(tmp_path: Path, text: str, message: str) -> None:
    try:
        got = read_bulk_schedule(_copy(tmp_path, text))
    except XBRLError as exc:
        got = [exc]
    assert any(isinstance(g, XBRLError) and message in str(g) for g in got), got
    with pytest.raises(XBRLError, match="not named as an FFIEC CDR bulk schedule"):
        read_bulk_schedule(tmp_path / "schedule.txt")


def test_a_buffer_over_100_percent_is_read_the_way_the_banks_ratios_agree_with() -> None:
    """A pure-unit conservation buffer of 1.09 is a 109% buffer beside a 113.5% CET1 ratio (trust banks file such
    figures: 52 of the 2024-06-30 bulk banks have a buffer over 100%) and a 1.09% one beside a 5.59% CET1 ratio:
    read before as a percent always, i.e. a false buffer breach for the first."""
    for cet1, want in ((1.135, 1.09), (0.0559, 0.0109)):
        facts: dict[str, float | None] = {"RCOAH311": 1.09, "RCOAP793": cet1, "RCOA7206": cet1 + 0.01,
                                          "RCOA7205": cet1 + 0.03}
        warnings: list[str] = []
        normalise_ratios(facts, {code: "pure" for code in facts}, warnings)
        assert facts["RCOAH311"] == pytest.approx(want)
        assert any("RCOAH311" in w for w in warnings) == (want < 1)  # reading it as a percent is said


def test_a_sample_of_banks_is_the_ffiecs_text_byte_for_byte(tmp_path: Path) -> None:
    """trim_schedule (the fixture's and bench/probe_bulk's sampler) keeps the header lines and the chosen banks'
    lines as they are (CRLF too); an id the source does not hold is named."""
    out = trim_schedule(SCHEDULE, tmp_path, ["927134", "852218"])
    lines = SCHEDULE.read_bytes().splitlines(keepends=True)
    kept = out.read_bytes().splitlines(keepends=True)
    assert kept[:2] == lines[:2] and len(kept) == 4 and all(line in lines for line in kept)
    assert kept[2].endswith(b"\r\n")
    assert [p.entity_id for p in read_bulk_schedule(out)] == ["852218", "927134"]  # the source's order
    with pytest.raises(ValueError, match="no line for RSSD 1"):
        trim_schedule(SCHEDULE, tmp_path, ["1"])
