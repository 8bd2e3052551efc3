"""The training objective (answer-only logits) and the teacher-forced decision scores, on a tiny model."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest
import torch

from evaluation.teacher_forced import (decision_example, decision_scores, outcome_token_ids, predict_outcomes,
                                       teacher_forced_scores)
from regulator.generator import Bank, build_instance, label_instance
from regulator.prompts import render_prompt
from regulator.xbrl import parse_xbrl_bytes
from training.data import Example, collate
from training.objective import answer_only_loss, predicting_positions


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _rows(tokenizer, n: int = 3) -> list[tuple[list[int], list[int], str]]:
    """Real prompts and targets (generated filings, labelled by the rule engine), tokenised like prepare_data."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        bank = Bank(f"12345{i}", f"Bank {i}", "US" if i % 2 else "EU", "formal_notice", "DE", 100, 0)
        xml = build_instance(bank, date(2024, 3, 31), "multi_breach", rng)
        if bank.jurisdiction == "EU":
            xml = xml.replace("12345", "529900ABCDEFGHIJKL")
        row = label_instance(parse_xbrl_bytes(xml.encode()), family="formal_notice")
        prompt = tokenizer(render_prompt(tokenizer, row["report_text"]), add_special_tokens=False)["input_ids"]
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + target, [-100] * len(prompt) + target, row["target"]))
    return rows


def test_answer_only_loss_equals_the_full_logits_loss(tiny) -> None:
    model, tokenizer = tiny
    rows = _rows(tokenizer)
    batch = collate([Example(ids, labels) for ids, labels, _ in rows], pad_token_id=tokenizer.eos_token_id)
    reference = model(**batch).loss  # Hugging Face: logits at every position, mean over label tokens
    ours = answer_only_loss(model, batch)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6)
    keep = predicting_positions(batch["labels"])
    assert int(keep.sum()) == int((batch["labels"] != -100).sum())  # one projected position per label token
    assert int(keep.sum()) < batch["input_ids"].numel() - len(rows[0][0]) // 2  # prompts and padding are not


def test_decision_positions_point_at_the_outcome_words(tiny) -> None:
    _, tokenizer = tiny
    ids_to_outcome = {v: k for k, v in outcome_token_ids(tokenizer).items()}
    for ids, labels, target in _rows(tokenizer):
        example = decision_example(tokenizer, ids, labels, target)
        outcomes = [line.rsplit(": ", 1)[1] for line in target.splitlines()[1:-1] if line.startswith("- ")]
        assert [o for _, _, o in example.decisions] == outcomes
        assert [ids_to_outcome[ids[p]] for p, _, _ in example.decisions] == outcomes


def test_teacher_forced_scores(tiny) -> None:
    model, tokenizer = tiny
    examples = [decision_example(tokenizer, *row) for row in _rows(tokenizer)]
    # An oracle that always picks the reference outcome scores 1; the tiny model scores something in [0, 1].
    perfect = decision_scores(examples, [[o for _, _, o in e.decisions] for e in examples])
    assert perfect["tf_f1_micro"] == 1.0 and perfect["tf_check_accuracy"] == 1.0
    all_ok = decision_scores(examples, [["OK"] * len(e.decisions) for e in examples])
    assert all_ok["tf_f1_micro"] == 0.0
    scores = teacher_forced_scores(model, tokenizer, examples, batch_size=2)
    assert 0.0 <= scores["tf_check_accuracy"] <= 1.0 and scores["tf_examples"] == 3
    # batching does not change the choices
    ids = outcome_token_ids(tokenizer)
    pad = tokenizer.eos_token_id
    assert predict_outcomes(model, examples, ids, pad_id=pad, batch_size=1) == \
        predict_outcomes(model, examples, ids, pad_id=pad, batch_size=3)


def test_outcomes_are_read_from_the_whole_example(tiny) -> None:
    """Cut after the last outcome and batched by length, the choices are those of each whole example run alone,
    in the caller's order."""
    model, tokenizer = tiny
    rows = _rows(tokenizer, n=5)
    rows = [rows[1], rows[4], rows[0], rows[3], rows[2]]  # not in length order
    examples = [decision_example(tokenizer, *row) for row in rows]
    ids = outcome_token_ids(tokenizer)
    names, candidates = list(ids), [ids[n] for n in ids]
    expected = []
    with torch.no_grad():
        for e in examples:
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            expected.append([names[int(logits[p - 1, candidates].argmax())] for p, _, _ in e.decisions])
    assert predict_outcomes(model, examples, ids, pad_id=tokenizer.eos_token_id, batch_size=2) == expected


def test_decision_weight_marks_one_outcome_token_per_check_line(tiny) -> None:
    from training.full_ft import decision_weight
    from training.objective import DecisionWeight

    model, tokenizer = tiny
    rows = _rows(tokenizer)
    batch = collate([Example(ids, labels) for ids, labels, _ in rows], pad_token_id=tokenizer.eos_token_id)
    decision = decision_weight(tokenizer, 10.0)
    assert decision_weight(tokenizer, 1.0) is None
    marked = decision.mask(batch["input_ids"], batch["labels"])
    assert marked.sum(dim=1).tolist() == [sum(line.startswith("- ") for line in target.splitlines())
                                          for _, _, target in rows]
    examples = [decision_example(tokenizer, *row) for row in rows]
    for row, example in enumerate(examples):  # the same positions the teacher-forced scores read
        assert sorted(p - 1 for p, _, _ in example.decisions) == marked[row].nonzero().flatten().tolist()
    plain, weighted = answer_only_loss(model, batch), answer_only_loss(model, batch, decision)
    assert torch.isfinite(weighted) and not torch.allclose(plain, weighted)
    assert torch.allclose(answer_only_loss(model, batch, DecisionWeight(1.0, 0, (1,))), plain)


def test_directive_weight_marks_the_directive_of_each_answer(tiny) -> None:
    """directive_weight: the weighted positions are those predicting the answer's DIRECTIVE marker and every token
    after it (the prompt's instruction also says DIRECTIVE: it does not count), and the loss changes."""
    from training.full_ft import decision_weight

    model, tokenizer = tiny
    rows = _rows(tokenizer)
    batch = collate([Example(ids, labels) for ids, labels, _ in rows], pad_token_id=tokenizer.eos_token_id)
    weight = decision_weight(tokenizer, 1.0, directive_weight=3.0)
    marked = weight.directive_mask(batch["labels"])
    for row, (ids, labels, target) in enumerate(rows):
        first = next(i for i, label in enumerate(labels) if label != -100)
        tail = tokenizer(target[target.index("DIRECTIVE:"):], add_special_tokens=False)["input_ids"]
        assert marked[row].sum() == len(tail) + 1  # the directive and the eos
        assert not marked[row, : first + len(labels[first:]) - len(tail) - 2].any()
    weights = weight.weights(batch["input_ids"], batch["labels"])
    assert set(weights[marked].tolist()) == {3.0} and set(weights[~marked].tolist()) == {1.0}
    plain, weighted = answer_only_loss(model, batch), answer_only_loss(model, batch, weight)
    assert torch.isfinite(weighted) and not torch.allclose(plain, weighted)
