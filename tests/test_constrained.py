"""Constrained check lines: while a check line's head is written, only the filing's own heads (rule code, figure as
filed, the rule table's threshold) can come out, whatever the model prefers; outcomes, data-quality lines, measures
and the directive stay the model's."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest
import torch

from evaluation.constrained import (
    FREE_CODE, HeadConstraint, TokenStrings, allowed_heads, apply_constraints, heads_from_reference,
)
from regulator.generator import us_instance
from regulator.render import family_for_bank, render_target
from regulator.rules import evaluate_rules
from regulator.xbrl import parse_xbrl_file
from tests.test_xbrl import US_FIGURES


@pytest.fixture(scope="module")
def vocab(tokenizer_dir: Path) -> tuple[object, TokenStrings]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tokenizer, TokenStrings(tokenizer)


@pytest.fixture(scope="module")
def filing(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("f") / "granite.xml"
    path.write_text(us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES, random.Random(1)))
    parsed = parse_xbrl_file(path)
    return parsed, evaluate_rules(parsed)


def test_heads_are_the_filings_own_and_carry_no_outcome(filing) -> None:
    parsed, result = filing
    heads = allowed_heads(result.checks)
    assert heads and all(": " not in h and not h.endswith(("OK", "BREACH")) for h in heads)
    assert heads == heads_from_reference(render_target(parsed, result, family_for_bank(parsed.entity_id)))
    assert not any(h.startswith(FREE_CODE) for h in heads)


def _write(constraint: HeadConstraint, tokenizer, text: str) -> None:
    for i in tokenizer(text, add_special_tokens=False)["input_ids"]:
        constraint.push(i)


def test_a_model_that_prefers_anything_writes_only_allowed_heads(vocab, filing) -> None:
    """Random logits (a model with no idea) inside a check line still write one of the filing's heads, then the
    outcome is free; a second line cannot repeat a checked rule."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    rng = torch.Generator().manual_seed(0)

    def random_head(prefix: str) -> str:
        constraint = HeadConstraint(heads, strings)
        _write(constraint, tokenizer, prefix)
        for _ in range(200):
            logits = torch.randn(1, len(strings.text), generator=rng)
            constraint.push(int(apply_constraints(logits, [constraint]).argmax(-1)))
            if constraint.allowed() is None:
                break
        return "".join(constraint.written).split("\n")[-1][2:].rstrip(":")

    for _ in range(5):
        head = random_head("ANALYSIS:\n-")
        assert head in heads or head.startswith(FREE_CODE), head
    for _ in range(5):  # a checked rule cannot be checked again
        head = random_head(f"ANALYSIS:\n- {heads[0]}: OK\n-")
        assert head != heads[0] and (head in heads or head.startswith(FREE_CODE)), head


def test_outcomes_measures_and_the_directive_are_free(vocab, filing) -> None:
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, f"ANALYSIS:\n- {heads[0]}:")
    assert constraint.allowed() is None  # the outcome
    _write(constraint, tokenizer, " BREACH\n  measure: restore capital")
    assert constraint.allowed() is None
    _write(constraint, tokenizer, "\n- DATA_QUALITY ")
    assert constraint.allowed() is None  # a data-quality finding's wording
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, "ANALYSIS:\n- ")
    allowed = {strings.text[i] for i in constraint.allowed()}
    assert allowed and all(any(f" {h}:".startswith(" " + a) or f" {FREE_CODE} ".startswith(" " + a)
                               for h in heads) for a in allowed)
    logits = torch.zeros(2, len(strings.text))
    out = apply_constraints(logits.clone(), [None, constraint])
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).sum() == len(constraint.allowed())


def test_generation_with_heads_keeps_them(tiny_model_dir: Path, filing) -> None:
    from evaluation.generate import generate_answers, load_model_for_eval
    from regulator.prompts import render_prompt
    from regulator.xbrl import render_report

    model, tokenizer = load_model_for_eval(tiny_model_dir)
    parsed, result = filing
    prompt = render_prompt(tokenizer, render_report(parsed))
    free = generate_answers(model, tokenizer, [prompt], max_new_tokens=16, batch_size=1)
    bound = generate_answers(model, tokenizer, [prompt], max_new_tokens=16, batch_size=1,
                             heads=[allowed_heads(result.checks)])
    assert len(free) == len(bound) == 1  # a random tiny model rarely opens a check line: the run must just work
