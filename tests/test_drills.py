"""Decision drills: generated check lines that are right by arithmetic, read by the answer parser, loss on outcomes."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from data_contracts.contracts import ContractLimits
from data_contracts.prepare import held_out_families, prepare_dataset, tokenise
from regulator.answers import check_lines
from regulator.drills import (DRILL, GAP_DRILL, decision_point, gap_spans, generate_drills, generate_gap_drills,
                              outcome_spans)
from regulator.generator import RAW_COLUMNS, TRAIN_ONLY, generate_dataset

# "- CODE 4.30% vs 4.5% min: BREACH": the figure, the threshold, its kind and the outcome, as written
_LINE = re.compile(r"^- (\w+) (-?[\d.]+)% vs ([\d.]+)% (min|req|limit): (OK|BREACH)$")


def test_drills_are_deterministic_training_only_rows_of_the_raw_table() -> None:
    a, b = generate_drills(20, seed=7, lines=12), generate_drills(20, seed=7, lines=12)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [*RAW_COLUMNS, TRAIN_ONLY]
    assert a[TRAIN_ONLY].all() and (a["case_kind"] == DRILL).all() and a["id"].is_unique
    assert not generate_drills(20, seed=8, lines=12)["target"].equals(a["target"])
    assert set(a["jurisdiction"]) == {"EU", "US"}


def test_every_drill_line_is_right_by_arithmetic_and_half_of_them_are_breaches() -> None:
    """Checked against the numbers on the line, not against the rule engine that wrote it: a minimum is met at or
    above, a limit at or below; the violations column names exactly the broken codes."""
    drills = generate_drills(200, seed=1234, lines=24)
    outcomes = []
    for target, violations in zip(drills["target"], drills["violations"]):
        lines = target.split("\n")
        assert lines[0] == "ANALYSIS:" and len(lines) == 25 and "DIRECTIVE" not in target
        broken = set()
        for line in lines[1:]:
            match = _LINE.match(line)
            assert match, line
            code, figure, threshold, kind, outcome = match.groups()
            meets = float(figure) <= float(threshold) if kind == "limit" else float(figure) >= float(threshold)
            assert outcome == ("OK" if meets else "BREACH"), line
            outcomes.append(outcome)
            if outcome == "BREACH":
                broken.add(code)
        assert sorted(broken) == list(violations)
    assert 0.4 < outcomes.count("BREACH") / len(outcomes) < 0.6
    # the answer parser reads every drill line as a check line
    assert len(check_lines(drills["target"][0])) == 24


def test_fine_drills_have_a_real_call_reports_precision_and_the_same_outcomes() -> None:
    """``fine_share``: a share of the figures at four decimals of a percentage (``2.2936%``, as real Call Reports
    state them), each on the side of its threshold the whole-basis-point draw put it; everything else the same."""
    plain, fine = generate_drills(60, seed=3, lines=24), generate_drills(60, seed=3, lines=24, fine_share=0.5)
    four = 0
    for a, b in zip(plain["target"], fine["target"]):
        for x, y in zip(a.split("\n")[1:], b.split("\n")[1:]):
            (code_x, fig_x, thr_x, kind, out_x), (code_y, fig_y, thr_y, _, out_y) = (
                _LINE.match(x).groups(), _LINE.match(y).groups())
            assert (code_x, thr_x, out_x) == (code_y, thr_y, out_y), (x, y)
            if fig_x != fig_y:
                four += 1
                assert len(fig_y.split(".")[1]) == 4 and abs(float(fig_y) - float(fig_x)) < 0.01
                meets = float(fig_y) <= float(thr_y) if kind == "limit" else float(fig_y) >= float(thr_y)
                assert out_y == ("OK" if meets else "BREACH"), y
    assert 0.4 < four / (60 * 24) < 0.6
    assert list(fine["violations"]) == list(plain["violations"])


def test_a_drill_carries_loss_on_its_outcome_words_only(tokenizer_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    drills = generate_drills(3, seed=1, lines=6)
    reports = generate_dataset(6, seed=1, out_dir=tmp_path)
    out = tokenise(pd.concat([reports, drills], ignore_index=True), tok, 1024)
    for row in out.itertuples():
        kept = [(i, t) for i, (t, lab) in enumerate(zip(row.input_ids, row.labels)) if lab != -100]
        if row.case_kind == DRILL:
            words = re.findall(r": (OK|BREACH)$", row.target, re.MULTILINE)
            assert "".join(tok.decode([t]) for _, t in kept).split() == words
            assert row.labels[-1] == -100  # no end of answer to learn: a drill is not a whole answer
        else:  # a report's answer: every token after the prompt, and the eos
            n_prompt = row.labels.index(next(lab for lab in row.labels if lab != -100))
            assert row.labels[n_prompt:] == row.input_ids[n_prompt:]
            assert row.labels[-1] == tok.eos_token_id


def test_outcome_spans_point_at_the_outcome_words() -> None:
    target = "ANALYSIS:\n- LCR 99.10% vs 100% min: BREACH\n- NSFR 120.00% vs 100% min: OK"
    assert [target[s:e] for s, e in outcome_spans(target)] == ["BREACH", "OK"]


def test_drills_stay_in_train_and_change_neither_validation_test_nor_the_held_out_family(
        tokenizer_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = generate_dataset(60, seed=3, out_dir=tmp_path / "raw", n_train_balanced=20)
    with_drills = pd.concat([raw, generate_drills(30, seed=3, lines=8)], ignore_index=True)
    assert held_out_families(with_drills, 3) == held_out_families(raw, 3)
    limits = ContractLimits(max_tokens=1024)
    plain = prepare_dataset(raw=raw, tokenizer=tok, out_dir=tmp_path / "a", seed=3, max_seq_len=1024, limits=limits,
                            split_fractions=(0.4, 0.3, 0.3))
    drilled = prepare_dataset(raw=with_drills, tokenizer=tok, out_dir=tmp_path / "b", seed=3, max_seq_len=1024,
                              limits=limits, split_fractions=(0.4, 0.3, 0.3))
    splits_a, splits_b = plain["stats"]["splits"], drilled["stats"]["splits"]
    assert splits_b["train"]["case_kind"][DRILL] == 30 and splits_b["train"]["rows"] == splits_a["train"]["rows"] + 30
    for name in ("validation", "test"):
        assert splits_b[name] == splits_a[name]


@pytest.mark.parametrize("n, lines", [(-1, 4), (3, 0)])
def test_bad_drill_sizes_are_refused(n: int, lines: int) -> None:
    with pytest.raises(ValueError, match="n >= 0 and lines >= 1"):
        generate_drills(n, seed=1, lines=lines)


def test_gap_drills_are_pairs_that_differ_only_in_what_the_filing_leaves_out() -> None:
    """Each pair: the same bank, quarter and figures; one filing without its leverage assets (its answer cut after
    its first line, the missing-denominator finding), its twin with them (cut after its first rule's check line,
    the same in both); every row training-only."""
    a = generate_gap_drills(40, seed=5)
    pd.testing.assert_frame_equal(a, generate_gap_drills(40, seed=5))
    assert list(a.columns) == [*RAW_COLUMNS, TRAIN_ONLY] and len(a) == 80 and a["id"].is_unique
    assert a[TRAIN_ONLY].all() and (a["case_kind"] == GAP_DRILL).all() and set(a["jurisdiction"]) == {"US"}
    electors = 0
    for (_, gap), (_, twin) in zip(a.iloc[::2].iterrows(), a.iloc[1::2].iterrows()):
        assert gap["bank_id"] == twin["bank_id"] and gap["report_date"] == twin["report_date"]
        gap_lines, twin_lines = gap["report_text"].split("\n"), twin["report_text"].split("\n")
        assert gap_lines[0] == twin_lines[0]  # same bank, form and date
        assert gap_lines[-1].startswith("Not reported: leverage assets")
        assert "leverage assets not reported" not in twin["report_text"]
        assert gap["target"] == "ANALYSIS:\n- DATA_QUALITY leverage assets not reported: DATA_QUALITY"
        assert twin["target"].startswith("ANALYSIS:\n- ") and twin["target"].count("\n") == 1
        assert "DATA_QUALITY" not in twin["target"].split(":")[1]  # the first rule's line, not a finding
        assert "DATA_QUALITY" in gap["violations"]
        electors += "CBLR" in gap_lines[0]
        assert twin["target"].startswith("ANALYSIS:\n- LEVERAGE " if "CBLR" in gap_lines[0] else "ANALYSIS:\n- CET1_RATIO ")
    assert 10 <= electors <= 30  # about half of the banks elect the CBLR framework
    assert not generate_gap_drills(40, seed=6)["report_text"].equals(a["report_text"])
    with pytest.raises(ValueError, match="n >= 0"):
        generate_gap_drills(-1, seed=1)


def test_a_gap_drill_carries_loss_on_its_decision_only(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out = tokenise(generate_gap_drills(6, seed=2), tok, 1024)
    for row in out.itertuples():
        learned = tok.decode([t for t, lab in zip(row.input_ids, row.labels) if lab != -100])
        expected = row.target.split("\n")[1].split(" ", 2)
        assert learned.strip() == f"{expected[0]} {expected[1]}", learned  # "- DATA_QUALITY" or "- LEVERAGE"
        assert row.labels[-1] == -100


def test_the_decision_point_of_a_real_extract_is_its_missing_denominator_finding() -> None:
    """The decision gap drills teach is where the reference answer of a real elector's extract writes its finding:
    the first line, right after the report's line naming what it leaves out."""
    from regulator.render import family_for_bank, render_target
    from regulator.rules import evaluate_rules
    from regulator.xbrl import parse_xbrl_file, render_report

    parsed = parse_xbrl_file(Path(__file__).parent / "fixtures" / "real" / "ffiec" / "bank-493741-2026-06-30.xml")
    assert render_report(parsed).splitlines()[-1] == "Not reported: leverage assets"
    prefix, line, other = decision_point(render_target(parsed, evaluate_rules(parsed),
                                                       family_for_bank(parsed.entity_id)))
    assert (prefix, line, other) == ("ANALYSIS:\n", "- DATA_QUALITY leverage assets not reported: DATA_QUALITY",
                                     "- LEVERAGE")
    target = "ANALYSIS:\n- LEVERAGE 9.50% vs 9% min: OK"
    assert [target[s:e] for s, e in gap_spans(target)] == ["- LEVERAGE"]
    with pytest.raises(ValueError, match="no rule's check line"):
        decision_point("ANALYSIS:\n- DATA_QUALITY leverage assets not reported: DATA_QUALITY")


def test_gap_drills_stay_in_train_and_change_neither_validation_test_nor_the_held_out_family(
        tokenizer_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = generate_dataset(60, seed=3, out_dir=tmp_path / "raw", n_train_balanced=20)
    with_gaps = pd.concat([raw, generate_gap_drills(10, seed=3)], ignore_index=True)
    assert held_out_families(with_gaps, 3) == held_out_families(raw, 3)
    limits = ContractLimits(max_tokens=1024)
    kw = dict(tokenizer=tok, seed=3, max_seq_len=1024, limits=limits, split_fractions=(0.4, 0.3, 0.3))
    plain = prepare_dataset(raw=raw, out_dir=tmp_path / "a", **kw)
    gapped = prepare_dataset(raw=with_gaps, out_dir=tmp_path / "b", **kw)
    splits_a, splits_b = plain["stats"]["splits"], gapped["stats"]["splits"]
    assert splits_b["train"]["case_kind"][GAP_DRILL] == 20 and splits_b["train"]["rows"] == splits_a["train"]["rows"] + 20
    for name in ("validation", "test"):
        assert splits_b[name] == splits_a[name]
