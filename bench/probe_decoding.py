"""Probe: one trained model's answers on a run's generated test split under each decoding of check lines, scored as
the evaluation scores them (``evaluation.metrics.score_predictions``).

    python -m bench.probe_decoding --model runs/<run>/train_full/model --dataset .cache/stages/prepare_data/<key>/dataset

Modes: ``free`` (nothing constrained), ``heads`` (heads, outcomes and the line after a check line; measure words
free) and ``measures`` (the same, and each measure line one of the law table's remedies for the filing's
jurisdiction and US framework: ``regulator.render.remedies``) and ``closings`` (the same, and the directive's
closing one addressed to the filing's bank that agrees with the measures written: ``regulator.render.closings``).
Prints one table and writes ``bench/results/probe_decoding.json``. Used for bench/NOTES.md levers 37 and 38: does
holding the measure to the law table, or the closing to the bank and the measures, change the decisions or the
directive on the generated test split?
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evaluation.constrained import AnswerWords, heads_from_reference, report_words
from evaluation.generate import generate_answers, load_model_for_eval
from evaluation.metrics import score_predictions
from foundation.paths import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "probe_decoding.json"
MODES = ("free", "heads", "measures", "closings")
ROWS = ("f1_micro", "f1_macro", "check_accuracy", "exact_match", "rouge_l", "parse_rate")


def run(model: Path, dataset: Path, modes: tuple[str, ...], cap: int | None, max_new_tokens: int) -> dict:
    """Each mode's scores and seconds on the test split (the first ``cap`` rows when capped)."""
    from datasets import load_from_disk

    test = load_from_disk(str(dataset))["test"]
    if cap is not None:
        test = test.select(range(min(cap, len(test))))
    refs, prompts, reports = list(test["target"]), list(test["prompt_text"]), list(test["report_text"])
    loaded, tokenizer = load_model_for_eval(model)
    out: dict = {"model": str(model), "dataset": str(dataset), "n": len(refs)}
    for mode in modes:
        heads = None if mode == "free" else [heads_from_reference(r) for r in refs]
        words = [_words(mode, t, h) for t, h in zip(reports, heads)] if heads is not None else None
        started = time.monotonic()
        answers = generate_answers(loaded, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=48,
                                   heads=heads, words=words)
        scores = score_predictions(refs, answers, n_bootstrap=200)
        out[mode] = {"scores": {k: scores.get(k) for k in ROWS}, "seconds": round(time.monotonic() - started, 1),
                     "answers": answers}
    return out


def _words(mode: str, report_text: str, heads: list[str]) -> AnswerWords:
    """What a mode holds beyond the heads: nothing, the measures, or the measures and the closings."""
    words = report_words(report_text, heads)
    if mode == "closings":
        return words
    return AnswerWords(measures=words.measures) if mode == "measures" else AnswerWords()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (a run's train_full/model)")
    parser.add_argument("--dataset", type=Path, required=True, help="a prepare_data stage's dataset folder")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=448)
    args = parser.parse_args()
    out = run(args.model, args.dataset, tuple(args.modes), args.max_examples, args.max_new_tokens)
    print(f"{'':<16}" + "".join(f"{m:>12}" for m in args.modes))
    for row in (*ROWS, "seconds"):
        cells = [out[m]["seconds"] if row == "seconds" else out[m]["scores"][row] for m in args.modes]
        print(f"{row:<16}" + "".join(f"{c:>12.3f}" if isinstance(c, float) else f"{c!s:>12}" for c in cells))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS, out)
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
