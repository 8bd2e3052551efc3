"""Decision drills: generated check lines that are right by arithmetic, read by the answer parser, loss on outcomes."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from data_contracts.contracts import ContractLimits
from data_contracts.prepare import held_out_families, prepare_dataset, tokenise
from regulator.answers import check_lines
from regulator.drills import DRILL, generate_drills, outcome_spans
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
