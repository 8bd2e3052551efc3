"""Real-derived filings: a real Call Report's capital scaled consistently keeps its structure and gets a known
answer from the rule engine (the components still agree with the ratios)."""

from __future__ import annotations

from pathlib import Path

import pytest

from regulator.derive import complete_extract, scale_capital
from regulator.rules import evaluate_rules
from regulator.xbrl import parse_xbrl_bytes

FFIEC = Path(__file__).resolve().parent / "fixtures" / "real" / "ffiec"


def _verdict(name: str, factor: float):
    text = (FFIEC / name).read_text()
    parsed = parse_xbrl_bytes(scale_capital(text, factor).encode(), source=name)
    return parsed, evaluate_rules(parsed)


def test_a_real_bank_with_its_capital_cut_breaches_every_capital_minimum() -> None:
    parsed, result = _verdict("bank-2758613-2026-06-30.xml", 0.3)
    original = parse_xbrl_bytes((FFIEC / "bank-2758613-2026-06-30.xml").read_bytes(), source="x")
    assert parsed.facts["RCOAP793"] == pytest.approx(original.facts["RCOAP793"] * 0.3, abs=1e-6)
    assert parsed.facts["RCON2170"] == original.facts["RCON2170"]  # assets as filed
    assert {"CET1_RATIO", "T1_RATIO", "TOTAL_CAPITAL_RATIO", "LEVERAGE"} <= set(result.violations)
    assert not any("disagrees with its components" in c.detail for c in result.checks)


def test_a_cblr_elector_just_under_the_framework_breaches_leverage_only() -> None:
    parsed, result = _verdict("bank-493741-2026-06-30.xml", 0.7)
    assert parsed.framework == "CBLR"
    assert [c.code for c in result.checks if c.outcome == "BREACH"] == ["LEVERAGE"]


def test_implausible_factors_and_instances_without_capital_are_refused() -> None:
    with pytest.raises(ValueError, match="factor"):
        scale_capital("<xbrl/>", 0)
    with pytest.raises(ValueError, match="no capital item"):
        scale_capital("<xbrl><cc:RCON2170>1</cc:RCON2170></xbrl>", 0.5)


def test_a_completed_extract_is_assessable_in_full_and_its_items_agree() -> None:
    """The two items a trimmed extract leaves out, derived from its own figures: every rule in force is assessed,
    the leverage ratio agrees with Tier 1 over the derived assets, and the buffer is the lowest headroom; a CBLR
    elector gets the assets only (electors file no buffer)."""
    from regulator.analyze import analyze_report

    text = (FFIEC / "bank-451965-2026-06-30.xml").read_text()
    completed = complete_extract(text)
    assert "RCFAA224" in completed and "RCFAH311" in completed  # an 031 filer's RC-R items keep its prefix
    parsed = parse_xbrl_bytes(completed.encode(), source="451965")
    facts = parsed.facts
    assert facts["RCOA8274"] / facts["RCOAA224"] == pytest.approx(facts["RCOA7204"], rel=1e-5)
    assert facts["RCOAH311"] == pytest.approx(min(facts["RCOAP793"] - 0.045, facts["RCOA7206"] - 0.06,
                                                  facts["RCOA7205"] - 0.08), abs=1e-6)
    result = evaluate_rules(parsed)
    assert {c.outcome for c in result.checks} == {"OK"} and analyze_report(parsed).status == "ok"
    elector = complete_extract((FFIEC / "bank-493741-2026-06-30.xml").read_text())
    assert "A224" in elector and "H311" not in elector
    assert complete_extract(completed) == completed  # nothing added twice
    with pytest.raises(ValueError, match="leverage ratio"):
        complete_extract("<xbrl><cc:RCON2170>1</cc:RCON2170></xbrl>")
