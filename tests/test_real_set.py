"""Real filings in the evaluation and in the gate: each answer is reviewed as `finetune analyze` reviews it and the
reviews are counted (cleared, false and missed violations, invented figures, rules not in force, unreadable); the
gate's real-filing criteria fail without a real set and are stated when not required."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest

from evaluation.gate import GateThresholds, check_gate, gate_metrics
from evaluation.real_set import read_real_set, real_rows, render_real_markdown, score_real_filings
from regulator.analyze import analyze_report
from regulator.generator import us_instance
from regulator.render import family_for_bank, render_target
from regulator.rules import evaluate_rules
from tests.test_xbrl import US_FIGURES

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
THRESHOLDS = dict(f1_floor=0.8, rouge_floor=0.6, min_margin_over_lora=0.0, use_ci_lower_bound=False,
                  forgetting_ceiling=0.5)
GOOD = {"f1_micro": 0.9, "rouge_l": 0.7, "f1_margin_over_lora": 0.01, "f1_margin_over_lora_ci_low": -0.02,
        "forgetting_increase": 0.1}


@pytest.fixture()
def compliant(tmp_path: Path):
    path = tmp_path / "granite.xml"
    path.write_text(us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES, random.Random(1)))
    [parsed], errors = read_real_set(path)
    assert not errors and not evaluate_rules(parsed).violations
    return parsed


def test_each_kind_of_wrong_answer_is_counted(compliant) -> None:
    result = evaluate_rules(compliant)
    right = render_target(compliant, result, family_for_bank(compliant.entity_id))
    first = next(line for line in right.splitlines() if line.startswith("- "))
    code = first[2:].split()[0]
    false_breach = right.replace(first, first.rsplit(":", 1)[0] + ": BREACH", 1)
    invented = right.replace(first, f"- {code} 38.4439% vs 100.00% min: OK", 1)
    not_in_force = right.replace("DIRECTIVE:", "- LCR 120.00% vs 100.00% min: OK\nDIRECTIVE:", 1)
    answers = [right, false_breach, invented, not_in_force, "I cannot tell."]
    results = [analyze_report(compliant, a) for a in answers]
    scores = score_real_filings(results, unreadable_files=2)
    assert results[0].status == "ok", results[0].reasons
    assert scores["n_filings"] == 5 and scores["compliant"] == 5 and scores["unreadable_files"] == 2
    assert scores["cleared_correctly"] == 1 and scores["cleared_share"] == pytest.approx(0.2)
    assert scores["false_violations"] == 1 and scores["false_by_rule"] == {code: 1}
    assert scores["filings_with_false_violation"] == 1 and scores["missed_violations"] == 0
    assert score_real_filings([results[2]])["invented_figures"] == 1, results[2].reasons
    assert score_real_filings([results[3]])["inapplicable_checks"] == 1, results[3].reasons
    assert scores["inapplicable_checks"] == 1 and scores["unreadable_answers"] == 1
    assert score_real_filings([results[0], results[1]])["invented_figures"] == 0
    rows = real_rows({"full FT": scores})
    assert {"measure": "false violations", "full FT": 1} in rows
    table = render_real_markdown({"full FT": scores}, {"full FT": results}, "somewhere")
    assert "granite.xml" in table and f"{code} 1" in table


def test_the_projects_real_filings_are_read_and_labelled() -> None:
    parsed, errors = read_real_set(REAL)
    assert not errors, [e.reasons for e in errors]
    assert len(parsed) >= 2 and {p.jurisdiction for p in parsed} >= {"EU"}


def test_the_gate_requires_a_real_set_when_its_criteria_are_set() -> None:
    strict = GateThresholds(**THRESHOLDS, real_max_false_violations=0, real_max_invented_figures=0)
    none_scored = check_gate(gate_metrics(GOOD | {}, {}, None) | GOOD, strict)
    assert not none_scored.passed
    assert [c.name for c in none_scored.criteria if not c.passed] == ["real_false_violations", "real_invented_figures"]
    assert all("no real filings were scored" in m for m in none_scored.failures)
    real = {"n_filings": 8, "false_violations": 0, "invented_figures": 1, "cleared_share": 0.5}
    decision = check_gate(gate_metrics({}, {}, None, real) | GOOD, strict)
    assert decision.failures == ["real_invented_figures: real_invented_figures = 1.0000, required <= 0.0000: FAILED"]
    clean = dict(real, invented_figures=0)
    assert check_gate(gate_metrics({}, {}, None, clean) | GOOD, strict).passed
    share = GateThresholds(**THRESHOLDS, real_min_cleared_share=0.9)
    assert not check_gate(gate_metrics({}, {}, None, clean) | GOOD, share).passed
    silent = GateThresholds(**THRESHOLDS, real_max_false_violations=0, real_max_unreadable_answers=0)
    mute = dict(clean, unreadable_answers=8)  # a model that writes nothing readable reports no false violation
    assert [c.name for c in check_gate(gate_metrics({}, {}, None, mute) | GOOD, silent).criteria if not c.passed] == [
        "real_unreadable_answers"]


def test_an_unrequired_real_set_is_stated_not_silently_passed() -> None:
    plain = GateThresholds(**THRESHOLDS)
    decision = check_gate(GOOD, plain)
    assert decision.passed
    (line,) = [c.message for c in decision.criteria if c.name == "real_filings"]
    assert line == ("real_filings: not required by this config; no real filings were scored (eval.real_source "
                    "unset or unreadable)")
    real = {"n_filings": 8, "false_violations": 3, "invented_figures": 2, "cleared_share": 0.0}
    (line,) = [c.message for c in check_gate(gate_metrics({}, {}, None, real) | GOOD, plain).criteria
               if c.name == "real_filings"]
    assert "8 real filings scored: 3 false violations, 2 answers with an invented figure" in line
