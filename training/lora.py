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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from finetune.errors import ConfigError, TrainingError
from finetune.paths import building, write_json_atomic
from training.data import MicroBatches
from training.full_ft import (METRICS_FILE, SUMMARY_FILE, MetricsLog, TrainSpec, load_trainable_model,
                              load_training_examples, planned_steps)
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

    Raises ConfigError for a bad spec and TrainingError on a NaN/inf loss or an adapter that does not save.
    """
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
        replay_fraction=spec.replay_fraction, seed=spec.seed,
    )
    stream = MicroBatches(examples, spec.micro_batch_size, spec.grad_accum_steps, 1, 0, spec.seed, pad_id)
    total_steps = planned_steps(stream, spec.epochs, spec.max_steps)
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
    bar = tqdm(total=total_steps, file=sys.stderr, desc="LoRA", mininterval=1)
    step, tokens_total, loss_value = 0, 0, float("nan")
    start = time.perf_counter()
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
                        loss = model(**batch).loss
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
                              "tokens": tokens_total, "tokens_per_s": tokens_total / elapsed, "elapsed_s": elapsed,
                              "grad_norm": float(grad_norm)}
                    metrics.write(record)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                    if progress is not None:
                        progress(record)
    finally:
        bar.close()
        metrics.close()
    wall = time.perf_counter() - start

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
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


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
