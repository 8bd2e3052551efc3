"""GPU training throughput: a 1B-class Llama shape, our DeepSpeed ZeRO-2 bf16 path vs a plain PyTorch loop.

    python -m bench.bench_gpu [--micro-batch 8] [--seq-len 2048] [--steps 10] [--warmup 3] [--json PATH]

Needs a CUDA device (the CPU path is ``bench.bench_train``). Random initialisation (throughput does not depend on
the weights). Measures the GPU's own bf16 matmul peak first, then trains each setup on the same fixed batch:

- plain PyTorch: fp32 weights, bf16 autocast, fused AdamW, grad clip 1.0 (the baseline);
- ours: ``build_deepspeed_config(bf16=True)`` through ``training.full_ft.build_engine`` / ``train_step``, ZeRO-2;
- DeepSpeed's own ``bf16`` section (module cast to bf16, fp32 master in the optimizer), for reference.

For each: tokens/s, MFU (6N + attention FLOPs per token over the measured peak), ratio to the plain loop, and the
peak ``torch.cuda.max_memory_allocated`` next to the audit's memory plan for the same shape and batch.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Any, Callable

import torch

from bench import step_parser, write_json
from bench.bench_train import adamw_step
from training.memory import ModelShape

# TinyLlama-1.1B's shape: a Llama with grouped-query attention, 1.1 B parameters.
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 4096}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256}


def cuda_matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 8192, reps: int = 10) -> float:
    """Best measured dense matmul rate (FLOP/s) of ``n x n x n`` products on the current CUDA device."""
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * n**3 / best


def _model(shape: dict[str, int]) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, attn_implementation="sdpa", use_cache=False)
    with torch.device("cuda"):  # initialise on the GPU: seconds instead of a minute on the CPU
        return LlamaForCausalLM(config).train()


def _time(step: Callable[[], None], *, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def _fresh() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def plain(shape: dict[str, int], batch: dict[str, torch.Tensor], *, warmup: int, steps: int,
          compile_model: bool = False) -> tuple[list[float], int]:
    """Step times and peak memory of the plain loop (fp32 weights, bf16 autocast, fused AdamW)."""
    _fresh()
    model = _model(shape)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    if compile_model:
        model = torch.compile(model)
    times = _time(lambda: adamw_step(model, opt, batch, device_type="cuda", bf16=True), warmup=warmup, steps=steps)
    peak = torch.cuda.max_memory_allocated()
    del model, opt
    return times, peak


def deepspeed_path(shape: dict[str, int], batch: dict[str, torch.Tensor], *, zero_stage: int, warmup: int,
                   steps: int, ds_bf16_section: bool = False, torch_adam: bool = False,
                   small_buckets: bool = False, compile_model: bool = False) -> tuple[list[float], int]:
    """Step times and peak memory of our DeepSpeed path: the config ``infra_check`` writes for a GPU (DeepSpeed's
    FusedAdam, JIT-built on first use), or with torch's fused AdamW, or DeepSpeed's own bf16 section."""
    from training.deepspeed_config import build_deepspeed_config
    from training.full_ft import build_engine, train_step

    _fresh()
    cfg = build_deepspeed_config(micro_batch_size=batch["input_ids"].shape[0], grad_accum_steps=1, world_size=1,
                                 zero_stage=zero_stage, bf16=True, lr=1e-5, grad_clip=1.0, on_cpu=False)
    if small_buckets:  # what the config used on GPUs before: CPU-sized 5e7 buckets, no overlap
        cfg["zero_optimization"].update(overlap_comm=False, reduce_bucket_size=5e7, allgather_bucket_size=5e7)
    if torch_adam:
        cfg["optimizer"]["params"].update(torch_adam=True, fused=True)
    if ds_bf16_section:
        cfg.pop("torch_autocast")
        cfg["bf16"] = {"enabled": True}
    engine, _ = build_engine(_model(shape), cfg, total_steps=10**6, warmup_ratio=0.0, min_lr_ratio=1.0)
    if compile_model:
        engine.compile()
    times = _time(lambda: train_step(engine, [batch]), warmup=warmup, steps=steps)
    peak = torch.cuda.max_memory_allocated()
    engine.destroy()
    del engine
    return times, peak


def predicted_peak(shape: ModelShape, *, zero_stage: int, micro_batch: int, seq_len: int) -> float:
    """The audit's per-GPU memory plan (bytes) for this shape on one GPU, bf16, no checkpointing."""
    from training.memory import plan_memory

    plan = plan_memory(shape, zero_stage=zero_stage, offload="none", gpus_per_node=1, num_nodes=1,
                       device_memory_gib=80, cpu_ram_gib=128, micro_batch=micro_batch, seq_len=seq_len, bf16=True,
                       checkpointing=False)
    return plan.device_total


def run(*, micro_batch: int = 8, seq_len: int = 2048, warmup: int = 3, steps: int = 10, zero_stage: int = 2,
        tiny: bool = False, compiled: bool = False) -> dict[str, Any]:
    """Run the GPU benchmark; return the peak, the rows (tokens/s, MFU, vs plain, memory) and the model size."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device; the CPU training benchmark is bench.bench_train")
    from transformers import LlamaConfig

    from bench.bench_train import flops_per_token
    from training.full_ft import prepare_process_env
    from training.memory import config_shape

    prepare_process_env()
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl")
    shape = TINY if tiny else LLAMA_1B
    peak = cuda_matmul_peak(n=1024 if tiny else 8192)
    ids = torch.randint(0, shape["vocab_size"], (micro_batch, seq_len), generator=torch.Generator().manual_seed(0))
    batch = {k: v.to("cuda") for k, v in {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                          "labels": ids.clone()}.items()}
    config = LlamaConfig(**shape)
    model_shape = config_shape(config)
    n_params = model_shape.n_params
    fpt = flops_per_token(config, n_params, seq_len)
    tokens = micro_batch * seq_len
    predicted = predicted_peak(model_shape, zero_stage=zero_stage, micro_batch=micro_batch, seq_len=seq_len)
    setups: dict[str, Callable[[], tuple[list[float], int]]] = {
        "plain torch AdamW (bf16 autocast)": lambda: plain(shape, batch, warmup=warmup, steps=steps),
        f"ours: ZeRO-{zero_stage}, autocast, DS FusedAdam": lambda: deepspeed_path(
            shape, batch, zero_stage=zero_stage, warmup=warmup, steps=steps),
        f"ours: ZeRO-{zero_stage}, autocast, torch fused AdamW": lambda: deepspeed_path(
            shape, batch, zero_stage=zero_stage, warmup=warmup, steps=steps, torch_adam=True),
        "ours, torch AdamW, 5e7 buckets, no overlap": lambda: deepspeed_path(
            shape, batch, zero_stage=zero_stage, warmup=warmup, steps=steps, torch_adam=True, small_buckets=True),
        f"DeepSpeed ZeRO-{zero_stage}, bf16 section": lambda: deepspeed_path(
            shape, batch, zero_stage=zero_stage, warmup=warmup, steps=steps, ds_bf16_section=True),
    }
    if compiled:  # torch.compile of the model (plain) and of the engine (DeepSpeed's engine.compile())
        setups = {
            "plain torch AdamW (bf16 autocast), compiled": lambda: plain(shape, batch, warmup=warmup, steps=steps,
                                                                         compile_model=True),
            f"ours: ZeRO-{zero_stage}, autocast, DS FusedAdam, compiled": lambda: deepspeed_path(
                shape, batch, zero_stage=zero_stage, warmup=warmup, steps=steps, compile_model=True),
        }
    measured, errors = {}, {}
    for name, setup in setups.items():
        try:
            measured[name] = setup()
        except Exception as exc:  # one setup failing (e.g. an op that cannot be built) must not lose the others
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{name}: FAILED {errors[name]}", file=sys.stderr)
    base = tokens / statistics.median(next(iter(measured.values()))[0])
    rows = []
    for name, (times, mem) in measured.items():
        tps = tokens / statistics.median(times)
        rows.append({"setup": name, "tokens_per_s": tps, "step_s_median": statistics.median(times),
                     "mfu": tps * fpt / peak, "vs_plain": tps / base, "peak_mem_gib": mem / 2**30,
                     "mem_vs_audit_plan": mem / predicted})
    return {"device": torch.cuda.get_device_name(), "n_params": n_params, "batch": [micro_batch, seq_len],
            "zero_stage": zero_stage, "peak_bf16_tflops": peak / 1e12, "flops_per_token": fpt,
            "audit_plan_gib": predicted / 2**30, "rows": rows, "errors": errors, "torch": torch.__version__,
            "deepspeed": deepspeed.__version__}


def _print(result: dict[str, Any]) -> None:
    print(f"{result['device']}: {result['n_params'] / 1e9:.2f} B params, batch {result['batch']}, measured bf16 "
          f"matmul peak {result['peak_bf16_tflops']:.0f} TFLOP/s; audit plan {result['audit_plan_gib']:.1f} GiB")
    print(f"{'setup':<44} {'tok/s':>9} {'step s':>7} {'MFU':>6} {'vs plain':>9} {'peak GiB':>9} {'vs plan':>8}")
    for r in result["rows"]:
        print(f"{r['setup']:<44} {r['tokens_per_s']:>9.0f} {r['step_s_median']:>7.3f} {r['mfu']:>6.1%} "
              f"{r['vs_plain']:>8.2f}x {r['peak_mem_gib']:>9.1f} {r['mem_vs_audit_plan']:>7.2f}x")
    for name, err in result["errors"].items():
        print(f"{name:<44} failed: {err}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = step_parser(__doc__, micro_batch=8, seq_len=2048)
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama shape (smoke test of the script)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model / the engine")
    args = parser.parse_args(argv)
    result = run(micro_batch=args.micro_batch, seq_len=args.seq_len, warmup=args.warmup, steps=args.steps,
                 zero_stage=args.zero_stage, tiny=args.tiny, compiled=args.compile)
    _print(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
