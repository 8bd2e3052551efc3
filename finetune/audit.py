"""Stage 1 logic: is full fine-tuning justified, and does it fit the declared hardware?

Plain functions over the run config: parameter count without weights, a memory plan for every ZeRO stage /
offload / device count, a training-time estimate from 6·N·tokens at a stated MFU checked against the reference
infrastructure table, and a verdict from notation coverage, data volume and a known LoRA gap.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.config import RunConfig
from finetune.reference_plan import REFERENCE_TABLE
from foundation.errors import MemoryPlanError
from training.memory import (
    GiB,
    MemoryPlan,
    ModelShape,
    candidate_choices,
    plan_memory,
    training_hours,
)

GPU_COUNTS = (1, 2, 4, 8)
_WORD = re.compile(r"\S+")


@dataclass
class AuditReport:
    """Everything the audit found; ``chosen`` is the plan infra_check starts from."""

    model_name: str
    n_params: int
    chosen: dict
    plans: list[dict]
    train_tokens: float
    estimated_hours: float
    reference_rows: list[dict]
    tokens_per_word_domain: float
    tokens_per_word_general: float
    notation_ratio: float
    verdict: str
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-able form for the stage manifest."""
        return asdict(self)


def tokens_per_word(tokenizer, texts: list[str]) -> float:
    """Average tokens per whitespace-separated word: a measure of how foreign the notation is to the tokenizer."""
    words = sum(len(_WORD.findall(t)) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(1, words)


def _bf16(cfg: RunConfig) -> bool:
    return cfg.train.precision != "fp32"


def plan_table(cfg: RunConfig, shape: ModelShape) -> list[MemoryPlan]:
    """Memory plans for every stage/offload choice and device count (declared count included)."""
    hw, on_cpu = cfg.hardware, cfg.hardware.accelerator == "cpu"
    counts = [hw.cpu_processes] if on_cpu else sorted({*GPU_COUNTS, hw.gpus_per_node})
    plans = []
    for devices in counts:
        for stage, offload in candidate_choices(on_cpu, cfg.train.backend):
            plans.append(
                plan_memory(
                    shape, zero_stage=stage, offload=offload, gpus_per_node=devices, num_nodes=hw.num_nodes,
                    device_memory_gib=hw.gpu_memory_gb * 1e9 / GiB, cpu_ram_gib=hw.cpu_ram_gb * 1e9 / GiB,
                    micro_batch=cfg.train.micro_batch_size, seq_len=cfg.model.max_seq_len, bf16=_bf16(cfg),
                    checkpointing=cfg.model.gradient_checkpointing, on_cpu=on_cpu, backend=cfg.train.backend,
                )
            )
    return plans


def choose_plan(cfg: RunConfig, plans: list[MemoryPlan], shape: ModelShape | None = None) -> MemoryPlan:
    """The cheapest plan on the declared device count that fits and honours a fixed stage/offload in the config.

    Raises MemoryPlanError saying what would fit (more devices, checkpointing, a smaller micro-batch) when none does.
    """
    hw = cfg.hardware
    declared = hw.cpu_processes if hw.accelerator == "cpu" else hw.gpus_per_node
    wanted_stage, wanted_offload = cfg.train.zero_stage, cfg.train.offload
    mine = [p for p in plans if p.total_devices == declared * hw.num_nodes]
    allowed = [
        p for p in mine
        if wanted_stage in ("auto", p.zero_stage) and wanted_offload in ("auto", p.offload)
    ]
    for plan in allowed:
        if plan.fits:
            return plan
    closest = min(allowed or mine, key=lambda p: p.device_total)
    hints = [f"ZeRO-{p.zero_stage}/{p.offload} on {p.total_devices} device(s)" for p in plans if p.fits][:3]
    if shape is not None:
        hints += _smaller_batch_hints(cfg, shape)
    raise MemoryPlanError(
        f"no ZeRO stage/offload fits the declared hardware for {cfg.model.name}: best is ZeRO-{closest.zero_stage}/"
        f"{closest.offload}, {closest.reason}. "
        + (f"Would fit: {'; '.join(hints)}." if hints else "Nothing tried fits: declare more or larger devices.")
    )


def _smaller_batch_hints(cfg: RunConfig, shape: ModelShape) -> list[str]:
    """Settings on the declared hardware that would fit: gradient checkpointing and/or micro-batch 1."""
    hints = []
    for micro, ckpt in ((cfg.train.micro_batch_size, True), (1, cfg.model.gradient_checkpointing), (1, True)):
        trial = cfg.model_copy(update={
            "model": cfg.model.model_copy(update={"gradient_checkpointing": ckpt}),
            "train": cfg.train.model_copy(update={"micro_batch_size": micro, "effective_batch_size": micro}),
        })
        hw = trial.hardware
        declared = (hw.cpu_processes if hw.accelerator == "cpu" else hw.gpus_per_node) * hw.num_nodes
        fitting = [p for p in plan_table(trial, shape) if p.fits and p.total_devices == declared]
        if fitting:
            p = fitting[0]
            hints.append(f"model.gradient_checkpointing={str(ckpt).lower()} and train.micro_batch_size={micro} "
                         f"with ZeRO-{p.zero_stage}/{p.offload} ({p.reason})")
            break
    return hints


def reference_comparison(cfg: RunConfig, tokens_per_example: float) -> list[dict]:
    """Our time model on the reference table's rows (3 epochs over ~5k examples) next to the quoted hours.

    ``implied_mfu`` is the utilisation the quoted hours correspond to under 6·N·tokens: a quote far below the
    assumed MFU means the quote includes other costs (longer sequences, evaluation, restarts, queueing).
    """
    tokens = 5000 * tokens_per_example * 3
    rows = []
    for row in REFERENCE_TABLE:
        n, gpus, peak = int(row["params"]), row["gpus"], row["peak_tflops"]
        hours = training_hours(n, tokens, devices=gpus, peak_tflops=peak, mfu=cfg.hardware.assumed_mfu)
        lo, hi = row["quoted_hours"]
        implied = [training_hours(n, tokens, devices=gpus, peak_tflops=peak, mfu=1.0) / h for h in (hi, lo)]
        rows.append({**row, "quoted_hours": f"{lo}-{hi}", "estimated_hours": round(hours, 2),
                     "implied_mfu": f"{implied[0]:.1%}-{implied[1]:.1%}"})
    return rows


def verdict(cfg: RunConfig, notation_ratio: float, n_train: int, known_gap: float | None) -> tuple[str, list[str]]:
    """Decide whether full FT is justified; return ('justified' | 'questionable', reasons)."""
    a = cfg.audit
    reasons, pro, con = [], 0, 0
    if notation_ratio >= a.notation_ratio_threshold:
        pro += 1
        reasons.append(f"domain notation costs {notation_ratio:.2f}x the tokens per word of general text "
                       f"(>= {a.notation_ratio_threshold}): new symbols favour updating every weight")
    else:
        con += 1
        reasons.append(f"domain text tokenises like general text ({notation_ratio:.2f}x < {a.notation_ratio_threshold})")
    if n_train >= a.min_examples_for_full_ft:
        pro += 1
        reasons.append(f"{n_train} training examples >= {a.min_examples_for_full_ft}: enough data for full FT")
    else:
        con += 1
        reasons.append(f"only {n_train} training examples < {a.min_examples_for_full_ft}: full FT risks overfitting")
    if known_gap is not None:
        if known_gap > 0:
            pro += 1
            reasons.append(f"an earlier run measured full FT {known_gap:+.3f} F1 over LoRA")
        else:
            con += 1
            reasons.append(f"an earlier run measured full FT {known_gap:+.3f} F1 vs LoRA: LoRA may be enough")
    else:
        reasons.append("no earlier full-FT vs LoRA measurement: this run's evaluation will provide one")
    return ("justified" if pro > con else "questionable"), reasons


def render_markdown(report: AuditReport, cfg: RunConfig) -> str:
    """The audit report as markdown (the Prefect artifact and the run folder's audit.md)."""
    c = report.chosen
    lines = [
        f"# Audit: {report.model_name}",
        f"**Verdict: full fine-tuning is {report.verdict}.**",
        *[f"- {r}" for r in report.reasons],
        "",
        f"Parameters: **{report.n_params / 1e6:.1f} M** (counted on the meta device). "
        f"Chosen: **ZeRO-{c['zero_stage']} / offload {c['offload']}** on {c['total_devices']} device(s): {c['reason']}.",
        f"Training tokens: {report.train_tokens:,.0f}; estimated **{report.estimated_hours:.2f} h** at "
        f"{cfg.hardware.assumed_mfu:.0%} MFU of {cfg.hardware.peak_tflops} TFLOP/s per device.",
        "",
        "## Memory plan (GiB per device; CPU RAM per node)",
        "| devices | ZeRO | offload | weights | grads | fp32 master | moments | fp32 grads | activations | act. (ckpt) | device total | CPU/node | fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report.plans:
        g = {k: (v / GiB if isinstance(v, float) else v) for k, v in p.items()}
        lines.append(
            f"| {p['total_devices']} | {p['zero_stage']} | {p['offload']} | {g['weights']:.2f} | {g['gradients']:.2f} | "
            f"{g['master_weights']:.2f} | {g['optimizer_moments']:.2f} | {g['fp32_gradients']:.2f} | {g['activations']:.2f} | "
            f"{g['activations_checkpointed']:.2f} | {g['device_total']:.2f} | {g['cpu_per_node']:.2f} | {'yes' if p['fits'] else 'no'} |"
        )
    lines += [
        "",
        "## Time model vs the reference infrastructure table (3 epochs over ~5k examples)",
        "| model | GPUs | quoted h | our estimate h | MFU the quote implies |",
        "|---|---|---|---|---|",
        *[f"| {r['model']} | {r['gpus']}x{r['gpu']} | {r['quoted_hours']} | {r['estimated_hours']} | {r['implied_mfu']} |"
          for r in report.reference_rows],
        "",
        f"Tokens per word: domain {report.tokens_per_word_domain:.2f}, general {report.tokens_per_word_general:.2f}.",
    ]
    return "\n".join(lines)


def run_audit(
    cfg: RunConfig,
    *,
    shape: ModelShape,
    tokenizer,
    domain_texts: list[str],
    general_texts: list[str],
    known_lora_gap: float | None,
) -> AuditReport:
    """Run the whole audit; raises MemoryPlanError when nothing fits the declared hardware."""
    plans = plan_table(cfg, shape)
    chosen = choose_plan(cfg, plans, shape)
    tpw_domain = tokens_per_word(tokenizer, domain_texts)
    tpw_general = tokens_per_word(tokenizer, general_texts)
    ratio = tpw_domain / max(tpw_general, 1e-9)
    per_example = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in domain_texts)
    per_example = min(per_example / max(1, len(domain_texts)), cfg.model.max_seq_len)
    # training reports: the natural mix's train share plus the rebalanced pool (drills are not reports: not counted)
    n_train = int(cfg.data.n_examples * cfg.data.split_fractions[0])
    if cfg.data.source == "synthetic" or cfg.data.mix_synthetic:
        n_train += cfg.data.train_balanced
    tokens = n_train * per_example * cfg.train.epochs
    hw = cfg.hardware
    devices = hw.cpu_processes if hw.accelerator == "cpu" else hw.gpus_per_node * hw.num_nodes
    hours = training_hours(shape.n_params, tokens, devices=devices, peak_tflops=hw.peak_tflops, mfu=hw.assumed_mfu)
    gap = cfg.audit.known_lora_gap if cfg.audit.known_lora_gap is not None else known_lora_gap
    decision, reasons = verdict(cfg, ratio, n_train, gap)
    return AuditReport(
        model_name=cfg.model.name, n_params=shape.n_params, chosen=chosen.as_dict(),
        plans=[p.as_dict() for p in plans], train_tokens=tokens, estimated_hours=hours,
        reference_rows=reference_comparison(cfg, per_example), tokens_per_word_domain=tpw_domain,
        tokens_per_word_general=tpw_general, notation_ratio=ratio, verdict=decision, reasons=reasons,
    )


def general_sample_texts() -> list[str]:
    """General-domain texts for the notation measure: the shipped general prompts (both lists)."""
    from evaluation.forgetting import load_general_prompts

    return load_general_prompts("heldout") + load_general_prompts("replay")


def known_lora_gap(registry_dir: Path) -> float | None:
    """The full-FT minus LoRA F1 margin recorded by the production model's card, if there is one."""
    from finetune.registry import production_version, read_card

    version = production_version(registry_dir) if Path(registry_dir).exists() else None
    if version is None:
        return None
    margin = read_card(registry_dir, version).get("metrics", {}).get("f1_margin_over_lora")
    return float(margin) if margin is not None else None
