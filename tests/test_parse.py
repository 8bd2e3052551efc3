"""Answer parsing: the documented format, and the ways a small model gets it wrong."""

from __future__ import annotations

from evaluation.parse import parse_answer

CANONICAL = """ANALYSIS:
- CET1_RATIO: CET1 ratio 3.51% vs 4.50% minimum (CRR Art 92(1)(a)): BREACH
- LEVERAGE: Leverage ratio 6.94% vs 3.00% minimum (CRR Art 92(1)(d)): OK
- DATA_QUALITY: Reported CET1 ratio 36.84% vs components 3.68%: DATA_QUALITY
VIOLATIONS: CET1_RATIO, DATA_QUALITY
DIRECTIVE: The bank must submit a capital restoration plan by 30 June 2025 (CRR Art 92)."""


def test_canonical_answer() -> None:
    parsed = parse_answer(CANONICAL)
    assert parsed.parsed_ok
    assert parsed.checks == {"CET1_RATIO": "BREACH", "LEVERAGE": "OK", "DATA_QUALITY": "DATA_QUALITY"}
    assert parsed.violations == {"CET1_RATIO", "DATA_QUALITY"}
    assert parsed.directive == "The bank must submit a capital restoration plan by 30 June 2025 (CRR Art 92)."
    assert parsed.implied_violations() == parsed.violations


def test_whitespace_and_case_are_tolerated() -> None:
    text = (
        "  analysis :\n"
        "   -   cet1_ratio :  CET1 ratio 3.51% vs 4.50%:  breach  \n"
        "*T1_RATIO: Tier 1 ratio 7.00% vs 6.00%: ok\n"
        "\n"
        "Violations:   cet1_ratio ;  LCR  \n"
        "directive:   Restore   capital\n   within three   months.  \n"
    )
    parsed = parse_answer(text)
    assert parsed.parsed_ok
    assert parsed.checks == {"CET1_RATIO": "BREACH", "T1_RATIO": "OK"}
    assert parsed.violations == {"CET1_RATIO", "LCR"}
    assert parsed.directive == "Restore capital within three months."


def test_check_line_without_description() -> None:
    parsed = parse_answer("- LCR: BREACH\n- NSFR:OK\nVIOLATIONS: LCR")
    assert parsed.checks == {"LCR": "BREACH", "NSFR": "OK"}


def test_none_means_no_violation_but_parsed() -> None:
    parsed = parse_answer("ANALYSIS:\n- LCR: LCR 130% vs 100%: OK\nVIOLATIONS: NONE\nDIRECTIVE: No action.")
    assert parsed.parsed_ok
    assert parsed.violations == frozenset()
    assert parsed.checks == {"LCR": "OK"}


def test_unknown_codes_are_dropped() -> None:
    parsed = parse_answer("- FOO_RATIO: x: BREACH\n- NSFR: y: BREACH\nVIOLATIONS: FOO_RATIO, NSFR, BAR\nDIRECTIVE: d")
    assert parsed.checks == {"NSFR": "BREACH"}
    assert parsed.violations == {"NSFR"}
    assert parsed.parsed_ok


def test_only_unknown_codes_is_unparseable() -> None:
    parsed = parse_answer("VIOLATIONS: SOMETHING_ELSE\nDIRECTIVE: d")
    assert not parsed.parsed_ok
    assert parsed.violations == frozenset()


def test_missing_sections() -> None:
    no_verdict = parse_answer("ANALYSIS:\n- LEVERAGE: Leverage 2.1% vs 3%: BREACH\nDIRECTIVE: Fix leverage.")
    assert not no_verdict.parsed_ok
    assert no_verdict.violations == frozenset()  # unparseable predicts nothing, even with a BREACH check line
    assert no_verdict.checks == {"LEVERAGE": "BREACH"}
    assert no_verdict.directive == "Fix leverage."

    no_directive = parse_answer("VIOLATIONS: LEVERAGE")
    assert no_directive.parsed_ok and no_directive.violations == {"LEVERAGE"} and no_directive.directive == ""


def test_garbage_and_empty() -> None:
    for text in ("", "the bank is fine I think", "\n\n", "VIOLATIONS"):
        parsed = parse_answer(text)
        assert not parsed.parsed_ok
        assert parsed.violations == frozenset() and parsed.checks == {} and parsed.directive == ""


def test_repeated_sections_first_wins() -> None:
    text = (
        "- LCR: LCR 80% vs 100%: BREACH\n- LCR: LCR 80% vs 100%: OK\n"
        "VIOLATIONS: LCR\nDIRECTIVE: first.\nVIOLATIONS: NONE\nDIRECTIVE: second."
    )
    parsed = parse_answer(text)
    assert parsed.checks == {"LCR": "BREACH"}
    assert parsed.violations == {"LCR"}
    assert parsed.directive == "first."


def test_disagreeing_verdict_is_visible() -> None:
    text = "- CET1_RATIO: a: BREACH\n- LEVERAGE: b: BREACH\n- LCR: c: DATA_QUALITY\nVIOLATIONS: CET1_RATIO"
    parsed = parse_answer(text)
    assert parsed.implied_violations() == {"CET1_RATIO", "LEVERAGE", "DATA_QUALITY"}
    assert parsed.violations != parsed.implied_violations()
