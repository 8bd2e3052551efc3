"""Memory: the audit's predicted peak vs the measured peak of our DeepSpeed path, ZeRO 0/2/3, one process each.

    python -m bench.bench_memory [--model PATH] [--micro-batch 4] [--seq-len 256] [--steps 3]

On CPU the "device" is RAM, so each ZeRO stage runs in a fresh child process (a process's peak RSS never goes
down) that builds the engine the way ``training.full_ft`` does and trains a few fp32 steps on a fixed batch; the
child reports its peak RSS (``ru_maxrss``). The prediction is ``training.memory.plan_memory(on_cpu=True)`` for the
same shape, batch and stage: model states + activations + the runtime allowance the audit adds per process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

GiB = 2**30


def child(model: Path, *, zero_stage: int, micro_batch: int, seq_len: int, steps: int) -> dict[str, float]:
    """Train ``steps`` steps with our engine in this process; return its peak RSS in bytes."""
    import torch

    from training.full_ft import prepare_process_env

    torch.set_num_threads(2)
    prepare_process_env()
    import deepspeed

    from training.deepspeed_config import build_deepspeed_config
    from training.full_ft import build_engine, load_trainable_model, train_step

    deepspeed.init_distributed()
    m = load_trainable_model(str(model), seed=0, gradient_checkpointing=False)
    cfg = build_deepspeed_config(micro_batch_size=micro_batch, grad_accum_steps=1, world_size=1,
                                 zero_stage=zero_stage, lr=1e-5, on_cpu=True)
    engine, _ = build_engine(m.train(), cfg, total_steps=10**6, warmup_ratio=0.0, min_lr_ratio=1.0)
    ids = torch.randint(0, m.config.vocab_size, (micro_batch, seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    for _ in range(steps):
        train_step(engine, [batch])
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0}


def predicted(model: Path, *, zero_stage: int, micro_batch: int, seq_len: int) -> dict[str, float]:
    """The audit's plan for one CPU process at this stage (bytes): total and its model-state part."""
    from training.memory import model_shape, plan_memory

    plan = plan_memory(model_shape(model), zero_stage=zero_stage, offload="none", gpus_per_node=1, num_nodes=1,
                       device_memory_gib=0, cpu_ram_gib=1024, micro_batch=micro_batch, seq_len=seq_len, bf16=False,
                       checkpointing=False, on_cpu=True)
    return {"plan_total": plan.cpu_per_node, "plan_device": plan.device_total}


def _child_env() -> dict[str, str]:
    """This environment without the rendezvous variables an earlier benchmark in this process set (its port)."""
    from training.full_ft import RENDEZVOUS_VARS

    return {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}


def run(*, model: Path, micro_batch: int = 4, seq_len: int = 256, steps: int = 3,
        stages: tuple[int, ...] = (0, 2, 3)) -> dict[str, Any]:
    """Run each ZeRO stage in a child process; return predicted vs measured peaks and their ratio."""
    rows = []
    for stage in stages:
        out = subprocess.run(
            [sys.executable, "-m", "bench.bench_memory", "--child", "--model", str(model), "--zero-stage", str(stage),
             "--micro-batch", str(micro_batch), "--seq-len", str(seq_len), "--steps", str(steps)],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False, env=_child_env())
        if out.returncode != 0:
            raise RuntimeError(f"ZeRO-{stage} child failed:\n{out.stderr[-3000:]}")
        measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss"]
        plan = predicted(model, zero_stage=stage, micro_batch=micro_batch, seq_len=seq_len)
        rows.append({"zero_stage": stage, "predicted_gib": plan["plan_total"] / GiB,
                     "measured_peak_rss_gib": measured / GiB, "measured_vs_predicted": measured / plan["plan_total"]})
    return {"model": str(model), "batch": [micro_batch, seq_len], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``--child`` is the per-stage process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        from finetune.models import base_model_dir

        args.model = base_model_dir()
    if args.child:
        print(json.dumps(child(args.model, zero_stage=args.zero_stage, micro_batch=args.micro_batch,
                               seq_len=args.seq_len, steps=args.steps)))
        return 0
    result = run(model=args.model, micro_batch=args.micro_batch, seq_len=args.seq_len, steps=args.steps)
    print(f"{'ZeRO':>4} {'predicted GiB':>14} {'measured GiB':>13} {'ratio':>6}")
    for r in result["rows"]:
        print(f"{r['zero_stage']:>4} {r['predicted_gib']:>14.2f} {r['measured_peak_rss_gib']:>13.2f} "
              f"{r['measured_vs_predicted']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
