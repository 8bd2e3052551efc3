"""Stage 2 decisions: reconcile the declared hardware with what infra detection found, pick precision and the
cheapest ZeRO stage / offload that fits what is really there, and build the DeepSpeed config training will use."""

from __future__ import annotations

from dataclasses import dataclass

from finetune.audit import choose_plan, plan_table
from finetune.config import RunConfig
from foundation.errors import InfraError
from training.deepspeed_config import build_deepspeed_config
from training.infra import InfraReport, checkpoint_footprint_gb, hardware_mismatches
from training.memory import ModelShape


@dataclass(frozen=True)
class TrainingSetup:
    """What training will run on: effective config, precision, plan, DeepSpeed config, notes for the report."""

    cfg: RunConfig
    bf16: bool
    zero_stage: int
    offload: str
    world_size: int
    ds_config: dict
    notes: list[str]


def effective_config(cfg: RunConfig, infra: InfraReport) -> tuple[RunConfig, list[str]]:
    """The config with its hardware section replaced by what is present, when the declared one is absent.

    Raises InfraError when the declared hardware is missing and ``hardware.allow_fallback`` is off.
    """
    hw = cfg.hardware
    problems = hardware_mismatches(infra, accelerator=hw.accelerator, gpus_per_node=hw.gpus_per_node,
                                   gpu_memory_gb=hw.gpu_memory_gb, cpu_ram_gb=hw.cpu_ram_gb)
    if not problems:
        return cfg, []
    if not hw.allow_fallback:
        raise InfraError(
            "declared hardware is not present: " + "; ".join(problems)
            + ". Fix the hardware section, or set hardware.allow_fallback: true to train on what is here."
        )
    if infra.accelerator == "cuda":
        new_hw = hw.model_copy(update={"gpus_per_node": infra.gpu_count, "gpu_memory_gb": min(infra.gpu_memory_gb),
                                       "num_nodes": 1, "hostfile": None,
                                       "cpu_ram_gb": min(hw.cpu_ram_gb, infra.cpu_ram_gb)})
    else:
        new_hw = hw.model_copy(update={"accelerator": "cpu", "gpus_per_node": 0, "gpu_memory_gb": 0.0,
                                       "num_nodes": 1, "hostfile": None, "cpu_processes": 1,
                                       "cpu_ram_gb": min(hw.cpu_ram_gb, infra.cpu_ram_gb)})
    fallback = cfg.model_copy(update={"hardware": new_hw})
    notes = [f"fallback: {p}" for p in problems]
    if infra.accelerator != "cuda" and cfg.train.torch_compile:
        fallback = fallback.model_copy(update={"train": fallback.train.model_copy(update={"torch_compile": False})})
        notes.append("fallback: train.torch_compile off on CPU (compiling costs more than it saves here)")
    per_step = cfg.train.micro_batch_size * fallback.world_size()
    if cfg.train.effective_batch_size % per_step:
        fallback = fallback.model_copy(update={"train": fallback.train.model_copy(
            update={"micro_batch_size": min(cfg.train.micro_batch_size, cfg.train.effective_batch_size)})})
    return fallback, notes


def choose_precision(cfg: RunConfig, infra: InfraReport) -> tuple[bool, str]:
    """bf16 or fp32 for the run; an explicit bf16 request on hardware without bf16 is an error."""
    want = cfg.train.precision
    if want == "fp32":
        return False, "fp32 requested"
    if infra.bf16_supported:
        return True, f"bf16 ({infra.bf16_reason})"
    if want == "bf16" and not cfg.hardware.allow_fallback:
        raise InfraError(f"train.precision is bf16 but this hardware has no bf16 support ({infra.bf16_reason})")
    return False, f"fp32: {infra.bf16_reason}"


def choose_training_setup(cfg: RunConfig, infra: InfraReport, shape: ModelShape) -> TrainingSetup:
    """Pick precision and the cheapest fitting ZeRO stage/offload on the real hardware; build the DeepSpeed config."""
    eff, notes = effective_config(cfg, infra)
    bf16, why = choose_precision(eff, infra)
    notes.append(why)
    eff = eff.model_copy(update={"train": eff.train.model_copy(update={"precision": "bf16" if bf16 else "fp32"})})
    plan = choose_plan(eff, plan_table(eff, shape), shape)
    footprint = checkpoint_footprint_gb(shape.n_params, keep_last=eff.train.keep_last_checkpoints, bf16=bf16)
    if footprint > infra.disk_free_gb:
        raise InfraError(f"checkpoints need ~{footprint:.1f} GB but only {infra.disk_free_gb} GB is free at "
                         f"{infra.disk_path}: free disk or lower train.keep_last_checkpoints")
    notes.append(f"checkpoint footprint ~{footprint:.2f} GB of {infra.disk_free_gb} GB free")
    on_cpu = eff.hardware.accelerator == "cpu"
    ds = build_deepspeed_config(
        micro_batch_size=eff.train.micro_batch_size, grad_accum_steps=eff.grad_accum_steps(),
        world_size=eff.world_size(), zero_stage=plan.zero_stage,
        offload_optimizer=plan.offload != "none", offload_params=plan.offload == "optimizer+params",
        bf16=bf16, grad_clip=eff.train.grad_clip, lr=eff.train.lr, weight_decay=eff.train.weight_decay,
        betas=(0.9, 0.95), on_cpu=on_cpu,
    )
    sharding = "FSDP2 full shard" if plan.backend == "fsdp" else f"ZeRO-{plan.zero_stage}"
    notes.append(f"{sharding} / offload {plan.offload}: {plan.reason}")
    return TrainingSetup(eff, bf16, plan.zero_stage, plan.offload, eff.world_size(), ds, notes)
