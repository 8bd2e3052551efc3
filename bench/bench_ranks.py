"""Both cores: one training process with all threads vs one gloo rank per core, the same global batch, one run.

    python -m bench.bench_ranks --dataset DATASET_DIR [--model PATH] [--steps 8] [--batch 4]

Runs the real DeepSpeed path (``training.launcher.run_training``, ZeRO-2, bf16 autocast where the CPU has native
bf16) twice on the same prepared dataset (a ``prepare_data`` stage's ``dataset`` folder): ``nproc=1`` with micro-batch
``batch`` and OMP threads = cores, then ``nproc=cores`` with micro-batch ``batch / cores`` and one thread each.
Prints each run's training tokens/s (the trainer's summary figure: tokens over the run's wall time, start-up
included alike in both) and the ratio. No assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def one_run(model_dir: str, dataset: Path, out: Path, *, nproc: int, batch: int, steps: int, bf16: bool) -> dict:
    """Train ``steps`` steps with ``nproc`` ranks of micro-batch ``batch // nproc``; return its train summary."""
    from training.deepspeed_config import build_deepspeed_config
    from training.full_ft import TrainSpec
    from training.launcher import run_training

    cfg = build_deepspeed_config(micro_batch_size=batch // nproc, grad_accum_steps=1, world_size=nproc,
                                 zero_stage=2, bf16=bf16, lr=2e-4, on_cpu=True)
    spec = TrainSpec(model_dir=model_dir, dataset_dir=str(dataset), output_dir=str(out), ds_config=cfg,
                     max_steps=steps, seed=1)
    return run_training(spec, nproc=nproc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a prepared dataset folder (HF DatasetDict)")
    parser.add_argument("--model", default=None, help="HF model folder (default: the packaged SmolLM2)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="global batch (examples per optimizer step)")
    args = parser.parse_args(argv)

    from finetune.models import resolve_model
    from training.infra import native_bf16

    cores = os.cpu_count() or 1
    model_dir = args.model or str(resolve_model("packaged"))
    bf16 = native_bf16()[0]  # native bf16: autocast, as the demo's precision 'auto'
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, cores):
            if args.batch % nproc:
                raise SystemExit(f"--batch {args.batch} does not split over {nproc} ranks")
            summary = one_run(model_dir, args.dataset, Path(tmp) / f"n{nproc}", nproc=nproc, batch=args.batch,
                              steps=args.steps, bf16=bf16)
            rows[nproc] = summary
            print(json.dumps({"ranks": nproc, "threads_per_rank": max(1, cores // nproc),
                              "tokens_per_s": summary.get("tokens_per_s"), "bf16": bf16}), flush=True)
    one, many = rows[1].get("tokens_per_s") or 0, rows[cores].get("tokens_per_s") or 0
    print(f"{cores} ranks x 1 thread vs 1 rank x {cores} threads: {many / one if one else float('nan'):.2f}x "
          "training tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
