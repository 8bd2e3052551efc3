"""DeepSpeed vs FSDP2 on the same training, one run: tokens/s and peak memory side by side.

    python -m bench.bench_backends [--model PATH] [--nproc 2] [--micro-batch 2] [--seq-len 256] [--steps 6]
                                   [--zero-stage 3] [--order deepspeed,fsdp]

Runs the real entry point (``training.launcher.run_training``: ``nproc`` ranks, gloo on CPU) twice with one spec on
one generated token dataset, changing only ``backend``: DeepSpeed at ``--zero-stage`` (default 3, the like-for-like
of FSDP's full sharding) and FSDP2, in ``--order``. fp32, no checkpoints. For each: training tokens/s (the trainer's
summary: tokens over the loop's wall time, start-up and export excluded) and its steady rate (after the first step,
which holds one-off work such as ZeRO-3's parameter tracing), the peak RSS of the largest rank (taken before the
export) beside the memory plan's per-rank figure, and the final loss; then FSDP over DeepSpeed ratios and the
largest per-step loss difference. No assertions. On a shared machine run both orders: load changes between runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import write_json

GiB = 2**30


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none): the figures depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def token_dataset(out: Path, *, vocab: int, n: int, seq_len: int, seed: int = 0) -> Path:
    """Save ``n`` random-token training examples of ``seq_len`` tokens, the loss on their second half."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ids = [rng.randrange(vocab) for _ in range(seq_len)]
        rows.append({"id": str(i), "input_ids": ids, "labels": [-100] * (seq_len // 2) + ids[seq_len // 2:]})
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(out)
    return out


def planned_rank_gib(model: Path, *, backend: str, zero_stage: int, nproc: int, micro_batch: int,
                     seq_len: int) -> float:
    """The memory plan's resident memory of one rank (model states, activations, runtime allowance), in GiB."""
    from training.memory import RUNTIME_OVERHEAD_GIB, model_shape, plan_memory

    plan = plan_memory(model_shape(model), zero_stage=zero_stage, offload="none", gpus_per_node=nproc, num_nodes=1,
                       device_memory_gib=0, cpu_ram_gib=1024, micro_batch=micro_batch, seq_len=seq_len, bf16=False,
                       checkpointing=False, on_cpu=True, backend=backend)
    return plan.device_total / GiB + RUNTIME_OVERHEAD_GIB


def run(*, model: Path, nproc: int = 2, micro_batch: int = 2, seq_len: int = 256, steps: int = 6,
        zero_stage: int = 3, order: tuple[str, ...] = ("deepspeed", "fsdp")) -> dict[str, Any]:
    """Train ``steps`` steps with each backend; return both rows and the FSDP / DeepSpeed ratios."""
    from transformers import AutoConfig

    from training.deepspeed_config import build_deepspeed_config
    from training.full_ft import METRICS_FILE, TrainSpec
    from training.launcher import run_training

    cfg = build_deepspeed_config(micro_batch_size=micro_batch, grad_accum_steps=1, world_size=nproc,
                                 zero_stage=zero_stage, lr=1e-5, on_cpu=True)
    rows, losses = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        data = token_dataset(Path(tmp) / "data", vocab=AutoConfig.from_pretrained(model).vocab_size,
                             n=steps * micro_batch * nproc, seq_len=seq_len)
        for backend in order:
            out = Path(tmp) / backend
            spec = TrainSpec(model_dir=str(model), dataset_dir=str(data), output_dir=str(out), ds_config=cfg,
                             backend=backend, max_steps=steps, warmup_ratio=0.0, seed=0)
            summary = run_training(spec, nproc=nproc)
            records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
            losses[backend] = [r["loss"] for r in records]
            first, last = records[0], records[-1]
            rows[backend] = {
                "backend": backend, "zero_stage": summary["zero_stage"], "steps": summary["steps"],
                "tokens_per_s": summary["tokens_per_s"], "wall_time_s": summary["wall_time_s"],
                "steady_tokens_per_s": (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"]),
                "first_step_s": first["elapsed_s"],
                "peak_rss_gib": summary["peak_rss_gib"], "final_loss": summary["final_loss"],
                "planned_rank_gib": planned_rank_gib(model, backend=backend, zero_stage=zero_stage, nproc=nproc,
                                                     micro_batch=micro_batch, seq_len=seq_len),
            }
    ds, fsdp = rows["deepspeed"], rows["fsdp"]
    return {
        "model": str(model), "cpu": cpu_model(), "nproc": nproc, "batch_per_rank": [micro_batch, seq_len],
        "steps": steps, "precision": "fp32", "order": list(order), "rows": [rows[b] for b in order],
        "fsdp_vs_deepspeed": {"tokens_per_s": fsdp["tokens_per_s"] / ds["tokens_per_s"],
                              "steady_tokens_per_s": fsdp["steady_tokens_per_s"] / ds["steady_tokens_per_s"],
                              "peak_rss": fsdp["peak_rss_gib"] / ds["peak_rss_gib"]},
        "max_loss_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(losses["deepspeed"], losses["fsdp"])),
    }


def _print_table(result: dict[str, Any]) -> None:
    print(f"model {result['model']}, {result['nproc']} ranks x batch {result['batch_per_rank']}, {result['steps']} "
          f"steps, {result['precision']}, run in order {result['order']}; CPU {result['cpu']}")
    print(f"{'backend':<22} {'tok/s':>8} {'steady':>8} {'step 1 s':>9} {'peak RSS GiB':>13} {'plan GiB/rank':>14} "
          f"{'final loss':>11}")
    for r in result["rows"]:
        name = f"{r['backend']} (ZeRO-{r['zero_stage']})" if r["backend"] == "deepspeed" else "fsdp (full shard)"
        print(f"{name:<22} {r['tokens_per_s']:>8.1f} {r['steady_tokens_per_s']:>8.1f} {r['first_step_s']:>9.1f} "
              f"{r['peak_rss_gib']:>13.2f} {r['planned_rank_gib']:>14.2f} {r['final_loss']:>11.4f}")
    ratio = result["fsdp_vs_deepspeed"]
    print(f"fsdp / deepspeed: tokens/s {ratio['tokens_per_s']:.2f}x (steady {ratio['steady_tokens_per_s']:.2f}x), "
          f"peak RSS {ratio['peak_rss']:.2f}x; largest per-step loss difference {result['max_loss_rel_diff']:.1e} "
          "(relative)")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="HF model folder (default: the packaged SmolLM2)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--zero-stage", type=int, default=3, help="DeepSpeed's stage (FSDP always shards fully)")
    parser.add_argument("--order", default="deepspeed,fsdp", help="which backend runs first")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if sorted(args.order.split(",")) != ["deepspeed", "fsdp"]:
        parser.error(f"--order: name both backends once, e.g. fsdp,deepspeed (got {args.order!r})")
    if args.model is None:
        from finetune.models import base_model_dir

        args.model = base_model_dir()
    result = run(model=args.model, nproc=args.nproc, micro_batch=args.micro_batch, seq_len=args.seq_len,
                 steps=args.steps, zero_stage=args.zero_stage, order=tuple(args.order.split(",")))
    _print_table(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
