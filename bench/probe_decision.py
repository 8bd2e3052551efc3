"""Probe: does a short full fine-tuning (or LoRA) run learn the breach decision? Plain PyTorch loop, the project's data.

Prints, every ``--eval-every`` optimizer steps, the teacher-forced check-line accuracy and violation F1 on the
validation split (``evaluation.teacher_forced``), per-code accuracy, and training tokens/s. Used to choose the
learning rate, batch and data mix of the CPU demo before spending half an hour on a full run (bench/NOTES.md).

    python -m bench.probe_decision --natural 200 --balanced 400 --lr 2e-4 --steps 60 --eval-every 15
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch


def pad_percentages(text: str) -> str:
    """``4.5%`` -> ``004.50%``, ``-0.49%`` -> ``-000.49%``, ``115.60%`` unchanged: digits of equal place value line up."""
    import re

    def pad(m: "re.Match[str]") -> str:
        decimals = (m.group(3) or "").ljust(2, "0")
        return f"{m.group(1)}{int(m.group(2)):03d}.{decimals}%"

    return re.sub(r"(-?)(\d+)(?:\.(\d+))?%", pad, text)


def comparator_word_lines() -> None:
    """Patch ``regulator.rules.check_rule`` (and the drills' copy) so every comparison line says how the figure
    stands to its threshold before the outcome: ``3.51% vs 4.5% min, below: BREACH``, ``7.93% vs 25% limit,
    below: OK``. The outcome is then that word read through the rule's kind."""
    import dataclasses

    import regulator.drills
    import regulator.rules

    plain = regulator.rules.check_rule

    def check_rule(rule, parsed):
        check = plain(rule, parsed)
        if check.figure is None or check.threshold is None:
            return check
        diff = round(check.figure - check.threshold, 10)
        word = "below" if diff < 0 else "above" if diff > 0 else "at"
        return dataclasses.replace(check, detail=f"{check.detail}, {word}")

    regulator.rules.check_rule = check_rule
    regulator.drills.check_rule = check_rule


def generated_scores(model: torch.nn.Module, tok, rows: dict, *, max_new_tokens: int, bf16: bool) -> dict:
    """Greedy-generate the answers of ``rows`` (a split's ``input_ids``, ``labels``, ``target``) and score their
    check lines: accuracy and violation F1 (micro) as the evaluate stage computes them (``score_predictions``), and
    the accuracy per code (a line left out counts as wrong)."""
    from evaluation.generate import generate_answers
    from evaluation.metrics import score_predictions
    from regulator.answers import parse_answer

    prompts = [tok.decode(ids[:next(i for i, label in enumerate(labels) if label != -100)])
               for ids, labels in zip(rows["input_ids"], rows["labels"])]
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        answers = generate_answers(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts))
    scores = score_predictions(rows["target"], answers, n_bootstrap=1)  # point figures only: no CI wanted
    right: dict[str, list[int]] = {}
    for target, answer in zip(rows["target"], answers):
        got = parse_answer(answer).checks
        for code, outcome in parse_answer(target).checks.items():
            right.setdefault(code, []).append(int(got.get(code) == outcome))
    return {"gen_check_acc": scores["check_accuracy"], "gen_f1": scores["f1_micro"],
            "gen_per_code": {code: round(sum(v) / len(v), 2) for code, v in sorted(right.items())}}


def train_steps(model: torch.nn.Module, params: list, examples: list, *, steps: int, lr: float, micro: int,
                accum: int, seed: int, pad: int, bf16: bool, loss_fn: Callable,
                after_step: Callable[[int, float, float], None] | None = None) -> None:
    """A plain AdamW loop (5% warmup, cosine to 10%, clip 1.0) over ``examples`` for ``steps`` optimizer steps of
    ``micro`` x ``accum`` examples; ``loss_fn(model, batch)`` gives a micro-batch's loss, ``after_step(step, loss,
    tokens_per_s)`` runs after each step (it may score the model: put it back in train mode)."""
    from training.data import MicroBatches
    from training.schedule import build_scheduler

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = build_scheduler(opt, total_steps=steps, warmup_ratio=0.05, min_lr_ratio=0.1)
    stream = MicroBatches(examples, micro, accum, 1, 0, seed, pad)
    step, tokens, train_s, epoch = 0, 0, 0.0, 0
    model.train()
    while step < steps:
        for _, micro_batches in stream.iter_steps(epoch):
            started = time.perf_counter()
            losses = []
            for batch in micro_batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(model, batch)
                (loss / len(micro_batches)).backward()
                losses.append(float(loss))
                tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            train_s += time.perf_counter() - started
            if after_step is not None:
                after_step(step, sum(losses) / len(losses), tokens / train_s)
            if step >= steps:
                break
        epoch += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--natural", type=int, default=200, help="natural-mix reports (split train/val/test)")
    parser.add_argument("--balanced", type=int, default=400, help="rebalanced training-only reports")
    parser.add_argument("--split", type=float, nargs=3, default=(0.4, 0.3, 0.3))
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=15)
    parser.add_argument("--eval-examples", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=0, help="train a LoRA adapter of this rank instead of full FT")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--hf-loss", action="store_true", help="HF's full-logits loss instead of answer-only logits")
    parser.add_argument("--decision-weight", type=float, default=1.0, help="loss weight of the outcome tokens")
    parser.add_argument("--show-errors", action="store_true", help="print each wrong check line at the last point")
    parser.add_argument("--pad-percentages", action="store_true",
                        help="probe a place-value-aligned number format: every percentage in the report and the "
                             "answer written with a 3-digit integer part and at least 2 decimals (4.5% -> 004.50%)")
    parser.add_argument("--aligned-thresholds", action="store_true",
                        help="probe constant thresholds written like the figures, with two decimals (4.5% -> 4.50%, "
                             "100% -> 100.00%), so that the figure and the threshold of a check line line up")
    parser.add_argument("--limit-word", default="limit",
                        help="the word after a limit rule's threshold in a check line (`25% limit`), e.g. `max`")
    parser.add_argument("--drills", type=int, default=0, help="add this many decision drills (regulator.drills)")
    parser.add_argument("--drill-lines", type=int, default=24)
    parser.add_argument("--drill-spread", type=int, nargs="+", default=[1],
                        help="factors of a drill's healthy margin (regulator.drills.generate_drills spread)")
    parser.add_argument("--drills-only", action="store_true", help="train on the drills alone")
    parser.add_argument("--drills-first", action="store_true", help="the drills open the run, the reports follow")
    parser.add_argument("--drill-weight", nargs="*", default=[], metavar="CODE=N",
                        help="draw weight of a rule in the drills (regulator.drills.generate_drills weights)")
    parser.add_argument("--comparator-word", action="store_true",
                        help="check lines say below/above/at before the outcome (comparator_word_lines)")
    parser.add_argument("--generate", type=int, default=0,
                        help="also greedy-generate this many validation answers at each point and score them")
    parser.add_argument("--generate-tokens", type=int, default=200, help="new tokens per generated answer")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from data_contracts.contracts import ContractLimits
    from data_contracts.prepare import prepare_dataset
    from evaluation.teacher_forced import decision_scores, load_decision_examples, outcome_token_ids, predict_outcomes
    import pandas as pd
    from datasets import load_from_disk

    from finetune.models import resolve_model
    import regulator.rules
    from regulator.drills import DRILL, generate_drills
    from regulator.generator import generate_dataset
    from training.data import load_examples
    from training.full_ft import decision_weight, load_trainable_model
    from training.objective import answer_only_loss

    torch.manual_seed(args.seed)
    model_dir = str(resolve_model("packaged"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bf16 = args.precision == "bf16"
    if args.limit_word != "limit":
        regulator.rules._SHORT_LABEL["limit"] = args.limit_word
    if args.comparator_word:
        comparator_word_lines()
    if args.aligned_thresholds:
        from regulator.xbrl import format_ratio

        regulator.rules.format_threshold = format_ratio
    with tempfile.TemporaryDirectory() as tmp:
        raw = generate_dataset(args.natural, args.seed, Path(tmp) / "raw", n_train_balanced=args.balanced)
        if args.drills:
            weights = {code: int(n) for code, n in (w.split("=") for w in args.drill_weight)}
            drills = generate_drills(args.drills, args.seed, args.drill_lines, spread=tuple(args.drill_spread),
                                     weights=weights or None)
            raw = pd.concat([raw, drills], ignore_index=True)
        if args.pad_percentages:
            for column in ("report_text", "target"):
                raw[column] = raw[column].map(pad_percentages)
        manifest = prepare_dataset(raw=raw, tokenizer=tok, out_dir=Path(tmp), seed=args.seed, max_seq_len=1024,
                                   limits=ContractLimits(max_tokens=1024), split_fractions=tuple(args.split))
        print("rows", manifest["rows"], "tokens", {k: v["tokens"]["mean"] for k, v in
                                                   manifest["stats"]["splits"].items()}, flush=True)
        drills_marked = args.drills_first or args.drills_only
        examples = load_examples(Path(manifest["dataset_dir"]), "train", (DRILL,) if drills_marked else ())
        if args.drills_only:
            examples = [ex for ex in examples if ex.first]
        val = load_decision_examples(manifest["dataset_dir"], tok, limit=args.eval_examples)
        val_rows = load_from_disk(manifest["dataset_dir"])["validation"].select(
            range(min(args.generate, args.eval_examples))).to_dict() if args.generate else None
    model = load_trainable_model(model_dir, seed=args.seed, gradient_checkpointing=False)
    if args.lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]

    decision = decision_weight(tok, args.decision_weight)

    def evaluate(step: int, seen: int) -> None:
        started = time.perf_counter()
        predicted = predict_outcomes(model, val, outcome_token_ids(tok), pad_id=pad, bf16=bf16)
        s = decision_scores(val, predicted)
        if args.show_errors and step == args.steps:
            for ex, outcomes in zip(val, predicted):
                for (pos, _, ref), got in zip(ex.decisions, outcomes):
                    if ref != got:
                        line = tok.decode(ex.input_ids[max(0, pos - 14):pos]).split("\n")[-1]
                        print(f"  wrong: {line!r} -> {got} (reference {ref})", flush=True)
        generated = generated_scores(model, tok, val_rows, max_new_tokens=args.generate_tokens,
                                     bf16=bf16) if val_rows else {}
        print(json.dumps({"step": step, "examples_seen": seen, "tf_f1": s["tf_f1_micro"],
                          "tf_check_acc": s["tf_check_accuracy"], "per_code": s["tf_per_code_accuracy"],
                          **generated, "eval_s": round(time.perf_counter() - started, 1)}), flush=True)

    evaluate(0, 0)

    def after_step(step: int, loss: float, tokens_per_s: float) -> None:
        print(f"step {step} loss {loss:.4f} tok/s {tokens_per_s:.1f}", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step, step * args.micro * args.accum)
            model.train()

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return model(**batch).loss if args.hf_loss else answer_only_loss(model, batch, decision)

    train_steps(model, params, examples, steps=args.steps, lr=args.lr, micro=args.micro, accum=args.accum,
                seed=args.seed, pad=pad, bf16=bf16, loss_fn=loss_fn, after_step=after_step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
