"""The seed's infrastructure table, planned row by row with our own arithmetic (``finetune plan --reference-table``).

The seed quotes, for full fine-tuning over 3 epochs of ~5k examples, the GPUs each model size needs without offload
and with ZeRO-3 + CPU offload, and the hours it takes. Each of those GPU configurations is planned here with the
audit's memory accounting (``training.memory.plan_memory``: DeepSpeed's ZeRO estimators, bf16 mixed precision with
fp32 master weights and fp32 gradients, 20N bytes of model states before partitioning) on the architecture of a
model of that size, read from the ``config.json`` shipped in ``finetune/architectures`` (Llama 2 chat: 7B, 13B and
70B are its sizes); no weights, no download. Time is 6N·tokens (plus attention, plus the recompute of activation
checkpointing) at a stated share of the GPUs' peak, plus ZeRO's collectives and CPU offload's optimizer step where
they cannot hide. Every assumption is a named figure below and is printed with the table; a row where our arithmetic
disagrees with the seed says so, and says what would hold instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from training.memory import (
    DEVICE_HEADROOM,
    GiB,
    MemoryPlan,
    ModelShape,
    Offload,
    candidate_choices,
    flops_per_token,
    offload_seconds,
    plan_memory,
    zero_comm_bytes,
)


@dataclass(frozen=True)
class GpuNode:
    """One kind of GPU server, with what planning and timing need of it."""

    gpu: str
    memory_gb: float  # per GPU, decimal GB as vendors quote it
    peak_tflops: float  # dense bf16 per GPU
    nvlink_gb_s: float  # collective bus bandwidth inside a node (what nccl-tests report as busbw)
    network_gb_s: float  # between nodes, per GPU
    pcie_gb_s: float  # host <-> GPU, per GPU (what CPU offload moves through)
    ram_gb: float  # CPU RAM per node
    gpus_per_node: int = 8


# DGX-class servers: DGX A100 320GB (1 TB RAM), DGX A100 640GB (2 TB), DGX H100 (2 TB); 8 GPUs each; one
# InfiniBand HDR 200 Gb/s (A100) or NDR 400 Gb/s (H100) port per GPU; PCIe 4 (A100) or 5 (H100) x16; NVLink 3
# all-reduce busbw ~230 GB/s, NVLink 4 ~360 GB/s (nccl-tests, without NVLink SHARP).
A100_40GB = GpuNode("A100 40GB", 40, 312, 230, 25, 25, 1000)
A100_80GB = GpuNode("A100 80GB", 80, 312, 230, 25, 25, 2000)
H100_80GB = GpuNode("H100 80GB", 80, 989, 360, 50, 50, 2000)


@dataclass(frozen=True)
class SeedRow:
    """One line of the seed's infrastructure table (3 epochs over ~5k examples)."""

    model: str
    architecture: str  # hub id whose config.json ships in finetune/architectures
    node: GpuNode
    gpus_no_offload: int
    gpus_offload: int  # with ZeRO-3 + CPU offload
    quoted_hours: tuple[float, float]


SEED_TABLE: tuple[SeedRow, ...] = (
    SeedRow("7B", "meta-llama/Llama-2-7b-chat-hf", A100_40GB, 4, 2, (4, 8)),
    SeedRow("13B", "meta-llama/Llama-2-13b-chat-hf", A100_40GB, 8, 4, (8, 16)),
    SeedRow("70B", "meta-llama/Llama-2-70b-chat-hf", A100_80GB, 8, 4, (24, 48)),
    SeedRow("70B", "meta-llama/Llama-2-70b-chat-hf", H100_80GB, 16, 8, (12, 24)),
)
SEED_EXAMPLES = 5000

# The seed's reference run: 6,800 examples, 3 epochs, ZeRO-2 on 8x A100 80GB, 14 hours. The seed does not name the
# model; it is planned with the one configs/regulator.yaml names.
REFERENCE_RUN_MODEL = "Qwen/Qwen2.5-7B-Instruct"
REFERENCE_RUN_EXAMPLES = 6800

# The time-model rows the audit compares its own estimate with (nominal sizes, the no-offload GPU counts).
REFERENCE_TABLE: list[dict[str, Any]] = [
    {"model": r.model, "params": float(r.model.removesuffix("B")) * 1e9, "gpus": r.gpus_no_offload,
     "gpu": r.node.gpu, "peak_tflops": r.node.peak_tflops, "quoted_hours": r.quoted_hours} for r in SEED_TABLE
]


@dataclass(frozen=True)
class Assumptions:
    """What every row is planned and timed under (printed with the table)."""

    seq_len: int = 1024  # tokens per example, every example filling it (configs/regulator.yaml's max_seq_len)
    epochs: int = 3
    effective_batch: int = 64  # examples per optimizer step (the seed's reference run)
    bf16: bool = True  # bf16 mixed precision with fp32 master weights, as the audit plans it
    # Share of peak the matmuls reach: 50% is what bench/NOTES.md measured at best (37-51% on one H100, 1.1B model,
    # micro-batch 8 x 2048); 20% allows for small micro-batches, ZeRO-3's gathers and padding on many GPUs.
    mfu: tuple[float, float] = (0.2, 0.5)
    cpu_adam_params_per_s: float = 4e9  # DeepSpeed CPU-Adam per node (ZeRO-Offload paper: 10B params in ~2.6 s)


@dataclass(frozen=True)
class Setup:
    """One GPU configuration the seed says works: a cell of its table, or its reference run."""

    model: str
    architecture: str
    node: GpuNode
    gpus: int
    offload: bool  # the seed's "ZeRO-3 + CPU offload" column
    seed_stage: int | None  # the ZeRO stage the seed names (3 with offload, 2 in the reference run), None: any
    quoted_hours: tuple[float, float]
    examples: int

    @property
    def label(self) -> str:
        """How the seed states it, e.g. ``7B, 4x A100 40GB, no offload``."""
        how = ("ZeRO-3 + CPU offload" if self.offload else
               f"ZeRO-{self.seed_stage}" if self.seed_stage is not None else "no offload")
        return f"{self.model}, {self.gpus}x {self.node.gpu}, {how}"


def seed_setups() -> list[Setup]:
    """Every configuration of the seed's table (no offload, then offload, per line), then its reference run."""
    setups = []
    for row in SEED_TABLE:
        for offload, gpus in ((False, row.gpus_no_offload), (True, row.gpus_offload)):
            setups.append(Setup(row.model, row.architecture, row.node, gpus, offload, 3 if offload else None,
                                row.quoted_hours, SEED_EXAMPLES))
    setups.append(Setup("reference run", REFERENCE_RUN_MODEL, A100_80GB, 8, False, 2, (14, 14),
                        REFERENCE_RUN_EXAMPLES))
    return setups


@dataclass(frozen=True)
class Fit:
    """A ZeRO stage / offload that fits, with the settings it fits under."""

    plan: MemoryPlan  # at ``micro_batch``
    checkpointing: bool
    micro_batch: int  # the largest power of two that fits (at most the effective batch per GPU)


@dataclass(frozen=True)
class RowPlan:
    """Our plan and time for one seed configuration, and whether they agree with the seed."""

    setup: Setup
    n_params: int
    # The seed's configuration as planned on its GPUs: the stage it names when it names one (else the cheapest of its
    # column) with the settings it fits under; None: it does not fit.
    fit: Fit | None
    min_gpus: int | None  # the fewest GPUs of this kind on which the column fits (None: not up to MAX_GPUS)
    hours: tuple[float, float] | None  # (optimistic, pessimistic)
    memory_agrees: bool
    time_agrees: bool | None  # None: no plan to time
    notes: list[str] = field(default_factory=list)


MAX_GPUS = 128


def _layout(node: GpuNode, gpus: int) -> tuple[int, int]:
    """``(gpus per node, nodes)`` for ``gpus`` GPUs of ``node``'s kind: part of one node, or whole nodes."""
    if gpus <= node.gpus_per_node:
        return gpus, 1
    return node.gpus_per_node, math.ceil(gpus / node.gpus_per_node)


def _plan(shape: ModelShape, node: GpuNode, gpus: int, stage: int, offload: Offload, a: Assumptions, *,
          micro_batch: int, checkpointing: bool) -> MemoryPlan:
    """The audit's memory plan of one choice on ``gpus`` GPUs of ``node``'s kind."""
    per_node, nodes = _layout(node, gpus)
    return plan_memory(shape, zero_stage=stage, offload=offload, gpus_per_node=per_node, num_nodes=nodes,
                       device_memory_gib=node.memory_gb * 1e9 / GiB, cpu_ram_gib=node.ram_gb * 1e9 / GiB,
                       micro_batch=micro_batch, seq_len=a.seq_len, bf16=a.bf16, checkpointing=checkpointing)


def best_fit(shape: ModelShape, node: GpuNode, gpus: int, stage: int, offload: Offload, a: Assumptions) -> Fit | None:
    """The settings under which ``stage``/``offload`` fits ``gpus`` GPUs: without activation checkpointing if it fits
    at micro-batch 1, else with it; then the largest power-of-two micro-batch that fits. None: nothing fits."""
    cap = max(1, a.effective_batch // gpus)
    for checkpointing in (False, True):
        best, micro = None, 1
        while micro <= cap:
            plan = _plan(shape, node, gpus, stage, offload, a, micro_batch=micro, checkpointing=checkpointing)
            if not plan.fits:
                break
            best, micro = Fit(plan, checkpointing, micro), micro * 2
        if best is not None:
            return best
    return None


def column_choices(offload: bool) -> list[tuple[int, Offload]]:
    """The ZeRO stage / offload pairs of one column of the seed's table, cheapest first."""
    return [(s, o) for s, o in candidate_choices(on_cpu=False) if (o != "none") == offload]


def _fits(shape: ModelShape, node: GpuNode, gpus: int, offload: bool, a: Assumptions) -> list[Fit]:
    """The choices of one column that fit ``gpus`` GPUs, cheapest first."""
    found = (best_fit(shape, node, gpus, s, o, a) for s, o in column_choices(offload))
    return [f for f in found if f is not None]


def min_gpus(shape: ModelShape, node: GpuNode, offload: bool, a: Assumptions) -> int | None:
    """The fewest GPUs of ``node``'s kind (1, 2, 4, then whole nodes) on which the column fits."""
    counts = [c for c in (1, 2, 4) if c < node.gpus_per_node]
    counts += range(node.gpus_per_node, MAX_GPUS + 1, node.gpus_per_node)
    return next((c for c in counts if _fits(shape, node, c, offload, a)), None)


@dataclass(frozen=True)
class TimeParts:
    """Seconds of one run: its matmul work at 100% of peak, ZeRO's collectives, CPU offload's additions."""

    work_at_peak: float
    collectives: float
    offload: float

    def hours(self, mfu: tuple[float, float]) -> tuple[float, float]:
        """``(optimistic, pessimistic)`` hours: the matmuls at the high end of ``mfu`` with the collectives hidden
        behind them, or at the low end with the collectives added; offload added to both (it is not hidden)."""
        fast, slow = self.work_at_peak / max(mfu), self.work_at_peak / min(mfu)
        return ((max(fast, self.collectives) + self.offload) / 3600.0,
                (slow + self.collectives + self.offload) / 3600.0)

    def implied_mfu(self, hours: float) -> float | None:
        """The share of peak the matmuls would run at for the run to take ``hours`` with the collectives and offload
        added; None when those alone take longer."""
        spare = hours * 3600.0 - self.collectives - self.offload
        return self.work_at_peak / spare if spare > 0 else None


def time_parts(shape: ModelShape, setup: Setup, fit: Fit, a: Assumptions) -> TimeParts:
    """The time of ``a.epochs`` over the setup's examples with the plan of ``fit``, in its parts."""
    plan, gpus = fit.plan, setup.gpus
    per_node, nodes = _layout(setup.node, gpus)
    tokens = setup.examples * a.epochs * a.seq_len
    steps = math.ceil(setup.examples * a.epochs / a.effective_batch)
    micro_steps = max(1, math.ceil(a.effective_batch / (fit.micro_batch * gpus)))
    work = tokens * flops_per_token(shape, seq_len=a.seq_len, checkpointing=fit.checkpointing)
    per_micro, per_step = zero_comm_bytes(shape.n_params, zero_stage=plan.zero_stage, devices=gpus, bf16=a.bf16)
    bandwidth = (setup.node.network_gb_s if nodes > 1 else setup.node.nvlink_gb_s) * 1e9
    offload: Offload = plan.offload  # type: ignore[assignment]
    off_micro, off_step = offload_seconds(shape.n_params, offload=offload, devices=gpus, gpus_per_node=per_node,
                                          cpu_adam_params_per_s=a.cpu_adam_params_per_s,
                                          pcie_gb_s=setup.node.pcie_gb_s)
    return TimeParts(work_at_peak=work / (gpus * setup.node.peak_tflops * 1e12),
                     collectives=steps * (micro_steps * per_micro + per_step) / bandwidth,
                     offload=steps * (micro_steps * off_micro + off_step))


def _gib(plan: MemoryPlan) -> str:
    """A plan's GiB per GPU, one decimal."""
    return f"{plan.device_total / GiB:.1f}"


def _memory_notes(setup: Setup, shape: ModelShape, fits: list[Fit], shown: Fit | None, a: Assumptions) -> list[str]:
    """What the memory plan of one seed configuration rests on, and where it departs from the seed: ``fits`` are
    the column's choices that fit, cheapest first; ``shown`` is the seed's own choice as planned (None: no fit)."""
    node, gpus = setup.node, setup.gpus
    usable = f"{node.memory_gb * 1e9 * DEVICE_HEADROOM / GiB:.1f} GiB usable"
    choices = column_choices(setup.offload)
    if not fits:
        stage, off = choices[-1]
        last = _plan(shape, node, gpus, stage, off, a, micro_batch=1, checkpointing=True)
        states = last.device_total - last.activations_checkpointed
        notes = [f"does not fit: even ZeRO-{stage}{'' if off == 'none' else ' + ' + off + ' offload'} needs "
                 f"{_gib(last)} GiB per GPU at micro-batch 1 with checkpointing ({states / GiB:.1f} GiB of it model "
                 f"states), of {usable} ({node.memory_gb * 1e9 / GiB:.1f} GiB raw)"
                 + ("" if off == "none" else f"; CPU RAM {last.cpu_per_node / GiB:.0f} GiB per node of "
                                             f"{node.ram_gb * 1e9 / GiB:.0f}")]
        if not setup.offload and _fits(shape, node, gpus, True, a):
            notes.append(f"with CPU offload it fits these {gpus} GPUs")
        return notes
    cheapest, notes = fits[0].plan, []
    index = choices.index((cheapest.zero_stage, cheapest.offload))  # type: ignore[arg-type]
    if index > 0:
        stage, off = choices[index - 1]
        below = _plan(shape, node, gpus, stage, off, a, micro_batch=1, checkpointing=True)
        notes.append(f"ZeRO-{stage}{'' if off == 'none' else ' + ' + off + ' offload'} does not fit "
                     f"({_gib(below)} GiB per GPU of {usable} at micro-batch 1 with checkpointing)")
    if shown is None:
        notes.append(f"the seed's ZeRO-{setup.seed_stage} does not fit; ZeRO-{cheapest.zero_stage} + "
                     f"{cheapest.offload} offload does")
        return notes
    if shown.checkpointing:
        notes.append("needs activation checkpointing")
    if shown.plan.offload != "none":
        notes.append(f"needs {shown.plan.cpu_per_node / GiB:.0f} GiB CPU RAM per node (DeepSpeed's estimate with "
                     f"its 1.5x pinned-buffer allowance; {node.ram_gb:g} GB assumed, a DGX-class node)")
    if shown.plan != cheapest:
        what = "no" if cheapest.offload == "none" else cheapest.offload
        notes.append(f"ZeRO-{cheapest.zero_stage} with {what} offload already fits, cheaper than the seed's "
                     f"ZeRO-{shown.plan.zero_stage}")
    return notes


def plan_setup(setup: Setup, shape: ModelShape, a: Assumptions) -> RowPlan:
    """Plan one seed configuration on its GPUs (the ZeRO stage it names, else the cheapest of its column that
    fits), the fewest GPUs that would do, our hours, and notes saying where and why we disagree."""
    node, gpus = setup.node, setup.gpus
    fits = _fits(shape, node, gpus, setup.offload, a)
    named = [f for f in fits if setup.seed_stage in (None, f.plan.zero_stage)]
    chosen = fits[0] if fits else None
    notes = _memory_notes(setup, shape, fits, named[0] if named else None, a)
    fewest = min_gpus(shape, node, setup.offload, a)
    if fewest is not None and fewest != gpus:
        notes.append(f"{'fits from' if fewest > gpus else 'fewer would do: fits from'} {fewest} "
                     f"GPU{'s' if fewest > 1 else ''}"
                     + (f" ({_layout(node, fewest)[1]} nodes)" if fewest > node.gpus_per_node else ""))
    hours, time_ok = None, None
    shown = timed = named[0] if named else chosen
    if timed is None and not setup.offload:
        offloaded = _fits(shape, node, gpus, True, a)
        timed = offloaded[0] if offloaded else None
        if timed is not None:
            notes.append(f"timed with ZeRO-{timed.plan.zero_stage} + {timed.plan.offload} offload on these GPUs")
    if timed is not None:
        parts = time_parts(shape, setup, timed, a)
        hours = parts.hours(a.mfu)
        lo, hi = setup.quoted_hours
        time_ok = lo <= hours[1] and hi >= hours[0]
        if not time_ok:
            implied = [parts.implied_mfu(h) for h in (hi, lo)]
            side = (f"{lo / hours[1]:.1f}-{hi / hours[0]:.1f}x ours" if lo > hours[1]
                    else f"{hours[0] / hi:.1f}-{hours[1] / lo:.1f}x faster than ours")
            at = "-".join(dict.fromkeys(f"{m:.1%}" if m is not None else "n/a" for m in implied))
            longer = "" if lo < hours[1] else (
                f", or with examples of ~{a.seq_len * lo / hours[1]:,.0f} tokens at our slowest"
                + (f" (its context: {shape.max_positions:,})" if shape.max_positions else ""))
            notes.append(f"time: the seed's {'-'.join(f'{h:g}' for h in sorted({lo, hi}))} h is {side}; it holds "
                         f"only at {at} of peak (ours: {min(a.mfu):.0%}-{max(a.mfu):.0%}){longer}")
    return RowPlan(setup, shape.n_params, shown, fewest, hours, bool(named), time_ok, notes)


def reference_plans(a: Assumptions | None = None) -> list[RowPlan]:
    """Plan every configuration of the seed's table and its reference run from the shipped architectures."""
    from finetune.models import planning_config
    from training.memory import config_shape

    a = a or Assumptions()
    shapes: dict[str, ModelShape] = {}
    rows = []
    for setup in seed_setups():
        if setup.architecture not in shapes:
            shapes[setup.architecture] = config_shape(planning_config(setup.architecture)[0])
        rows.append(plan_setup(setup, shapes[setup.architecture], a))
    return rows


def _choice(row: RowPlan) -> str:
    """The table's "our plan" cell: stage, offload, micro-batch, checkpointing."""
    if row.fit is None:
        return "nothing fits"
    p = row.fit.plan
    parts = [f"ZeRO-{p.zero_stage}", "no offload" if p.offload == "none" else f"offload {p.offload}"]
    parts.append(f"micro-batch <={row.fit.micro_batch}" + (", ckpt" if row.fit.checkpointing else ""))
    return ", ".join(parts)


def _verdict(row: RowPlan) -> str:
    """The table's "agrees" cell: memory and time, each yes or NO."""
    memory = "memory: yes" if row.memory_agrees else "memory: NO"
    time = {True: "time: yes", False: "time: NO", None: "time: -"}[row.time_agrees]
    return f"{memory}; {time}"


def render_reference_table(rows: list[RowPlan], a: Assumptions) -> str:
    """The seed's table beside ours, one line per configuration, then the assumptions and each row's notes."""
    header = ("#", "seed row", "model (params)", "our plan on those GPUs", "GiB/GPU", "CPU GiB/node", "fits",
              "min GPUs", "our h", "seed h", "agrees with the seed?")
    cells = []
    for i, r in enumerate(rows, 1):
        p = r.fit.plan if r.fit else None
        name = r.setup.architecture.split("/")[-1]
        cells.append((
            str(i), r.setup.label, f"{name} ({r.n_params / 1e9:.2f} B)", _choice(r),
            f"{p.device_total / GiB:.1f}" if p else "-", f"{p.cpu_per_node / GiB:.0f}" if p else "-",
            "yes" if p else "no", str(r.min_gpus) if r.min_gpus else f">{MAX_GPUS}",
            f"{r.hours[0]:.1f}-{r.hours[1]:.1f}" if r.hours else "-",
            "-".join(f"{h:g}" for h in sorted(set(r.setup.quoted_hours))), _verdict(r),
        ))
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    lines += ["", "Assumptions: " + assumptions_text(a), "", "Notes:"]
    for i, r in enumerate(rows, 1):
        lines += [f"  {i}. {r.setup.label}: " + "; ".join(r.notes)] if r.notes else []
    return "\n".join(lines)


def assumptions_text(a: Assumptions) -> str:
    """The assumptions every row holds under, in one paragraph."""
    nodes = ", ".join(f"{n.gpu}: {n.peak_tflops:g} TFLOP/s bf16, NVLink {n.nvlink_gb_s:g} GB/s, network "
                      f"{n.network_gb_s:g} GB/s/GPU, PCIe {n.pcie_gb_s:g} GB/s, {n.ram_gb:g} GB RAM per 8-GPU node"
                      for n in (A100_40GB, A100_80GB, H100_80GB))
    precision = ("bf16 mixed precision (fp32 master weights and fp32 gradients: 20 bytes a parameter before ZeRO "
                 "partitions them, DeepSpeed's accounting)" if a.bf16 else "fp32")
    return (f"{a.epochs} epochs; every example {a.seq_len} tokens; effective batch {a.effective_batch}; "
            f"{precision}; AdamW; {DEVICE_HEADROOM:.0%} of GPU memory usable; "
            f"activations as the audit counts them (checkpointing only where needed); micro-batch the largest power "
            f"of two that fits; matmuls at {a.mfu[0]:.0%}-{a.mfu[1]:.0%} of peak (recompute counted); ZeRO "
            f"collectives hidden (optimistic) or added (pessimistic); CPU-Adam {a.cpu_adam_params_per_s / 1e9:g}B "
            f"parameters/s per node, offload transfers not hidden; {nodes}. Models: the Llama 2 chat architectures "
            f"for 7B/13B/70B, {REFERENCE_RUN_MODEL} (configs/regulator.yaml) for the reference run (the seed does not "
            "name its model).")
