"""Answer parsing: the documented format, the older format, and the ways a small model gets it wrong."""

from __future__ import annotations

from regulator.answers import check_lines, parse_answer

DQ_MEASURE = "correct or complete the reported figures and resubmit the report (Implementing Regulation (EU) 2021/451)"
CANONICAL = f"""ANALYSIS:
- CET1_RATIO 3.51% vs 4.5% min: BREACH
  measure: raise CET1 capital or reduce risk-weighted assets (CRD Art 104(1)(c)) within 45 days
- LEVERAGE 6.94% vs 3% min: OK
- LARGE_EXPOSURE 12.00% vs 25% limit: OK
- DATA_QUALITY CET1 ratio 36.84% disagrees with its components: DATA_QUALITY
  measure: {DQ_MEASURE} within 10 days
DIRECTIVE: The supervisor notifies Test Bank that it must take the measures above."""


def test_canonical_answer() -> None:
    parsed = parse_answer(CANONICAL)
    assert parsed.parsed_ok
    assert parsed.checks == {"CET1_RATIO": "BREACH", "LEVERAGE": "OK", "LARGE_EXPOSURE": "OK",
                             "DATA_QUALITY": "DATA_QUALITY"}
    assert parsed.violations == {"CET1_RATIO", "DATA_QUALITY"}  # what the check lines say, nothing else
    # each finding's measure follows its check line; the directive is the measures, then the closing sentence
    assert [code for code, _ in parsed.measures] == ["CET1_RATIO", "DATA_QUALITY"]
    assert parsed.closing == "The supervisor notifies Test Bank that it must take the measures above."
    assert parsed.directive == ("raise CET1 capital or reduce risk-weighted assets (CRD Art 104(1)(c)) within 45 days. "
                                "correct or complete the reported figures and resubmit the report (Implementing Regulation "
                                "(EU) 2021/451) within 10 days. " + parsed.closing)
    assert [(c.code, c.text) for c in check_lines(CANONICAL)][:2] == [
        ("CET1_RATIO", "3.51% vs 4.5% min"), ("LEVERAGE", "6.94% vs 3% min")]


def test_older_format_still_parses() -> None:
    text = ("ANALYSIS:\n- CET1_RATIO: CET1 ratio 3.51% vs 4.50% minimum: BREACH\n- LEVERAGE: Leverage 6.94% vs "
            "3.00% minimum: OK\nVIOLATIONS: CET1_RATIO\nDIRECTIVE: Restore capital.")
    parsed = parse_answer(text)
    assert parsed.checks == {"CET1_RATIO": "BREACH", "LEVERAGE": "OK"}
    assert parsed.violations == {"CET1_RATIO"}
    assert parsed.directive == "Restore capital."


def test_whitespace_and_case_are_tolerated() -> None:
    text = (
        "  analysis :\n"
        "   -   cet1_ratio   3.51% vs 4.5% min:  breach  \n"
        "*T1_RATIO 7.00% vs 6% min: ok\n"
        "\n"
        "directive:   Restore   capital\n   within three   months.  \n"
    )
    parsed = parse_answer(text)
    assert parsed.parsed_ok
    assert parsed.checks == {"CET1_RATIO": "BREACH", "T1_RATIO": "OK"}
    assert parsed.violations == {"CET1_RATIO"}
    assert parsed.directive == "Restore capital within three months."


def test_check_line_without_description() -> None:
    parsed = parse_answer("- LCR: BREACH\n- NSFR:OK")
    assert parsed.checks == {"LCR": "BREACH", "NSFR": "OK"}
    assert parsed.violations == {"LCR"}


def test_all_ok_means_no_violation_but_parsed() -> None:
    parsed = parse_answer("ANALYSIS:\n- LCR 130.00% vs 100% min: OK\nDIRECTIVE: No action.")
    assert parsed.parsed_ok
    assert parsed.violations == frozenset()
    assert parsed.checks == {"LCR": "OK"}


def test_unknown_codes_are_dropped() -> None:
    parsed = parse_answer("- FOO_RATIO x: BREACH\n- NSFR y: BREACH\nDIRECTIVE: d")
    assert parsed.checks == {"NSFR": "BREACH"}
    assert parsed.violations == {"NSFR"}
    assert parsed.parsed_ok


def test_only_unknown_codes_is_unparseable() -> None:
    parsed = parse_answer("- SOMETHING_ELSE 3% vs 4%: BREACH\nDIRECTIVE: d")
    assert not parsed.parsed_ok
    assert parsed.violations == frozenset()


def test_a_verdict_line_cannot_add_violations() -> None:
    # One source of truth: a stray VIOLATIONS line (the older format) does not override the check lines.
    parsed = parse_answer("- LEVERAGE 2.1% vs 3% min: OK\nVIOLATIONS: LEVERAGE, LCR\nDIRECTIVE: Fix leverage.")
    assert parsed.violations == frozenset()
    assert parsed.directive == "Fix leverage."


def test_garbage_and_empty() -> None:
    for text in ("", "the bank is fine I think", "\n\n", "VIOLATIONS", "DIRECTIVE: only a directive"):
        parsed = parse_answer(text)
        assert not parsed.parsed_ok
        assert parsed.violations == frozenset() and parsed.checks == {}


def test_repeated_lines_and_sections_first_wins() -> None:
    text = "- LCR 80.00% vs 100% min: BREACH\n- LCR 80.00% vs 100% min: OK\nDIRECTIVE: first.\nDIRECTIVE: second."
    parsed = parse_answer(text)
    assert parsed.checks == {"LCR": "BREACH"}
    assert parsed.violations == {"LCR"}
    assert parsed.directive == "first."


def test_lines_after_the_directive_are_not_checks() -> None:
    parsed = parse_answer("- LCR 120.00% vs 100% min: OK\nDIRECTIVE: none.\n- NSFR 80.00% vs 100% min: BREACH")
    assert parsed.checks == {"LCR": "OK"}
    assert parsed.violations == frozenset()
