"""Memory planning for full fine-tuning: model states per ZeRO stage and offload choice, activations, time.

The model-state accounting follows DeepSpeed's own (``estimate_zero2/3_model_states_mem_needs``): in mixed
precision every parameter costs 2 bytes of 16-bit weights, 2 of 16-bit gradients, 4 of fp32 gradients, 4 of fp32
master weights and 8 of Adam moments — 20 bytes before partitioning, not the 12 of the rule of thumb.
The FSDP backend (PyTorch FSDP2 full sharding, ZeRO-3-like) has its own accounting: :func:`fsdp_model_states`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

GiB = 1024**3
OFFLOADS = ("none", "optimizer", "optimizer+params")
CPU_BUFFER_FACTOR = 1.5  # DeepSpeed's allowance for pinned buffers when model states live in CPU RAM
DEVICE_HEADROOM = 0.9  # keep 10% of device memory for the allocator, kernels' workspaces and fragmentation
RUNTIME_OVERHEAD_GIB = 1.0  # torch/DeepSpeed/Python resident memory of one training process

Offload = Literal["none", "optimizer", "optimizer+params"]
BACKENDS = ("deepspeed", "fsdp")


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about a decoder-only transformer (read from its config, no weights)."""

    n_params: int
    largest_layer_params: int
    n_layers: int
    hidden: int
    intermediate: int
    kv_hidden: int
    vocab: int
    max_positions: int | None = None  # the context the model was trained for (config's max_position_embeddings)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device and per node CPU RAM for one ZeRO stage / offload / device-count choice."""

    zero_stage: int
    offload: str
    total_devices: int
    weights: float
    gradients: float
    master_weights: float
    optimizer_moments: float
    fp32_gradients: float
    activations: float
    activations_checkpointed: float
    device_total: float
    cpu_per_node: float
    fits: bool
    reason: str
    backend: str = "deepspeed"

    def as_dict(self) -> dict:
        """Return the plan as a JSON-able dict (GiB figures rounded for reports)."""
        return asdict(self)


def model_shape(model_dir: str | Path) -> ModelShape:
    """Count parameters of a Hugging Face model folder on the meta device: no weights are loaded."""
    from transformers import AutoConfig

    return config_shape(AutoConfig.from_pretrained(model_dir))


def config_shape(config: Any) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face model config, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    unique = {id(p): p for p in model.parameters()}  # tied embeddings count once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", heads) or heads
    return ModelShape(
        n_params=sum(p.numel() for p in unique.values()),
        largest_layer_params=largest,
        n_layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
        kv_hidden=config.hidden_size * kv_heads // heads,
        vocab=config.vocab_size,
        max_positions=getattr(config, "max_position_embeddings", None),
    )


def activation_bytes(
    shape: ModelShape, *, micro_batch: int, seq_len: int, bf16: bool, checkpointing: bool
) -> float:
    """Activation memory of one micro-batch (memory-efficient attention: no seq x seq score matrix kept).

    Per layer and token a Llama block keeps its norm inputs/outputs, q/k/v, attention output, and the MLP's gate,
    up, activation and product for backward: about 5h + 2h_kv + 4I values. bf16 here means our autocast path: the
    matmul outputs (q/k/v, MLP) are bf16 but the residual stream and norms stay fp32, so the 5h part is 4 bytes;
    logits are bf16 out of the LM head, then fp32 with an fp32 gradient (2 + 4 + 4 bytes a vocab entry). With
    checkpointing only the block input is kept, plus one block recomputed at a time.
    """
    tokens = micro_batch * seq_len
    matmul_elem = 2 if bf16 else 4
    per_layer = tokens * (5 * shape.hidden * 4 + (2 * shape.kv_hidden + 4 * shape.intermediate) * matmul_elem)
    logits = tokens * shape.vocab * (10 if bf16 else 8)
    if checkpointing:
        return float(shape.n_layers * tokens * shape.hidden * 4 + per_layer + logits)
    return float(shape.n_layers * per_layer + logits)


def plan_memory(
    shape: ModelShape,
    *,
    zero_stage: int,
    offload: Offload,
    gpus_per_node: int,
    num_nodes: int,
    device_memory_gib: float,
    cpu_ram_gib: float,
    micro_batch: int,
    seq_len: int,
    bf16: bool,
    checkpointing: bool,
    on_cpu: bool = False,
    backend: str = "deepspeed",
) -> MemoryPlan:
    """Plan the memory of one configuration; ``fits`` says whether it fits the declared hardware.

    On a CPU-only node the "device" is CPU RAM: model states and activations of every process share it.
    ``backend`` "fsdp" plans FSDP2 full sharding (:func:`fsdp_model_states`; ZeRO stage 3 only).
    """
    n = shape.n_params
    g = max(1, gpus_per_node * num_nodes)
    if zero_stage not in (0, 1, 2, 3) or offload not in OFFLOADS:
        raise ValueError(f"unknown ZeRO stage {zero_stage!r} or offload {offload!r}")
    if backend_problems(backend, zero_stage, offload):
        raise ValueError("; ".join(backend_problems(backend, zero_stage, offload)))
    if offload == "optimizer+params" and zero_stage != 3:
        raise ValueError("parameter offload needs ZeRO stage 3")
    if offload != "none" and zero_stage == 0:
        raise ValueError("optimizer offload needs ZeRO stage >= 1")
    w_bytes = 2 if bf16 else 4
    weights = float(w_bytes * n)
    grads = float(w_bytes * n)
    # ZeRO 1-3 keep their own fp32 partition of the weights even when the module is fp32 (measured:
    # bench/bench_memory.py), and stage 3 keeps the gradients only in an fp32 partition.
    master = 4.0 * n if bf16 or zero_stage >= 1 else 0.0
    moments = 8.0 * n
    grads32 = 4.0 * n if bf16 or zero_stage == 3 else 0.0
    shard = 1.0 / g
    if zero_stage >= 1:
        master, moments, grads32 = master * shard, moments * shard, grads32 * shard
    if zero_stage == 2:
        grads *= shard
    if zero_stage == 3:
        # Stage 3 reduce-scatters gradients straight into the fp32 partition (DeepSpeed's estimator counts no
        # separate 16-bit gradient partition); the gathered largest layer is the working buffer.
        grads = 0.0
    if zero_stage == 3:
        weights = weights * shard + 4.0 * shape.largest_layer_params
    optimizer_states = master + moments + grads32
    cpu = 0.0
    if offload in ("optimizer", "optimizer+params"):
        cpu += optimizer_states * min(gpus_per_node, g) * CPU_BUFFER_FACTOR
        master = moments = grads32 = 0.0
    if offload == "optimizer+params":
        cpu += w_bytes * n / num_nodes * CPU_BUFFER_FACTOR
        weights = 4.0 * shape.largest_layer_params
    if backend == "fsdp":
        weights, grads, master, moments, grads32, cpu = fsdp_model_states(
            shape, offload=offload, gpus_per_node=gpus_per_node, devices=g, bf16=bf16)
    acts = activation_bytes(shape, micro_batch=micro_batch, seq_len=seq_len, bf16=bf16, checkpointing=False)
    acts_ckpt = activation_bytes(shape, micro_batch=micro_batch, seq_len=seq_len, bf16=bf16, checkpointing=True)
    used_acts = acts_ckpt if checkpointing else acts
    device = weights + grads + master + moments + grads32 + used_acts
    procs = gpus_per_node if not on_cpu else max(1, gpus_per_node)
    if on_cpu:
        cpu_total = (device + RUNTIME_OVERHEAD_GIB * GiB) * procs + cpu
        fits = cpu_total <= cpu_ram_gib * GiB
        reason = f"needs {cpu_total / GiB:.1f} GiB of {cpu_ram_gib:.0f} GiB CPU RAM"
        return MemoryPlan(zero_stage, offload, g, weights, grads, master, moments, grads32, acts, acts_ckpt,
                          device, cpu_total, fits, reason, backend)
    cpu_total = cpu + RUNTIME_OVERHEAD_GIB * GiB * gpus_per_node
    budget = device_memory_gib * GiB * DEVICE_HEADROOM
    fits_dev, fits_cpu = device <= budget, cpu_total <= cpu_ram_gib * GiB
    reason = (
        f"{device / GiB:.1f} GiB per GPU of {budget / GiB:.1f} usable; "
        f"{cpu_total / GiB:.1f} GiB CPU RAM per node of {cpu_ram_gib:.0f}"
    )
    return MemoryPlan(zero_stage, offload, g, weights, grads, master, moments, grads32, acts, acts_ckpt,
                      device, cpu_total, fits_dev and fits_cpu, reason, backend)


def fsdp_model_states(shape: ModelShape, *, offload: Offload, gpus_per_node: int, devices: int,
                      bf16: bool) -> tuple[float, float, float, float, float, float]:
    """Model-state bytes per device under FSDP2 full sharding, and per node CPU RAM for offload: ``(weights,
    gradients, master weights, optimizer moments, fp32 gradients, cpu)`` in :class:`MemoryPlan`'s terms.

    The sharded fp32 parameters are the master weights (no second copy), gradients are reduce-scattered into fp32
    shards and the Adam moments are sharded: 16 bytes a parameter over the devices, where ZeRO-3 in fp32 holds 20
    (its own fp32 partition beside the module's). On top comes the unsharded working set, in the compute dtype
    (bf16 under MixedPrecisionPolicy): the root unit (its largest module, the embeddings, held from forward to
    backward), two decoder layers (the one computing and the one prefetched) and one layer's unsharded gradients.
    With CPUOffloadPolicy (offload optimizer+params) the shards live in the node's RAM and the device holds the
    working set only.
    """
    n, g = shape.n_params, max(1, devices)
    layer = max(0, n - shape.largest_layer_params) / max(1, shape.n_layers)
    working = (2.0 if bf16 else 4.0) * (shape.largest_layer_params + 3 * layer)
    if offload == "optimizer+params":
        return working, 0.0, 0.0, 0.0, 0.0, 16.0 * n * min(gpus_per_node, g) / g
    return 4.0 * n / g + working, 4.0 * n / g, 0.0, 8.0 * n / g, 0.0, 0.0


def backend_problems(backend: str, zero_stage: int | str, offload: str) -> list[str]:
    """What ``backend`` cannot do of a ZeRO stage / offload choice ("auto" always passes), as config problems."""
    if backend not in BACKENDS:
        return [f"train.backend: must be one of {', '.join(BACKENDS)}, got {backend!r}"]
    if backend == "deepspeed":
        return []
    problems = []
    if zero_stage not in ("auto", 3):
        problems.append(f"train.zero_stage: backend fsdp shards parameters, gradients and optimizer states over all "
                        f"ranks (FSDP2 fully_shard, what ZeRO-3 does) and has no ZeRO-{zero_stage}; set zero_stage "
                        "3 or auto, or use backend deepspeed")
    if offload == "optimizer":
        problems.append("train.offload: FSDP2 offloads parameters, gradients and the optimizer step together "
                        "(CPUOffloadPolicy), never the optimizer alone; set offload optimizer+params, none or auto, "
                        "or use backend deepspeed for ZeRO-Offload of the optimizer")
    return problems


def candidate_choices(on_cpu: bool, backend: str = "deepspeed") -> list[tuple[int, Offload]]:
    """ZeRO stage / offload pairs in order of cost: least communication and host traffic first.

    FSDP full sharding is the ZeRO-3 row, with or (on GPUs) without its CPU offload of everything.
    """
    if backend == "fsdp":
        return [(3, "none")] if on_cpu else [(3, "none"), (3, "optimizer+params")]
    if on_cpu:
        return [(0, "none"), (1, "none"), (2, "none"), (3, "none")]
    return [(0, "none"), (1, "none"), (2, "none"), (3, "none"), (2, "optimizer"), (3, "optimizer"),
            (3, "optimizer+params")]


def training_flops(n_params: int, tokens: float) -> float:
    """Training FLOPs of a dense transformer: 6 N per token (forward 2N, backward 4N)."""
    return 6.0 * n_params * tokens


def training_hours(n_params: int, tokens: float, *, devices: int, peak_tflops: float, mfu: float) -> float:
    """Wall hours to train ``tokens`` at ``mfu`` of ``peak_tflops`` per device on ``devices`` devices."""
    return training_flops(n_params, tokens) / (devices * peak_tflops * 1e12 * mfu) / 3600.0


def flops_per_token(shape: ModelShape, *, seq_len: int, checkpointing: bool) -> float:
    """Training FLOPs per token: 6N for the weights' matmuls (forward 2N, backward 4N) plus attention's 12·L·h·s
    (scores and weighted sum, forward and backward; bench/bench_gpu.py counts the same). Activation checkpointing
    runs the forward once more: 8N + 16·L·h·s."""
    weights, attention = 6.0 * shape.n_params, 12.0 * shape.n_layers * shape.hidden * seq_len
    return (weights + attention) * (4.0 / 3.0 if checkpointing else 1.0)


def zero_comm_bytes(n_params: int, *, zero_stage: int, devices: int, bf16: bool) -> tuple[float, float]:
    """Bytes each device moves in ring collectives, ``(per micro-step, per optimizer step)``; a collective over the
    16-bit weights or gradients moves ``(g-1)/g`` of them per device.

    ZeRO-3 gathers the weights for the forward and again for the backward and reduce-scatters the gradients at
    every micro-step; ZeRO-2 reduce-scatters the gradients at every micro-step and gathers the updated weights once a
    step; ZeRO-0/1 reduce (all-reduce, or reduce-scatter + all-gather) once a step."""
    if devices <= 1:
        return 0.0, 0.0
    volume = (2 if bf16 else 4) * n_params * (devices - 1) / devices
    if zero_stage == 3:
        return 3.0 * volume, 0.0
    if zero_stage == 2:
        return volume, volume
    return 0.0, 2.0 * volume


def offload_seconds(n_params: int, *, offload: Offload, devices: int, gpus_per_node: int,
                    cpu_adam_params_per_s: float, pcie_gb_s: float) -> tuple[float, float]:
    """Seconds that CPU offload adds, ``(per micro-step, per optimizer step)``, with no overlap.

    Optimizer offload: each step the node's CPU Adam updates its devices' share of the parameters, and each device
    sends its fp32 gradient partition down and takes its 16-bit weights back over PCIe (6 bytes a parameter).
    Parameter offload adds, every micro-step, the fetch of each device's 16-bit weight partition for the forward
    and again for the backward (4 bytes a parameter)."""
    if offload == "none":
        return 0.0, 0.0
    share = n_params / max(1, devices)
    step = share * min(gpus_per_node, devices) / cpu_adam_params_per_s + 6.0 * share / (pcie_gb_s * 1e9)
    micro = 4.0 * share / (pcie_gb_s * 1e9) if offload == "optimizer+params" else 0.0
    return micro, step
