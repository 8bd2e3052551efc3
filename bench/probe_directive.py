"""Probe: does a short run teach the directive to follow the findings? Plain PyTorch loop, the project's data.

Starts from a model (``--init``: e.g. the demo's full-FT model, which already writes the right check lines), scores
it, trains ``--steps`` steps on one training set and scores it again. The score isolates the directive: each test
report's prompt is followed by its reference ``ANALYSIS`` (teacher-forced findings) and ``DIRECTIVE:``, and the model
writes the rest; reported are the directive's ROUGE-L against the reference and the share of answers citing exactly
the reference's legal remedies. Training sets, both built from the same training reports of further banks (``--pool``:
the natural mix, or the rebalanced pool whose rules break independently): ``reports`` (each report with its whole
answer, the control) and ``directive`` (directive drills: the report's header line and a note as the prompt, the
body left out, the answer kept, the loss on the directive and its end only).

    python -m bench.probe_directive --init MODEL_DIR --train directive --steps 30
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch

_LEGAL = re.compile(r"CRD Art [\d()a-z]+|CRR Art \d+|12 CFR [\d.]+|12 U\.S\.C\. [\d()a-z]+|Implementing Regulation|"
                    r"next review")


def remedies(directive: str) -> frozenset[str]:
    """The legal remedies a directive cites (``next review`` for a directive without a measure)."""
    return frozenset(m.rstrip(").") for m in _LEGAL.findall(directive))


def score(model, tok, rows: list[dict], *, max_new_tokens: int = 120) -> dict:
    """Directive ROUGE-L and remedy agreement with the findings teacher-forced (see the module docstring)."""
    from rouge_score import rouge_scorer

    from evaluation.generate import generate_token_ids

    prompts = [r["prompt_text"] + r["target"].split("\nDIRECTIVE:")[0] + "\nDIRECTIVE:" for r in rows]
    model.eval()
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ids = generate_token_ids(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts))
    model.train()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge, same = [], 0
    for r, new in zip(rows, ids):
        got, ref = tok.decode(new).strip(), r["directive"]
        rouge.append(scorer.score(ref, got)["rougeL"].fmeasure)
        same += remedies(got) == remedies(ref)
    return {"rouge_l": round(sum(rouge) / len(rouge), 3), "remedies_exact": round(same / len(rows), 3),
            "n": len(rows), "score_s": round(time.perf_counter() - started, 1)}


DIRECTIVE_DRILL_NOTE = ("Directive drill, training only: the report's figures are in the check lines below; write "
                        "the directive its findings call for.")


def directive_example(tok, row: dict):
    """A directive drill from a prepared report row: header line + note as the prompt, the whole answer as the
    continuation, the loss on the text after ``DIRECTIVE:`` and the end token only."""
    from regulator.prompts import render_prompt
    from training.data import Example

    prompt = render_prompt(tok, row["report_text"].split("\n", 1)[0] + "\n" + DIRECTIVE_DRILL_NOTE)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    target = row["target"]
    enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
    start = target.find("\nDIRECTIVE:") + len("\nDIRECTIVE:")
    labels = [i if s >= start else -100 for i, (s, _) in zip(enc["input_ids"], enc["offset_mapping"])]
    return Example([*p, *enc["input_ids"], tok.eos_token_id], [-100] * len(p) + labels + [tok.eos_token_id])


BLOCKS_NOTE = ("Directive drill, training only: each block is a report's header and check lines; write the "
               "directive its findings call for.")


def remedy_spans(directive: str) -> list[tuple[int, int]]:
    """Character spans of the words that decide a directive: every remedy's action and legal basis it cites, or the
    whole directive when it imposes no measure (its wording is the decision)."""
    from regulator.render import _REMEDIES

    phrases = {p for r in _REMEDIES.values() for p in (*r.actions, *r.legal.values()) if p}
    spans = [(m.start(), m.end()) for p in phrases for m in re.finditer(re.escape(p), directive)]
    return spans or [(0, len(directive))]


def blocks_example(tok, rows: list[dict], *, remedy_only: bool):
    """One drill row of several reports: per report its header line, the reference check lines and the directive,
    the loss on the directives (``remedy_only``: on their deciding words, ``remedy_spans``) and the end token."""
    from regulator.prompts import render_prompt
    from training.data import Example

    p = tok(render_prompt(tok, BLOCKS_NOTE), add_special_tokens=False)["input_ids"]
    text, spans = "", []
    for row in rows:
        analysis, _, directive = row["target"].partition("\nDIRECTIVE: ")
        text += row["report_text"].split("\n", 1)[0] + "\n" + analysis + "\nDIRECTIVE: "
        inner = remedy_spans(directive) if remedy_only else [(0, len(directive))]
        spans += [(len(text) + a, len(text) + b) for a, b in inner]
        text += directive + "\n\n"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [i if any(s < b and e > a for a, b in spans) else -100
              for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])]
    return Example([*p, *enc["input_ids"], tok.eos_token_id], [-100] * len(p) + labels + [tok.eos_token_id])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default=None, help="model folder to start from (default: the packaged model)")
    parser.add_argument("--train", choices=("directive", "reports", "blocks"), default="directive")
    parser.add_argument("--blocks", type=int, default=3, help="reports per row of --train blocks")
    parser.add_argument("--remedy-only", action="store_true",
                        help="--train blocks: the loss on each directive's deciding words only (remedy_spans)")
    parser.add_argument("--natural", type=int, default=200)
    parser.add_argument("--natural-train", type=int, default=160,
                        help="further natural-mix reports generated for training (train only)")
    parser.add_argument("--pool", choices=("natural", "balanced"), default="natural",
                        help="the training reports' mix: natural, or the rebalanced pool (rules broken independently)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--test", type=int, default=24, help="test reports scored")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    import pandas as pd
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_contracts.contracts import ContractLimits
    from data_contracts.prepare import prepare_dataset
    from finetune.models import resolve_model
    from regulator.generator import TRAIN_ONLY, generate_dataset
    from bench.probe_decision import train_steps
    from training.data import Example
    from training.objective import answer_only_loss

    torch.manual_seed(args.seed)
    model_dir = args.init or str(resolve_model("packaged"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        raw = generate_dataset(args.natural, args.seed, Path(tmp) / "raw", eu_csv_fraction=0.25)
        if args.pool == "balanced":
            extra = generate_dataset(0, args.seed + 1, Path(tmp) / "extra", eu_csv_fraction=0.25,
                                     n_train_balanced=args.natural_train)
        else:
            extra = generate_dataset(args.natural_train, args.seed + 1, Path(tmp) / "extra", eu_csv_fraction=0.25)
        extra["bank_id"] = "X" + extra["bank_id"].astype(str)  # other banks than the test split's
        extra["id"] = "X" + extra["id"].astype(str)
        extra[TRAIN_ONLY] = True
        raw = pd.concat([raw, extra], ignore_index=True)
        manifest = prepare_dataset(raw=raw, tokenizer=tok, out_dir=Path(tmp), seed=args.seed, max_seq_len=1024,
                                   limits=ContractLimits(max_tokens=1024), split_fractions=(0.4, 0.3, 0.3))
        data = load_from_disk(manifest["dataset_dir"])
        test = [data["test"][i] for i in range(min(args.test, len(data["test"])))]
        train = data["train"]
        rows = [row for row in train if str(row["id"]).startswith("X")]
        if args.train == "blocks":
            examples = [blocks_example(tok, rows[i : i + args.blocks], remedy_only=args.remedy_only)
                        for i in range(0, len(rows) - args.blocks + 1, args.blocks)]
        else:
            examples = [directive_example(tok, r) if args.train == "directive" else
                        Example(list(r["input_ids"]), list(r["labels"])) for r in rows]
        tokens = sum(len(e.input_ids) for e in examples) / len(examples)
        labelled = sum(sum(label != -100 for label in e.labels) for e in examples) / len(examples)
        print(json.dumps({"train": args.train, "examples": len(examples), "tokens_per_example": round(tokens, 1),
                          "loss_tokens_per_example": round(labelled, 1)}), flush=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    print(json.dumps({"step": 0, **score(model, tok, test)}), flush=True)
    started = time.perf_counter()
    speed: list[float] = []
    train_steps(model, list(model.parameters()), examples, steps=args.steps, lr=args.lr, micro=args.micro, accum=1,
                seed=args.seed, pad=pad, bf16=True, loss_fn=answer_only_loss,
                after_step=lambda step, loss, tokens_per_s: speed.append(tokens_per_s))
    train_s = time.perf_counter() - started
    print(json.dumps({"step": args.steps, "train_s": round(train_s, 1), "tok_s": round(speed[-1], 1),
                      **score(model, tok, test)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
