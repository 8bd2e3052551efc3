"""Training throughput and MFU: our DeepSpeed path vs a plain PyTorch AdamW loop and the HF Trainer, one run.

    python -m bench.bench_train [--model PATH] [--micro-batch 4] [--seq-len 256] [--steps 10] [--warmup 3]

Measures this CPU's matmul peak (fp32 and bf16) first, then for each precision trains the plain loop (fused AdamW,
autocast for bf16), the DeepSpeed engine (ZeRO-2, torch AdamW, autocast for bf16) and transformers' Trainer
given the same DeepSpeed config, on the same fixed batch,
timing each step after a few warm-up steps. Prints a table; ``run()`` returns the figures. Ratios, not assertions.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import step_parser, write_json


def matmul_peak(dtype: torch.dtype, *, n: int = 1024, budget_s: float = 3.0) -> float:
    """Return the best measured dense matmul rate in FLOP/s for ``dtype`` (n x n x n), timing up to ``budget_s``.

    The time budget matters on CPUs without native bf16 (no AVX512-BF16/AMX), where a bf16 matmul is emulated
    and one 1024^3 product takes seconds.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best, spent = float("inf"), 0.0
    while spent < budget_s:
        t = time.perf_counter()
        torch.mm(a, b)
        elapsed = time.perf_counter() - t
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n**3 / best


def flops_per_token(config: Any, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention scores (nanoGPT/PaLM estimate)."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    return 6 * n_params + 12 * layers * hidden * seq_len


def _time_steps(step: Callable[[], None], *, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def _load(model_path: Path) -> torch.nn.Module:
    from training.full_ft import load_trainable_model

    return load_trainable_model(str(model_path), seed=0, gradient_checkpointing=False).train()


def adamw_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *,
               device_type: str, bf16: bool) -> None:
    """One step of the plain PyTorch reference loop: autocast forward, backward, clip 1.0, AdamW step."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def plain_loop(model_path: Path, batch: dict[str, torch.Tensor], *, bf16: bool, warmup: int, steps: int) -> list[float]:
    """Step times of a plain fp32-master loop: autocast forward, backward, clip 1.0, fused AdamW."""
    model = _load(model_path)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    times = _time_steps(lambda: adamw_step(model, opt, batch, device_type="cpu", bf16=bf16), warmup=warmup,
                        steps=steps)
    del model, opt
    gc.collect()
    return times


def deepspeed_loop(model_path: Path, batch: dict[str, torch.Tensor], *, bf16: bool, zero_stage: int, warmup: int,
                   steps: int) -> list[float]:
    """Step times of our DeepSpeed path (training.full_ft.build_engine + train_step), same batch."""
    from training.deepspeed_config import build_deepspeed_config
    from training.full_ft import build_engine, train_step

    micro = batch["input_ids"].shape[0]
    cfg = build_deepspeed_config(micro_batch_size=micro, grad_accum_steps=1, world_size=1, zero_stage=zero_stage,
                                 bf16=bf16, lr=1e-5, grad_clip=1.0, on_cpu=True)
    engine, _ = build_engine(_load(model_path), cfg, total_steps=10**6, warmup_ratio=0.0, min_lr_ratio=1.0)
    times = _time_steps(lambda: train_step(engine, [batch]), warmup=warmup, steps=steps)
    engine.destroy()
    del engine
    gc.collect()
    return times


def hf_trainer_loop(model_path: Path, batch: dict[str, torch.Tensor], *, bf16: bool, zero_stage: int, warmup: int,
                    steps: int) -> list[float]:
    """Step times of transformers' ``Trainer`` given the same DeepSpeed config as our path, same batch each step."""
    import tempfile

    from transformers import Trainer, TrainerCallback, TrainingArguments

    from training.deepspeed_config import build_deepspeed_config

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self._start)

    micro = batch["input_ids"].shape[0]
    cfg = build_deepspeed_config(micro_batch_size=micro, grad_accum_steps=1, world_size=1, zero_stage=zero_stage,
                                 bf16=bf16, lr=1e-5, grad_clip=1.0, on_cpu=True)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(micro)] * (warmup + steps)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=micro, max_steps=warmup + steps,
                                 learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                                 adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
                                 deepspeed=cfg, use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", dataloader_num_workers=0, remove_unused_columns=False,
                                 seed=0)
        trainer = Trainer(model=_load(model_path), args=args, train_dataset=rows, callbacks=[timer])
        if not trainer.is_deepspeed_enabled:
            raise RuntimeError("the Trainer did not take the DeepSpeed config")
        trainer.train()
        del trainer
    gc.collect()
    return timer.times[warmup:]


def run(*, model: Path, micro_batch: int = 4, seq_len: int = 256, warmup: int = 3, steps: int = 10,
        threads: int = 2, zero_stage: int = 2, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """Run the benchmark and return ``{"peak": ..., "rows": [...]}`` (tokens/s, MFU and ratio per setup)."""
    from training.full_ft import prepare_process_env

    torch.set_num_threads(threads)
    prepare_process_env()
    import deepspeed

    deepspeed.init_distributed()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (micro_batch, seq_len), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    n_params = sum(p.numel() for p in _load(model).parameters())
    fpt = flops_per_token(config, n_params, seq_len)
    tokens = micro_batch * seq_len
    rows = []
    skipped = []
    for precision in precisions:
        bf16 = precision == "bf16"
        if bf16 and peak["bf16"] < peak["fp32"]:
            # No native bf16 here: a training step would take minutes and measure the emulation, not our path.
            skipped.append(f"bf16: matmul peak {peak['bf16'] / 1e12:.4f} < fp32 {peak['fp32'] / 1e12:.4f} TFLOP/s "
                           "(no native bf16 on this CPU)")
            continue
        plain = plain_loop(model, batch, bf16=bf16, warmup=warmup, steps=steps)
        ds = deepspeed_loop(model, batch, bf16=bf16, zero_stage=zero_stage, warmup=warmup, steps=steps)
        measured = [(f"plain torch AdamW ({precision})", plain), (f"ours: DeepSpeed ZeRO-{zero_stage} ({precision})", ds)]
        try:
            hf = hf_trainer_loop(model, batch, bf16=bf16, zero_stage=zero_stage, warmup=warmup, steps=steps)
            measured.append((f"HF Trainer, same DS config ({precision})", hf))
        except Exception as exc:  # report, keep the other rows
            skipped.append(f"HF Trainer ({precision}): {type(exc).__name__}: {exc}"[:300])
        base_tps = tokens / statistics.median(plain)
        for name, times in measured:
            tps = tokens / statistics.median(times)
            rows.append({"setup": name, "precision": precision, "tokens_per_s": tps,
                         "step_s_median": statistics.median(times), "step_s_min": min(times),
                         "mfu": tps * fpt / peak[precision], "vs_plain": tps / base_tps})
    return {"model": str(model), "n_params": n_params, "batch": [micro_batch, seq_len], "threads": threads,
            "peak_tflops": {k: v / 1e12 for k, v in peak.items()}, "flops_per_token": fpt, "rows": rows,
            "skipped": skipped}


def _print_table(result: dict[str, Any]) -> None:
    peak = result["peak_tflops"]
    print(f"model {result['model']} ({result['n_params'] / 1e6:.1f}M params), batch {result['batch']}, "
          f"{result['threads']} threads; matmul peak fp32 {peak['fp32']:.3f} TFLOP/s, bf16 {peak['bf16']:.4f} TFLOP/s")
    print(f"{'setup':<40} {'tok/s':>8} {'step s':>8} {'MFU':>7} {'vs plain':>9}")
    for r in result["rows"]:
        print(f"{r['setup']:<40} {r['tokens_per_s']:>8.0f} {r['step_s_median']:>8.2f} {r['mfu']:>7.1%} "
              f"{r['vs_plain']:>8.2f}x")
    for line in result["skipped"]:
        print(f"skipped {line}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = step_parser(__doc__, micro_batch=4, seq_len=256)
    parser.add_argument("--model", type=Path, default=None, help="HF model folder (default: the packaged SmolLM2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args(argv)
    if args.model is None:
        from finetune.models import base_model_dir

        args.model = base_model_dir()
    result = run(model=args.model, micro_batch=args.micro_batch, seq_len=args.seq_len, warmup=args.warmup,
                 steps=args.steps, threads=args.threads, zero_stage=args.zero_stage,
                 precisions=tuple(args.precisions.split(",")))
    _print_table(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
