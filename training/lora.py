"""peft LoRA baseline: the same data, token budget and schedule shape as full fine-tuning, its own learning rate.

Why LoRA gets a higher learning rate (default 2e-4 vs 2e-5 for full FT): the adapter's B matrix starts at zero
and the update is ``(alpha / r) * B @ A`` on a rank-r subspace, so each optimizer step moves the function far less
than a full-rank step of the same size; at full-FT learning rates the adapter barely leaves zero in a short run.
LoRA papers and recipes (e.g. QLoRA, Axolotl/LLaMA-Factory defaults) use 1e-4 to 3e-4. A fair baseline tunes it.

Runs in-process on one process with a plain torch AdamW loop (the adapter is small, DeepSpeed buys nothing);
writes the same ``metrics.jsonl`` records as full FT, the adapter to ``output_dir/adapter`` (standard peft files)
and, when asked, the merged model to ``output_dir/merged``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from foundation.errors import ConfigError, TrainingError
from foundation.memory_reuse import reusing_freed_memory
from foundation.paths import building, write_json_atomic
from training.data import MicroBatches
from training.full_ft import (METRICS_FILE, SUMMARY_FILE, MetricsLog, TrainSpec, decision_weight,
                              load_trainable_model, load_training_examples, planned_steps)
from training.curve import LearningCurve
from training.objective import answer_only_loss
from training.schedule import build_scheduler

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


@dataclass
class LoraSpec:
    """A LoRA run. ``target_modules`` "all-linear" means every linear layer except the output head (peft's rule)."""

    model_dir: str
    dataset_dir: str
    output_dir: str
    micro_batch_size: int = 4
    grad_accum_steps: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-4
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    gradient_checkpointing: bool = False
    replay_file: str | None = None
    replay_fraction: float = 0.0
    log_every_steps: int = 1
    merge: bool = False
    split: str = "train"
    curve_points: int = 0
    curve_examples: int = 32
    curve_start: bool = True
    decision_weight: float = 1.0
    directive_weight: float = 1.0
    first_case_kinds: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def matching(cls, full: TrainSpec, *, output_dir: str, world_size: int = 1, **overrides: Any) -> "LoraSpec":
        """A LoRA spec with the same data, token budget and schedule shape as a full-FT spec.

        One process accumulates ``world_size`` times more micro-batches so each optimizer step sees the same
        examples as the full-FT step on ``world_size`` ranks (the batch plan is then identical, see training.data).
        """
        ds = full.resolved_ds_config()
        params = ds.get("optimizer", {}).get("params", {})
        values: dict[str, Any] = dict(
            model_dir=full.model_dir, dataset_dir=full.dataset_dir, output_dir=output_dir,
            micro_batch_size=int(ds["train_micro_batch_size_per_gpu"]),
            grad_accum_steps=int(ds.get("gradient_accumulation_steps", 1)) * world_size,
            epochs=full.epochs, max_steps=full.max_steps, warmup_ratio=full.warmup_ratio,
            min_lr_ratio=full.min_lr_ratio, weight_decay=params.get("weight_decay", 0.0),
            betas=tuple(params.get("betas", (0.9, 0.999))), grad_clip=ds.get("gradient_clipping", 1.0),
            bf16=bool(ds.get("torch_autocast", {}).get("enabled") or ds.get("bf16", {}).get("enabled")),
            seed=full.seed, gradient_checkpointing=full.gradient_checkpointing, replay_file=full.replay_file,
            replay_fraction=full.replay_fraction, log_every_steps=full.log_every_steps, split=full.split,
            curve_points=full.curve_points, curve_examples=full.curve_examples,
            decision_weight=full.decision_weight, directive_weight=full.directive_weight,
            first_case_kinds=list(full.first_case_kinds),
        )
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        """Raise ConfigError listing every invalid field."""
        problems = []
        for name in ("micro_batch_size", "grad_accum_steps", "epochs", "r", "log_every_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.alpha <= 0:
            problems.append(f"alpha: must be > 0, got {self.alpha}")
        if problems:
            raise ConfigError(problems, source="LoRA spec")


def _save_tokenizer_and_generation(model_dir: str, out: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(model_dir).save_pretrained(out)
    except OSError:
        pass  # the base folder has none; the merged model's save_pretrained wrote a default one


def train_lora(spec: LoraSpec, *, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a LoRA adapter in this process; return the summary (also written to ``output_dir/train_summary.json``).

    Freed memory is kept for reuse while it trains and handed back when it ends (foundation/memory_reuse.py).
    Raises ConfigError for a bad spec and TrainingError on a NaN/inf loss or an adapter that does not save.
    """
    with reusing_freed_memory():
        return _train_lora(spec, progress)


def _train_lora(spec: LoraSpec, progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """The body of :func:`train_lora`."""
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoTokenizer

    spec.validate()
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "lora_spec.json", asdict(spec))
    tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples, n_replay = load_training_examples(
        dataset_dir=Path(spec.dataset_dir), split=spec.split, tokenizer=tokenizer, replay_file=spec.replay_file,
        replay_fraction=spec.replay_fraction, seed=spec.seed, first_case_kinds=spec.first_case_kinds,
    )
    stream = MicroBatches(examples, spec.micro_batch_size, spec.grad_accum_steps, 1, 0, spec.seed, pad_id)
    total_steps = planned_steps(stream, spec.epochs, spec.max_steps)
    decision = decision_weight(tokenizer, spec.decision_weight, spec.directive_weight)
    base = load_trainable_model(spec.model_dir, seed=spec.seed, gradient_checkpointing=spec.gradient_checkpointing)
    lora_config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                             target_modules=spec.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(base, lora_config)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable_params)
    n_total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(trainable_params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_ratio=spec.warmup_ratio,
                                min_lr_ratio=spec.min_lr_ratio)

    metrics = MetricsLog(out / METRICS_FILE, enabled=True)
    curve = LearningCurve(out, tokenizer, spec.dataset_dir, points=spec.curve_points, total_steps=total_steps,
                          examples=spec.curve_examples, examples_per_step=spec.micro_batch_size * spec.grad_accum_steps,
                          bf16=spec.bf16, start=spec.curve_start)
    start = time.perf_counter()  # before the first curve point: its scoring is subtracted like the others
    curve.maybe_score(model, 0)
    bar = tqdm(total=total_steps, file=sys.stderr, desc="LoRA", mininterval=1)
    step, tokens_total, loss_value = 0, 0, float("nan")
    model.train()
    try:
        for epoch in range(spec.epochs):
            for _, micro_batches in stream.iter_steps(epoch):
                if step >= total_steps:
                    break
                lr = scheduler.get_last_lr()[0]
                losses = []
                for batch in micro_batches:
                    with torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16,
                                        enabled=spec.bf16):
                        loss = answer_only_loss(model, batch, decision)
                    (loss / len(micro_batches)).backward()
                    losses.append(float(loss.detach()))
                    tokens_total += int(batch["attention_mask"].sum())
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable_params, spec.grad_clip or float("inf"))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_value = sum(losses) / len(losses)
                if not math.isfinite(loss_value):
                    raise TrainingError(f"LoRA loss is {loss_value} at step {step} (lr {lr:.3g}): lower lr or alpha")
                bar.update(1)
                if step % spec.log_every_steps == 0 or step == total_steps:
                    elapsed = time.perf_counter() - start
                    record = {"step": step, "total_steps": total_steps, "epoch": epoch, "loss": loss_value, "lr": lr,
                              "tokens": tokens_total, "tokens_per_s": tokens_total / max(elapsed - curve.seconds, 1e-9),
                              "elapsed_s": elapsed,
                              "grad_norm": float(grad_norm)}
                    metrics.write(record)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                    if progress is not None:
                        progress(record)
                curve.maybe_score(model, step)
    finally:
        bar.close()
        metrics.close()
    wall = time.perf_counter() - start - curve.seconds  # training time: the curve's scoring is not training

    with building(out / ADAPTER_DIR) as tmp:
        model.save_pretrained(tmp)
        _save_tokenizer_and_generation(spec.model_dir, tmp)
        if not (tmp / "adapter_config.json").is_file():
            raise TrainingError(f"peft wrote no adapter_config.json into {tmp}")
    merged_dir = None
    if spec.merge:
        merged_dir = out / MERGED_DIR
        merged = model.merge_and_unload()
        with building(merged_dir) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            _save_tokenizer_and_generation(spec.model_dir, tmp)
    summary = {
        "steps": step, "total_steps": total_steps, "epochs": spec.epochs, "tokens": tokens_total,
        "wall_time_s": wall, "tokens_per_s": tokens_total / wall if wall > 0 else 0.0, "final_loss": loss_value,
        "trainable_params": n_trainable, "total_params": n_total, "resumed_from": None, "lr": spec.lr,
        "r": spec.r, "alpha": spec.alpha, "replay_examples": n_replay, "train_examples": len(examples) - n_replay,
        "adapter_dir": str(out / ADAPTER_DIR), "merged_dir": None if merged_dir is None else str(merged_dir),
        "curve_s": curve.seconds, "final_scores": curve.last,
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def sweep_lr(spec: LoraSpec, lrs: list[float], *, steps: int, work_dir: Path) -> dict[str, Any]:
    """Choose the LoRA learning rate: a short run of ``steps`` per candidate, scored teacher-forced on validation.

    Each candidate trains from the base model on the first ``steps`` optimizer steps of the same data plan, then
    its violation F1 (ties: check-line accuracy) on the validation examples of the learning curve decides. Returns
    ``{"chosen_lr", "steps", "trials": [{"lr", "tf_f1_micro", "tf_check_accuracy", "final_loss", "seconds"}]}``.
    """
    if not lrs:
        raise ConfigError(["lora.sweep_lrs: give at least one learning rate to sweep"], source="LoRA sweep")
    trials = []
    for lr in lrs:
        trial = replace(spec, lr=lr, max_steps=steps, output_dir=str(Path(work_dir) / f"lr-{lr:g}"), curve_points=1,
                        curve_start=False, merge=False)
        started = time.perf_counter()
        summary = train_lora(trial)
        scores = summary.get("final_scores") or {}
        trials.append({"lr": lr, "tf_f1_micro": scores.get("tf_f1_micro"),
                       "tf_check_accuracy": scores.get("tf_check_accuracy"), "final_loss": summary["final_loss"],
                       "seconds": round(time.perf_counter() - started, 1)})

    def rank(t: dict[str, Any]) -> tuple[float, float]:
        return (t["tf_f1_micro"] if t["tf_f1_micro"] is not None else -1.0,
                t["tf_check_accuracy"] if t["tf_check_accuracy"] is not None else -1.0)

    best = max(trials, key=rank)
    return {"chosen_lr": best["lr"], "steps": steps, "trials": trials}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m training.lora --spec lora_spec.json``."""
    import argparse

    parser = argparse.ArgumentParser(description="peft LoRA baseline")
    parser.add_argument("--spec", required=True, type=Path)
    args = parser.parse_args(argv)
    data = json.loads(args.spec.read_text())
    print(json.dumps(train_lora(LoraSpec(**data)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
