"""Constrained check lines: while a check line's head is written, only the filing's own heads (rule code, figure as
filed, the rule table's threshold) can come out, whatever the model prefers; the outcome keeps to the answer
format's vocabulary for its head (OK/BREACH when two figures are compared, NOT_ASSESSED/DATA_QUALITY when one is
missing); which outcome, data-quality lines, measures and the directive stay the model's."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest
import torch

from evaluation.constrained import (
    COMPARED, FREE_CODE, AnswerWords, HeadConstraint, TokenStrings, allowed_heads, apply_constraints,
    heads_from_reference, next_line_openings, outcomes_for, report_words,
)
from regulator.generator import generate_dataset, us_instance
from regulator.packages import read_filing_file, scan_filings
from regulator.render import family_for_bank, render_target
from finetune.analysis import filing_words
from regulator.render import TEMPLATE_FAMILIES, closings, finding_phrases, remedies
from regulator.rules import evaluate_rules, regime, rendered_entity, rendered_regime
from regulator.xbrl import parse_xbrl_file, render_report
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
    """Random logits (a model with no idea) inside a check line still write one of the filing's heads, then one of
    its outcomes; a second line cannot repeat a checked rule."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    rng = torch.Generator().manual_seed(0)

    def random_head(prefix: str) -> str:
        constraint = HeadConstraint(heads, strings)
        _write(constraint, tokenizer, prefix)
        for _ in range(200):
            logits = torch.randn(1, len(strings.text), generator=rng)
            constraint.push(int(apply_constraints(logits, [constraint]).argmax(-1)))
            if constraint.allowed() is None or next_line_openings("".join(constraint.written).split("\n")[-1]):
                break  # the line is written (its outcome too), or the model is free
        return "".join(constraint.written).split("\n")[-1][2:].partition(":")[0]

    for _ in range(5):
        head = random_head("ANALYSIS:\n-")
        assert head in heads or head.startswith(FREE_CODE), head
    for _ in range(5):  # a checked rule cannot be checked again
        head = random_head(f"ANALYSIS:\n- {heads[0]}: OK\n-")
        assert head != heads[0] and (head in heads or head.startswith(FREE_CODE)), head


def test_outcome_vocabulary_follows_the_head(vocab, filing) -> None:
    """After a head the outcome can only be one its comparison allows; which one, the measures, the directive and
    a data-quality line's wording stay free."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, f"ANALYSIS:\n- {heads[0]}:")
    allowed = {strings.text[i] for i in constraint.allowed()}
    assert outcomes_for(heads[0]) == COMPARED and allowed
    assert all(any(f" {o}".startswith(a) for o in COMPARED) for a in allowed), allowed
    _write(constraint, tokenizer, " BREACH")
    breaks = {strings.text[i] for i in constraint.allowed()}  # the outcome is written: a finding's measure follows
    assert breaks and all(b.startswith("\n") and "  measure:".startswith(b[1:]) for b in breaks), breaks
    _write(constraint, tokenizer, "\n  measure: restore capital")
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


def test_a_missing_figure_cannot_be_a_breach(vocab) -> None:
    """The real failure this guards (bench/NOTES.md levers 32 and 34): ``COMBINED_BUFFER not reported vs 2.5% min:
    BREACH`` on FFIEC extracts without the buffer item, then NOT_ASSESSED where the item is required. A model that
    prefers BREACH (or OK, or NOT_ASSESSED) there writes what a missing required item is: DATA_QUALITY; on a
    template not filed, NOT_ASSESSED."""
    tokenizer, strings = vocab
    cases = {"COMBINED_BUFFER not reported vs 2.5% min": "DATA_QUALITY", "CET1_RATIO nil vs 4.5% min": "DATA_QUALITY",
             "NSFR not filed vs 100% min": "NOT_ASSESSED", "LCR not mapped vs 100% min": "NOT_ASSESSED"}
    for head, expected in cases.items():
        assert outcomes_for(head) == (expected,)
        for prefer in (" BREACH", " OK", " NOT_ASSESSED", " DATA_QUALITY"):
            preferred = set(tokenizer(prefer, add_special_tokens=False)["input_ids"])
            constraint = HeadConstraint([head, "LEVERAGE 7.5737% vs 4% min"], strings)
            _write(constraint, tokenizer, f"ANALYSIS:\n- {head}:")
            while not next_line_openings("".join(constraint.written).split("\n")[-1]):  # until the outcome is written
                logits = torch.zeros(1, len(strings.text))
                logits[0, sorted(preferred)] = 10.0
                constraint.push(int(apply_constraints(logits, [constraint]).argmax(-1)))
            assert "".join(constraint.written).rsplit(": ", 1)[1] == expected, (head, prefer)


def _check_lines(answer: str) -> list[tuple[str, str]]:
    return [tuple(line[2:].rsplit(": ", 1)) for line in answer.splitlines()
            if line.startswith("- ") and ": " in line and not line[2:].startswith(FREE_CODE)]


def test_the_rule_engine_writes_within_the_vocabulary(tmp_path: Path) -> None:
    """Every check line the rule engine writes (generated reports of every kind, and every real filing) ends with an
    outcome its head allows: the constraint never forbids the right answer."""
    table = generate_dataset(120, 11, tmp_path, eu_fraction=0.5, n_train_balanced=120, eu_csv_fraction=0.25,
                             eu_module_fraction=0.3)
    lines = [line for answer in table["target"] for line in _check_lines(answer)]
    real = Path(__file__).parent / "fixtures" / "real"
    for path in scan_filings(real)[0]:  # instances, zips and the FFIEC bulk schedule's banks
        for parsed in read_filing_file(path):
            lines += [tuple(c.line().rsplit(": ", 1)) for c in evaluate_rules(parsed).checks if c.code != FREE_CODE]
    assert len(lines) > 1000 and {o for _, o in lines} >= {"OK", "BREACH", "NOT_ASSESSED", "DATA_QUALITY"}
    assert [(h, o) for h, o in lines if o not in outcomes_for(h)] == []


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


def _prefer(constraint: HeadConstraint, strings: TokenStrings, tokenizer, text: str, steps: int = 12) -> str:
    """Let a model that wants to write ``text`` next write ``steps`` tokens under the constraint; what it wrote."""
    wanted = set(tokenizer(text, add_special_tokens=False)["input_ids"])
    start = len(constraint.written)
    for _ in range(steps):
        logits = torch.zeros(1, len(strings.text))
        logits[0, sorted(wanted)] = 10.0
        constraint.push(int(apply_constraints(logits, [constraint]).argmax(-1)))
    return "".join(constraint.written[start:])


def test_only_a_finding_carries_a_measure(vocab, filing) -> None:
    """The real failure this guards (bench/NOTES.md lever 35): on the EBA module-wise samples the demo's model wrote
    ``CET1_RATIO not filed vs 4.5% min: NOT_ASSESSED`` and then the CET1 remedy under it, as if it had found a
    breach. After a line that finds nothing the next line is a check line or the directive, whatever the model
    prefers; after a finding, its measure line (the measure's words stay the model's)."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    measure = "\n  measure: raise CET1 capital or reduce risk-weighted assets"
    for outcome in ("OK", "NOT_ASSESSED"):
        constraint = HeadConstraint([*heads, "NSFR not filed vs 100% min"], strings)
        head = heads[0] if outcome == "OK" else "NSFR not filed vs 100% min"
        _write(constraint, tokenizer, f"ANALYSIS:\n- {head}: {outcome}")
        written = _prefer(constraint, strings, tokenizer, measure)
        assert written.startswith("\n") and written[1:].startswith(("-", "DIRECTIVE:")), written
        assert "measure" not in written
    for outcome in ("BREACH", "DATA_QUALITY"):
        constraint = HeadConstraint(heads, strings)
        _write(constraint, tokenizer, f"ANALYSIS:\n- {heads[0]}: BREACH" if outcome == "BREACH"
               else "ANALYSIS:\n- DATA_QUALITY leverage assets not reported: DATA_QUALITY")
        written = _prefer(constraint, strings, tokenizer, "\nDIRECTIVE: No measure is imposed")
        assert written.startswith("\n  measure:"), written
        assert constraint.allowed() is None  # the measure's words are the model's


def test_the_directive_waits_for_every_rule_in_force(vocab, filing) -> None:
    """The real failure this guards (bench/NOTES.md lever 44): a model that closed after the buffer line, leaving
    a compliant 051 filer's LEVERAGE rule without its line, sends the filing to review. While a rule in force has
    no line, the line after a non-finding or a measure is a check line (which rule, and its outcome, stay the
    model's); once every rule has its line, the directive may come (or a data-quality line)."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    closing = "\nDIRECTIVE: No measure is imposed on Granite State Bank."
    first = heads[:-1]
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, "ANALYSIS:\n" + "".join(f"- {h}: OK\n" for h in first)[:-1])
    written = _prefer(constraint, strings, tokenizer, closing, steps=30)
    assert written.startswith("\n- ") and "DIRECTIVE" not in written, written  # LEVERAGE's or a data-quality line
    measure = "  measure: restore the leverage ratio above the minimum (12 CFR 324.11(a)(1)(iv)) within 30 days"
    constraint = HeadConstraint(heads, strings, AnswerWords(measures=(measure[len("  measure: "):],)))
    _write(constraint, tokenizer, f"ANALYSIS:\n- {first[0]}: BREACH\n{measure}")
    assert _prefer(constraint, strings, tokenizer, closing).startswith("\n-")
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, "ANALYSIS:\n" + "".join(f"- {h}: OK\n" for h in heads)[:-1])
    assert _prefer(constraint, strings, tokenizer, closing).startswith("\nDIRECTIVE:")


def test_with_every_rule_checked_no_rule_line_comes_again(vocab, filing) -> None:
    """The real failure this guards (bench/NOTES.md lever 50's demo): on the EBA COREP leverage sample a model trained
    on the fp32 budget wrote every rule's line, then ``- CET1_RATIO 3.5% req: OK``, ``- CET1_RATIO 123456789012
    not_a_date: OK`` and more: past the last rule the constraint had let the line go free. Now a further line can only
    be a data-quality finding, whose wording stays the model's."""
    tokenizer, strings = vocab
    heads = allowed_heads(filing[1].checks)
    constraint = HeadConstraint(heads, strings)
    _write(constraint, tokenizer, "ANALYSIS:\n" + "".join(f"- {h}: OK\n" for h in heads) + "-")
    code = heads[0].split(" ", 1)[0]
    written = _prefer(constraint, strings, tokenizer, f" {code} 3.5% req: OK", steps=20)
    assert written.startswith(f" {FREE_CODE}"), written
    assert constraint.allowed() is None  # inside the data-quality line: its words are free


def test_every_reference_answer_is_allowed_token_by_token(vocab, tmp_path: Path) -> None:
    """The rule engine's whole answers (check lines, measures, directive; generated reports of every kind and every
    real filing), fed token by token, never meet a token the constraint forbids: it never rules out the right
    answer."""
    tokenizer, strings = vocab
    table = generate_dataset(120, 12, tmp_path, eu_fraction=0.5, n_train_balanced=120, eu_csv_fraction=0.25,
                             eu_module_fraction=0.3)
    answers = [(heads_from_reference(t), report_words(r, heads_from_reference(t)), t)
               for t, r in zip(table["target"], table["report_text"])]
    real = Path(__file__).parent / "fixtures" / "real"
    for path in scan_filings(real)[0]:  # instances, zips and the FFIEC bulk schedule's banks
        for parsed in read_filing_file(path):
            result = evaluate_rules(parsed)
            assert rendered_regime(render_report(parsed)) == (parsed.jurisdiction, regime(parsed))
            assert rendered_entity(render_report(parsed)) == parsed.entity_name
            answers.append((allowed_heads(result.checks), filing_words(parsed),
                            render_target(parsed, result, family_for_bank(parsed.entity_id))))
    assert {rendered_regime(r)[1] for r in table["report_text"]} == {"EU", "US", "US-CBLR"}
    constrained_steps = 0
    for heads, words, answer in answers:
        constraint = HeadConstraint(heads, strings, words, stops=(0,))
        for i in tokenizer(answer, add_special_tokens=False)["input_ids"]:
            allowed = constraint.allowed()
            assert allowed is None or i in allowed, ("".join(constraint.written)[-80:], strings.text[i])
            constrained_steps += allowed is not None
            constraint.push(i)
    assert len(answers) > 80 and constrained_steps > 5000


def test_a_measure_cites_the_law_of_the_filings_jurisdiction(vocab) -> None:
    """The real failure this guards (bench/NOTES.md lever 37): on real FFIEC extracts with capital lowered, the
    demo's model wrote `raise CET1 capital or reduce risk-weighted assets (CRD Art 104(1)(c)) within 45 days`: an EU
    directive's basis for a US bank. With the filing's remedies a model that prefers the EU text writes one of the
    US ones; which one stays its choice."""
    tokenizer, strings = vocab
    us, cblr = remedies("US", "US"), remedies("US", "US-CBLR")
    eu_text = remedies("EU", "EU")[0]
    assert eu_text not in us and "12 CFR 324.12(c)" in " ".join(cblr) and "12 CFR 324.12(c)" not in " ".join(us)
    constraint = HeadConstraint(["CET1_RATIO 3.6126% vs 4.5% min"], strings, AnswerWords(tuple(us)))
    _write(constraint, tokenizer, "ANALYSIS:\n- CET1_RATIO 3.6126% vs 4.5% min: BREACH\n  measure:")
    written = ""
    while not written.partition("\n")[2] and len(written) < 400:  # until the measure line is closed, one more
        written += _prefer(constraint, strings, tokenizer, f" {eu_text}\n", steps=1)
    line, _, after = written.partition("\n")
    assert line.strip() in us and "CRD" not in written, written
    assert after.startswith(("-", "D")), written  # then the next check line or the directive


def test_the_closing_is_addressed_to_the_bank_and_agrees_with_the_measures(vocab) -> None:
    """The real failure this guards (bench/NOTES.md lever 38): on real FFIEC extracts (no name filed, so the bank is
    its RSSD id) the demo's model closed ``Escalation for 451965: no measure is required.`` under five measures, or
    addressed ``CET1 capital``. With the filing's closings a model that prefers those writes a closing to the bank
    that calls for the measures above (its house style stays its choice), then the answer ends."""
    tokenizer, strings = vocab
    head = "CET1_RATIO 3.6126% vs 4.5% min"
    words = report_words("US FFIEC 031 2026-06-30 451965 (USD m)\nCET1 ratio 3.61%", [head])
    assert rendered_entity("US FFIEC 031 2026-06-30 First Bank (Indiana) (USD m)") == "First Bank (Indiana)"
    assert "Given the reported CET1 ratio 3.6126%, 451965 must take the measures above." in words.closings_due
    assert all("451965" in c for c in words.closings_due + words.closings_none)
    answer = f"ANALYSIS:\n- {head}: BREACH\n  measure: {remedies('US', 'US')[0]}\nDIRECTIVE:"
    for wrong in (" Escalation for 451965: no measure is required.", " CET1 capital: take the measures above."):
        constraint = HeadConstraint([head], strings, words, stops=(0,))
        _write(constraint, tokenizer, answer)
        written = _prefer(constraint, strings, tokenizer, wrong + "\n", steps=40)
        closing, stop, _ = written.partition(strings.text[0])
        assert closing.strip() in words.closings_due and stop, written  # a closing to the bank, then the end
    # no measure written: only a no-measure closing
    constraint = HeadConstraint([head], strings, words, stops=(0,))
    _write(constraint, tokenizer, f"ANALYSIS:\n- {head}: OK\nDIRECTIVE:")
    written = _prefer(constraint, strings, tokenizer, " 451965 is directed to take the measures above.", steps=80)
    assert written.partition(strings.text[0])[0].strip() in words.closings_none, written


def test_closings_cover_every_family_and_finding() -> None:
    """Each house style's two closings, the finding-citing one once per finding phrase; the reference's finding
    (``regulator.render._finding``) is among the phrases of its heads."""
    due, none = closings("B", finding_phrases(["LEVERAGE 3.7293% vs 9% min"]))
    assert len(due) == len(none) and "B: take the measures above." in due and "No escalation for B." in none
    assert "Given the reported CBLR leverage ratio 3.7293%, B must take the measures above." in due
    assert "Given the data-quality findings, no measure is required from B." in none
    assert len(due) == len(TEMPLATE_FAMILIES) - 1 + len(finding_phrases(["LEVERAGE 3.7293% vs 9% min"]))
