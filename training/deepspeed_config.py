"""Build and validate the DeepSpeed JSON config the full fine-tuning engine runs with."""

from __future__ import annotations

from typing import Any

from foundation.errors import ConfigError


def build_deepspeed_config(
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    zero_stage: int,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    bf16: bool = False,
    grad_clip: float = 1.0,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    on_cpu: bool,
) -> dict[str, Any]:
    """Return a DeepSpeed config dict; raise ConfigError listing every invalid argument at once.

    Args:
        micro_batch_size: examples per rank per forward/backward.
        grad_accum_steps: micro-batches accumulated per optimizer step.
        world_size: number of ranks (train_batch_size = micro x accum x world).
        zero_stage: 0 (plain data parallel) to 3 (parameters partitioned).
        offload_optimizer: keep optimizer states (and the step) on CPU (ZeRO >= 1).
        offload_params: keep parameters on CPU (ZeRO-3 only).
        bf16: mixed precision with bf16 compute and fp32 master weights, gradients and optimizer states. Runs as
            DeepSpeed's ``torch_autocast`` section (the module stays fp32, matmuls run in bf16): DeepSpeed's
            ``bf16`` section casts the whole module to bf16 (residual stream, norms) and its loss lags fp32; see
            bench/NOTES.md for the measurement.
        grad_clip: global gradient-norm clip (0 disables).
        lr, weight_decay, betas, eps: AdamW settings (the LR schedule is the caller's LambdaLR).
        on_cpu: no accelerator: use torch's fused AdamW (``torch_adam``) so no C++ Adam op is JIT-built, and let ZeRO
            offload run torch's AdamW instead of forcing DeepSpeedCPUAdam.
    """
    problems = []
    for name, value in (("micro_batch_size", micro_batch_size), ("grad_accum_steps", grad_accum_steps),
                        ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name}: must be an integer >= 1, got {value!r}")
    if zero_stage not in (0, 1, 2, 3):
        problems.append(f"zero_stage: must be 0, 1, 2 or 3, got {zero_stage!r}")
    if offload_optimizer and zero_stage == 0:
        problems.append("offload_optimizer: needs zero_stage >= 1 (ZeRO-Offload partitions the optimizer)")
    if offload_params and zero_stage != 3:
        problems.append(f"offload_params: needs zero_stage 3 (parameters are only partitioned there), got {zero_stage}")
    if not lr > 0:
        problems.append(f"lr: must be > 0, got {lr!r}")
    if weight_decay < 0:
        problems.append(f"weight_decay: must be >= 0, got {weight_decay!r}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        problems.append(f"betas: must be two numbers in [0, 1), got {betas!r}")
    if not eps > 0:
        problems.append(f"eps: must be > 0, got {eps!r}")
    if grad_clip < 0:
        problems.append(f"grad_clip: must be >= 0 (0 disables clipping), got {grad_clip!r}")
    if problems:
        raise ConfigError(problems, source="DeepSpeed config")

    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage >= 1:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_bucket_size=5e7)
    if zero_stage == 2:
        zero["allgather_bucket_size"] = 5e7
    if zero_stage == 3:
        # Without this, save_16bit_model writes nothing and module.save_pretrained writes shape-(0,) tensors.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not on_cpu}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": not on_cpu}

    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
        "gradient_clipping": float(grad_clip),
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay},
        },
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if on_cpu:
        # torch's fused CPU AdamW: one pass over the flat ZeRO partition instead of ~10 elementwise passes.
        config["optimizer"]["params"].update(torch_adam=True, fused=True)
        if offload_optimizer:
            config["zero_force_ds_cpu_optimizer"] = False
    if bf16:
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config
