"""The DeepSpeed config builder: batch arithmetic, CPU settings, ZeRO-3 save flag, precision, validation."""

from __future__ import annotations

import pytest

from foundation.errors import ConfigError
from training.deepspeed_config import build_deepspeed_config

BASE = dict(micro_batch_size=4, grad_accum_steps=8, world_size=2, zero_stage=2, lr=2e-5, on_cpu=True)


def test_batch_sizes_and_optimizer() -> None:
    cfg = build_deepspeed_config(**BASE, weight_decay=0.01, betas=(0.9, 0.95), grad_clip=1.0)
    assert cfg["train_batch_size"] == 4 * 8 * 2
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_accumulation_steps"] == 8
    assert cfg["gradient_clipping"] == 1.0
    params = cfg["optimizer"]["params"]
    assert cfg["optimizer"]["type"] == "AdamW"
    assert params["lr"] == 2e-5 and params["betas"] == [0.9, 0.95] and params["weight_decay"] == 0.01
    assert params["torch_adam"] is True and params["fused"] is True  # no JIT-built Adam on CPU
    assert cfg["zero_optimization"]["stage"] == 2
    assert "bf16" not in cfg and "torch_autocast" not in cfg


def test_gpu_config_uses_deepspeed_adam() -> None:
    cfg = build_deepspeed_config(**BASE | dict(on_cpu=False))
    assert "torch_adam" not in cfg["optimizer"]["params"]


def test_cpu_offload_keeps_torch_adamw() -> None:
    cfg = build_deepspeed_config(**BASE | dict(zero_stage=3), offload_optimizer=True, offload_params=True)
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert cfg["zero_force_ds_cpu_optimizer"] is False


def test_zero3_gathers_weights_on_save() -> None:
    cfg = build_deepspeed_config(**BASE | dict(zero_stage=3))
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_bf16_keeps_fp32_master_weights() -> None:
    cfg = build_deepspeed_config(**BASE, bf16=True)
    assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "bf16" not in cfg  # DeepSpeed's bf16 section would cast the whole module to bf16


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        build_deepspeed_config(micro_batch_size=0, grad_accum_steps=1, world_size=1, zero_stage=5, lr=-1.0,
                               betas=(0.9, 1.5), grad_clip=-1, offload_params=True, on_cpu=True)
    text = str(err.value)
    for field in ("micro_batch_size", "zero_stage", "lr", "betas", "grad_clip", "offload_params"):
        assert field in text
    assert len(err.value.problems) == 6


def test_offload_optimizer_needs_zero() -> None:
    with pytest.raises(ConfigError, match="offload_optimizer"):
        build_deepspeed_config(**BASE | dict(zero_stage=0), offload_optimizer=True)
