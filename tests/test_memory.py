"""The audit's memory plan against DeepSpeed's own estimators, and the planner's choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from finetune.audit import choose_plan, plan_table, reference_comparison
from finetune.config import load_config
from foundation.errors import MemoryPlanError
from training.memory import RUNTIME_OVERHEAD_GIB, GiB, ModelShape, model_shape, plan_memory, training_hours

ROOT = Path(__file__).resolve().parents[1]
SEVEN_B = ModelShape(n_params=6_738_415_616, largest_layer_params=131_072_000, n_layers=32, hidden=4096,
                     intermediate=11008, kv_hidden=4096, vocab=32000)


def _states(plan) -> float:
    return plan.weights + plan.gradients + plan.master_weights + plan.optimizer_moments + plan.fp32_gradients


def _plan(stage: int, offload: str, gpus: int):
    return plan_memory(SEVEN_B, zero_stage=stage, offload=offload, gpus_per_node=gpus, num_nodes=1,
                       device_memory_gib=80, cpu_ram_gib=1000, micro_batch=1, seq_len=1024, bf16=True,
                       checkpointing=False)


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_model_states_match_deepspeed_estimators(gpus: int) -> None:
    n, largest = SEVEN_B.n_params, SEVEN_B.largest_layer_params
    _, ds_z2_gpu = estimate_zero2_model_states_mem_needs(n, num_gpus_per_node=gpus, cpu_offload=False)
    assert _states(_plan(2, "none", gpus)) == pytest.approx(ds_z2_gpu, rel=1e-6)
    _, ds_z3_gpu, _ = estimate_zero3_model_states_mem_needs(n, largest, num_gpus_per_node=gpus, cpu_offload=False)
    assert _states(_plan(3, "none", gpus)) == pytest.approx(ds_z3_gpu, rel=1e-6)
    runtime = RUNTIME_OVERHEAD_GIB * GiB * gpus  # our per-process allowance, not part of DeepSpeed's figure
    ds_z3o_cpu, ds_z3o_gpu, _ = estimate_zero3_model_states_mem_needs(n, largest, num_gpus_per_node=gpus,
                                                                      cpu_offload=True, cpu_offload_params=False)
    plan = _plan(3, "optimizer", gpus)
    assert _states(plan) == pytest.approx(ds_z3o_gpu, rel=1e-6)
    assert plan.cpu_per_node - runtime == pytest.approx(ds_z3o_cpu, rel=1e-6)
    if gpus <= 4:  # DeepSpeed's ZeRO-2 offload figure switches to 4 bytes x GPUs above 4 GPUs
        ds_z2o_cpu, _ = estimate_zero2_model_states_mem_needs(n, num_gpus_per_node=gpus, cpu_offload=True)
        assert _plan(2, "optimizer", gpus).cpu_per_node - runtime == pytest.approx(ds_z2o_cpu, rel=1e-6)


def test_mixed_precision_costs_more_than_the_rule_of_thumb() -> None:
    plan = _plan(0, "none", 1)
    # 2 (bf16 weights) + 2 (bf16 grads) + 4 (fp32 grads) + 4 (fp32 master) + 8 (Adam moments) = 20 bytes/param
    assert _states(plan) / SEVEN_B.n_params == pytest.approx(20)
    assert _states(plan) > 12 * SEVEN_B.n_params


def test_checkpointing_shrinks_activations() -> None:
    plan = plan_memory(SEVEN_B, zero_stage=2, offload="none", gpus_per_node=8, num_nodes=1, device_memory_gib=80,
                       cpu_ram_gib=1000, micro_batch=4, seq_len=2048, bf16=True, checkpointing=True)
    assert plan.activations_checkpointed < plan.activations / 3


def test_parameter_count_on_meta_device(base_model: Path) -> None:
    shape = model_shape(base_model)
    assert shape.n_params == 134_515_008
    assert (shape.n_layers, shape.hidden, shape.vocab) == (30, 576, 49152)


def test_plan_that_cannot_fit_fails_and_says_what_would(base_model: Path) -> None:
    cfg = load_config(ROOT / "configs/regulator.yaml",
                      {"hardware.gpus_per_node": 1, "hardware.gpu_memory_gb": 2, "train.micro_batch_size": 8,
                       "train.effective_batch_size": 64})
    with pytest.raises(MemoryPlanError) as info:
        shape = model_shape(base_model)
        choose_plan(cfg, plan_table(cfg, shape), shape)
    message = str(info.value)
    assert "GiB per GPU of 1.7 usable" in message
    assert "Would fit" in message and "train.micro_batch_size=1" in message


def test_time_model_against_reference_table() -> None:
    # 6 x 7e9 params x (5000 examples x 1000 tokens x 3 epochs) / (4 GPUs x 312e12 x 0.4) = 1262 s = 0.35 h
    assert training_hours(7e9, 5000 * 1000 * 3, devices=4, peak_tflops=312, mfu=0.4) == pytest.approx(0.3506, 1e-3)
    rows = reference_comparison(load_config(ROOT / "configs/regulator.yaml"), tokens_per_example=1000)
    assert [r["model"] for r in rows] == ["7B", "13B", "70B", "70B"]
    # the quoted 4-8 h for 7B implies 1.8%-3.5% MFU: 0.3506 h x 0.4 / 8 h = 1.75%, / 4 h = 3.5%
    assert rows[0]["implied_mfu"] == "1.8%-3.5%"
