"""Metrics against hand-computed figures (the arithmetic is written next to each assertion)."""

from __future__ import annotations

import json
import math

import pytest

from evaluation.metrics import paired_bootstrap, score_predictions
from foundation.errors import EvaluationError

REFERENCES = [
    "ANALYSIS:\n- CET1_RATIO 3.51% vs 4.5% min: BREACH\n- LEVERAGE 6.94% vs 3% min: OK\n"
    "DIRECTIVE: the bank must restore capital",
    "ANALYSIS:\n- LCR 80.00% vs 100% min: BREACH\n- NSFR 90.00% vs 100% min: BREACH\n"
    "DIRECTIVE: submit a liquidity plan",
    "ANALYSIS:\n- CET1_RATIO 12.00% vs 4.5% min: OK\nDIRECTIVE: no action is required",
]
PREDICTIONS = [
    # Right on CET1, a false LEVERAGE breach.
    "ANALYSIS:\n- CET1_RATIO 3.51% vs 4.5% min: BREACH\n- LEVERAGE 6.94% vs 3% min: BREACH\n"
    "DIRECTIVE: the bank must restore capital",
    # Finds LCR, misses NSFR (calls it OK), shorter directive.
    "ANALYSIS:\n- LCR 80.00% vs 100% min: BREACH\n- NSFR 90.00% vs 100% min: OK\nDIRECTIVE: submit plan",
    # Unparseable: predicts nothing.
    "I am not sure what to say about this bank.",
]


@pytest.fixture(scope="module")
def scores() -> dict:
    return score_predictions(REFERENCES, PREDICTIONS, n_bootstrap=200, seed=1)


def test_violation_f1_micro(scores: dict) -> None:
    # example x code pairs: ex1 tp CET1, fp LEVERAGE; ex2 tp LCR, fn NSFR; ex3 nothing on either side.
    # tp=2 fp=1 fn=1 -> P = 2/3, R = 2/3, F1 = 2*2 / (2*2 + 1 + 1) = 4/6 = 2/3
    assert scores["precision_micro"] == pytest.approx(2 / 3)
    assert scores["recall_micro"] == pytest.approx(2 / 3)
    assert scores["f1_micro"] == pytest.approx(2 / 3)


def test_per_code_and_macro(scores: dict) -> None:
    per = scores["per_code"]
    # CET1: tp 1 -> P 1, R 1, F1 1.  LCR: same.
    assert per["CET1_RATIO"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "predicted": 1}
    assert per["LCR"]["f1"] == 1.0
    # LEVERAGE: fp 1, no support -> P 0/1 = 0, R undefined (None), F1 = 0 / (0 + 1 + 0) = 0.
    assert per["LEVERAGE"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0, "predicted": 1}
    # NSFR: fn 1, never predicted -> P undefined (None), R 0/1 = 0, F1 = 0.
    assert per["NSFR"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    # Codes nobody mentions have no F1.
    assert per["T1_RATIO"]["f1"] is None and per["DATA_QUALITY"]["f1"] is None
    # macro over the 4 codes with a defined F1: (1 + 0 + 1 + 0) / 4 = 0.5
    assert scores["f1_macro"] == pytest.approx(0.5)


def test_exact_match_checks_parse_rate(scores: dict) -> None:
    # exact: ex1 {CET1,LEV} != {CET1}; ex2 {LCR} != {LCR,NSFR}; ex3 {} == {} -> 1/3
    assert scores["exact_match"] == pytest.approx(1 / 3)
    # reference check lines: ex1 CET1 BREACH (ok), LEVERAGE OK (model BREACH); ex2 LCR (ok), NSFR BREACH (model OK);
    # ex3 CET1 OK (model has no line) -> 2 right of 5 = 0.4
    assert scores["check_accuracy"] == pytest.approx(0.4)
    assert scores["spurious_checks_per_answer"] == 0.0
    # parse rate: ex1 and ex2 have check lines, ex3 has none -> 2/3
    assert scores["parse_rate"] == pytest.approx(2 / 3)
    assert scores["n_examples"] == 3


def test_rouge_l(scores: dict) -> None:
    # ex1 identical -> 1.  ex2 ref "submit a liquidity plan" (4 tokens), pred "submit plan" (2): LCS = 2,
    # P = 2/2 = 1, R = 2/4 = 0.5, F = 2*1*0.5 / 1.5 = 2/3.  ex3 empty directive -> 0.  mean = (1 + 2/3 + 0)/3 = 5/9
    assert scores["rouge_l"] == pytest.approx(5 / 9)


def test_bootstrap_cis_bracket_the_estimate_and_are_json(scores: dict) -> None:
    assert scores["n_bootstrap"] == 200
    assert 0.0 <= scores["f1_micro_ci_low"] <= scores["f1_micro"] <= scores["f1_micro_ci_high"] <= 1.0
    assert 0.0 <= scores["rouge_l_ci_low"] <= scores["rouge_l"] <= scores["rouge_l_ci_high"] <= 1.0
    json.dumps(scores, allow_nan=False)
    again = score_predictions(REFERENCES, PREDICTIONS, n_bootstrap=200, seed=1)
    assert again == scores  # seeded


def test_perfect_predictions_have_degenerate_ci() -> None:
    # every resample of a perfect system has F1 1 and ROUGE-L 1 -> CI [1, 1]
    s = score_predictions(REFERENCES, REFERENCES, n_bootstrap=50)
    assert s["f1_micro"] == s["f1_micro_ci_low"] == s["f1_micro_ci_high"] == 1.0
    assert s["rouge_l_ci_low"] == s["rouge_l_ci_high"] == pytest.approx(1.0)
    assert s["exact_match"] == s["check_accuracy"] == s["parse_rate"] == 1.0


def test_paired_bootstrap() -> None:
    garbage = ["no idea"] * 3
    # A perfect (F1 1), B predicts nothing (tp 0, fn 3 -> F1 0): difference 1 in every resample with a positive.
    result = paired_bootstrap(REFERENCES, REFERENCES, garbage, n_bootstrap=100, seed=3)
    f1 = result["f1_micro"]
    assert (f1["a"], f1["b"], f1["difference"]) == (1.0, 0.0, 1.0)
    assert f1["ci_low"] == f1["ci_high"] == 1.0
    assert f1["p_not_better"] == 0.0
    # A against itself: every resample differs by 0.
    same = paired_bootstrap(REFERENCES, PREDICTIONS, PREDICTIONS, n_bootstrap=100)
    assert same["f1_micro"]["ci_low"] == same["f1_micro"]["ci_high"] == 0.0
    assert same["rouge_l"]["difference"] == 0.0
    json.dumps(result, allow_nan=False)


def test_paired_bootstrap_detects_the_worse_system() -> None:
    result = paired_bootstrap(REFERENCES, PREDICTIONS, REFERENCES, n_bootstrap=200)
    # A = the flawed predictions (F1 2/3) minus B = perfect (1): difference -1/3, CI upper end <= 0
    assert result["f1_micro"]["difference"] == pytest.approx(-1 / 3)
    assert result["f1_micro"]["ci_high"] <= 0.0
    assert result["f1_micro"]["p_not_better"] == 1.0


def test_errors_name_the_problem() -> None:
    with pytest.raises(EvaluationError, match="3 references but 2 predictions"):
        score_predictions(REFERENCES, PREDICTIONS[:2])
    with pytest.raises(EvaluationError, match="empty"):
        score_predictions([], [])
    with pytest.raises(EvaluationError, match="reference"):
        score_predictions(["not an answer"], ["VIOLATIONS: NONE"])


# --- forgetting (general-domain NLL) -------------------------------------------------------------------------------


def test_general_prompt_splits_are_disjoint() -> None:
    from evaluation.forgetting import load_general_prompts

    heldout, replay = load_general_prompts("heldout"), load_general_prompts("replay")
    assert len(heldout) >= 10 and len(replay) >= 10
    assert not set(heldout) & set(replay)


def test_answer_nll_matches_hf_loss_and_is_batch_invariant(tiny_model_dir) -> None:
    import torch

    from evaluation.forgetting import answer_nll, chat_prompt
    from evaluation.generate import load_model_for_eval

    torch.set_num_threads(2)
    model, tok = load_model_for_eval(tiny_model_dir)
    prompts = ["What is 2+2?", "Name a colour.", "Say hello."]
    answers = ["2+2 is 4.", "Blue", "Hello there, how are you today?"]
    singles = [answer_nll(model, tok, [p], [a]) for p, a in zip(prompts, answers)]
    # one example: the HF causal-LM loss with the prompt masked is the same teacher-forced mean NLL
    p_ids = tok(chat_prompt(tok, prompts[0]), add_special_tokens=False)["input_ids"]
    a_ids = tok(answers[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = model(input_ids=torch.tensor([p_ids + a_ids]), labels=torch.tensor([[-100] * len(p_ids) + a_ids])).loss
    assert singles[0]["mean_nll"] == pytest.approx(hf.item(), rel=1e-5)
    assert singles[0]["n_tokens"] == len(a_ids)
    # batched (right-padded) = token-weighted mean of the single results
    batched = answer_nll(model, tok, prompts, answers, batch_size=3)
    expected = sum(s["mean_nll"] * s["n_tokens"] for s in singles) / sum(s["n_tokens"] for s in singles)
    assert batched["mean_nll"] == pytest.approx(expected, rel=1e-5)
    assert batched["perplexity"] == pytest.approx(math.exp(batched["mean_nll"]))


def test_forgetting_increase() -> None:
    from evaluation.forgetting import forgetting_increase

    assert forgetting_increase(2.0, 2.2) == pytest.approx(0.1)  # (2.2 - 2.0) / 2.0
    assert forgetting_increase(2.0, 1.8) == pytest.approx(-0.1)
    with pytest.raises(EvaluationError, match="tuned_nll"):
        forgetting_increase(2.0, math.nan)
    with pytest.raises(EvaluationError, match="positive"):
        forgetting_increase(0.0, 1.0)


# --- report ----------------------------------------------------------------------------------------------------------


def test_report_table_examples_and_plots(scores: dict, tmp_path) -> None:
    from evaluation.report import (
        comparison_rows,
        plot_loss_curves,
        plot_per_code_f1,
        render_comparison_markdown,
        render_examples_markdown,
        select_examples,
    )

    perfect = score_predictions(REFERENCES, REFERENCES, n_bootstrap=20)
    systems = {
        "base": {"scores": score_predictions(REFERENCES, ["?"] * 3, n_bootstrap=20)},
        "lora": {"scores": scores, "forgetting": 0.02,
                 "training": {"trainable_params": 1_200_000, "train_seconds": 125.0, "tokens_per_second": 410.5}},
        "full": {"scores": perfect, "forgetting": 0.05,
                 "training": {"trainable_params": 134_515_008, "train_seconds": 3725.0, "tokens_per_second": 312.0}},
    }
    rows = comparison_rows(systems)
    json.dumps(rows, allow_nan=False)
    assert [r["system"] for r in rows] == ["base", "lora", "full"]
    assert rows[1]["f1_micro"] == pytest.approx(2 / 3) and rows[2]["f1_CET1_RATIO"] == 1.0
    md = render_comparison_markdown(rows)
    assert "| violation F1 (micro) | 0.000 | 0.667 | 1.000 |" in md
    assert "134,515,008" in md and "1h 02m" in md and "+5.0%" in md and "| LEVERAGE | — | 0.000 | — |" in md

    preds = {"lora": PREDICTIONS, "full": REFERENCES}
    picked = select_examples(REFERENCES, preds, n=2)
    assert picked == [0, 1]  # examples 0 and 1 are where LoRA's verdict differs; example 2 agrees (both empty)
    examples = render_examples_markdown(REFERENCES, preds, picked, ids=["a", "b", "c"])
    assert examples.count("\n| a |") == 1 and "<br>" in examples and "| reference | lora | full |" in examples

    log_full, log_lora = tmp_path / "full.jsonl", tmp_path / "lora.jsonl"
    log_full.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / s}) for s in range(1, 6)) + "\n"
                        + json.dumps({"step": 5, "eval_loss": 0.5}) + "\n")
    log_lora.write_text("\n".join(json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-4}) for s in range(1, 6)))
    for png in (plot_per_code_f1({n: s["scores"] for n, s in systems.items()}, tmp_path / "f1.png"),
                plot_loss_curves({"full": log_full, "lora": log_lora}, tmp_path / "loss.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.jsonl").write_text('{"note": "no steps"}\n')
    with pytest.raises(EvaluationError, match="no records"):
        plot_loss_curves({"x": tmp_path / "empty.jsonl"}, tmp_path / "bad.png")


def test_a_not_assessed_line_is_read_but_not_counted_as_a_decision() -> None:
    """``NOT_ASSESSED`` lines parse (with a space too) and never imply a violation; check-line accuracy counts the
    rules the engine decided, so the statement neither inflates nor, when left out, lowers it."""
    from regulator.answers import parse_answer

    ref = ("ANALYSIS:\n- LCR 90.00% vs 100% min: BREACH\n- LARGE_EXPOSURE not mapped vs 25% limit: NOT_ASSESSED\n"
           "DIRECTIVE: Restore the LCR.")
    parsed = parse_answer(ref.replace("NOT_ASSESSED", "not assessed"))
    assert parsed.checks == {"LCR": "BREACH", "LARGE_EXPOSURE": "NOT_ASSESSED"} and parsed.violations == {"LCR"}
    without = "ANALYSIS:\n- LCR 90.00% vs 100% min: BREACH\nDIRECTIVE: Restore the LCR."
    for prediction in (ref, without):
        scores = score_predictions([ref], [prediction], n_bootstrap=10)
        assert scores["check_accuracy"] == 1.0 and scores["f1_micro"] == 1.0
