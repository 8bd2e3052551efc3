"""The run config: one typed object for a run, loaded from YAML, validated before anything runs.

Each section is a pydantic model whose field descriptions are the config reference (``finetune config-doc``
prints them). :func:`load_config` applies ``--set key=value`` overrides, then reports *every* problem at once —
schema errors and cross-field checks alike — in one :class:`~foundation.errors.ConfigError`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foundation.errors import ConfigError
from foundation.hashing import hash_json
from training.memory import backend_problems

ZeroStage = Literal["auto", 0, 1, 2, 3]
Offload = Literal["auto", "none", "optimizer", "optimizer+params"]


class _Section(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` are valid YAML floats but never a valid setting (lr, decay, a gap).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """Which model is fine-tuned."""

    ref: str = Field("packaged", description="'packaged' (SmolLM2-135M-Instruct, provisioned offline), a local HF folder, or a Hugging Face Hub id org/name[@revision] read from the hub cache (HF_HOME / HF_HUB_CACHE; `finetune setup --model org/name` downloads it where the hub is reachable); the snapshot's commit is recorded in the run and the model card.")
    name: str = Field("SmolLM2-135M-Instruct", description="Human-readable model name for reports and the model card.")
    max_seq_len: int = Field(1024, ge=64, le=131072, description="Token budget of one example (prompt + answer).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: ~4x less activation memory, ~20% slower.")


class HardwareConfig(_Section):
    """The hardware the run is declared to use; the audit plans for it and infra_check verifies it."""

    accelerator: Literal["cpu", "cuda"] = Field("cpu", description="Device type training runs on.")
    gpus_per_node: int = Field(0, ge=0, le=64, description="GPUs per node (0 on CPU).")
    gpu_memory_gb: float = Field(0.0, ge=0, description="Memory of one GPU in GB (0 on CPU).")
    num_nodes: int = Field(1, ge=1, le=1024, description="Nodes in the launch; >1 needs a hostfile (hardware.rendezvous: hostfile) or a rendezvous endpoint (c10d).")
    cpu_ram_gb: float = Field(16.0, gt=0, description="CPU RAM per node in GB available to training (offload, CPU training).")
    cpu_processes: int = Field(1, ge=1, le=64, description="Training processes on a CPU-only node (gloo ranks).")
    peak_tflops: float = Field(312.0, gt=0, description="Peak bf16 TFLOP/s of one device, for the time estimate (A100: 312).")
    assumed_mfu: float = Field(0.40, gt=0, le=1, description="Model FLOPs utilisation assumed by the time estimate.")
    hostfile: Path | None = Field(None, description="DeepSpeed hostfile for multi-node launches (hardware.rendezvous: hostfile).")
    rendezvous: Literal["hostfile", "c10d"] = Field("hostfile", description="How the nodes of a multi-node run meet: 'hostfile' (the DeepSpeed launcher starts every node over password-less SSH) or 'c10d' (torch elastic: one torchrun agent per node, started by a Kubernetes indexed Job or srun, meeting at master_addr:master_port; no SSH; train.launcher torchrun).")
    master_addr: str | None = Field(None, description="c10d rendezvous: the address every node reaches the rendezvous at (the first node's).")
    master_port: int = Field(29400, ge=1, le=65535, description="c10d rendezvous port.")
    local_nodes: bool = Field(False, description="c10d rendezvous: start every node's agent on this machine (a multi-node run rehearsed on one box, e.g. two nodes of one CPU rank each; a free port on 127.0.0.1).")
    allow_fallback: bool = Field(False, description="If the declared hardware is absent, fall back to what is present instead of failing.")


class DataConfig(_Section):
    """Where the examples come from and the data contract's limits."""

    source: str = Field("synthetic", description="'synthetic' (generated XBRL reports), a JSONL/Parquet file, a folder of XBRL filings (instances, xBRL-CSV report packages, bulk zips) or one zip; filings are labelled by the rule engine.")
    mix_synthetic: int = Field(0, ge=0, le=1_000_000, description="Generated reports added to a file or folder source (0: the source alone); they are split by bank like the rest, so real and generated reports share the contracts and the splits.")
    reviews: str | None = Field(None, description="A review store (the analyze flow's supervisors' decisions; a path relative to the project home, e.g. reviews, where the flow keeps them): each reviewed filing whose decision agrees with the rule engine is added to training (train only, never a bank of validation or test, never a filing of eval.real_source); decisions that contradict the rule engine are listed in data.md and never trained on. None: no reviews.")
    n_examples: int = Field(400, ge=10, le=1_000_000, description="Examples to generate (synthetic source only).")
    eu_fraction: float = Field(0.5, ge=0, le=1, description="Share of EU COREP reports among generated examples.")
    eu_csv_fraction: float = Field(0.0, ge=0, le=1, description="Share of the generated EU reports written as EBA xBRL-CSV report packages (.zip) instead of xBRL-XML; the rest is xBRL-XML.")
    eu_module_fraction: float = Field(0.0, ge=0, le=1, description="Share of the generated EU reports filed module-wise, as EBA reporters submit COREP: one module (own funds, leverage, LCR, NSFR or large exposures) per filing, so the other modules' rules are 'not filed' (NOT_ASSESSED lines), like the EBA's own module samples.")
    train_balanced: int = Field(0, ge=0, le=1_000_000, description="Extra generated training-only reports with a rebalanced mix (each rule's check not OK in about half of them, margins wide to narrow); validation and test keep the natural mix (synthetic source only).")
    train_balanced_compliant: float = Field(0.0, ge=0, le=1, description="Share of the train_balanced reports drawn compliant instead (every rule OK with a healthy margin, a directive without a measure), so that 'no finding, no measure' is not a minority answer in training.")
    train_us_extract_fraction: float = Field(0.0, ge=0, le=1, description="Share of the US reports of train_balanced filed as the public extracts of real Call Reports are: without the conservation buffer (RCOAH311) and the leverage ratio's total assets (RCOAA224), so the model meets a buffer line that compares nothing (DATA_QUALITY, never a BREACH) and the missing-item finding before it meets a real extract. Validation and test keep full reports.")
    train_us_elector_extract_fraction: float | None = Field(None, ge=0, le=1, description="Share of the CBLR electors among the US reports of train_balanced filed as public extracts are (train_us_extract_fraction for the others): an elector's extract files its leverage ratio without the total assets behind it (RCOAA224), a data-quality finding the model otherwise meets in a handful of pool reports. None: the same share as train_us_extract_fraction.")
    train_us_total_bound_fraction: float = Field(0.0, ge=0, le=1, description="Share of the US reports of train_balanced from banks with little additional Tier 1 and Tier 2 capital, as most real risk-based filers: the total capital ratio binds the conservation buffer, so a buffer shortfall comes with a healthy CET1 ratio (the real 2024-06-30 bulk data: CET1 9.3%, total 10.5%, buffer 2.46% against 2.5%), where the rest of the generator pulls CET1 down with every buffer shortfall. Applied after train_us_no_at1_fraction; reports with a ratio under its minimum are left as they are. Validation and test keep the natural mix.")
    train_us_no_at1_fraction: float = Field(0.0, ge=0, le=1, description="Share of the US reports of train_balanced from banks without additional Tier 1 capital, as most US banks file (Tier 1 ratio = CET1 ratio in every risk-based real extract of tests/fixtures/real): two check lines then quote the same ratio against different minimums (CET1 4.5%, Tier 1 6%), the case real filings show and the rest of the generator almost never does. Validation and test keep the natural mix.")
    train_drills: int = Field(0, ge=0, le=1_000_000, description="Training-only decision drills: answers of drill_lines generated check lines (figures on both sides of each threshold) whose loss is the OK/BREACH words only; they teach the comparison a short run does not learn from reports (any source; never in validation or test).")
    drill_lines: int = Field(24, ge=1, le=200, description="Check lines per decision drill.")
    drill_fine_share: float = Field(0.0, ge=0, le=1, description="Share of the drills' check lines whose figure has a real Call Report's precision (four decimals of a percentage, `2.2936%`) where the others are whole basis points (`2.29%`): the precision real US filings state every ratio in.")
    train_gap_drills: int = Field(0, ge=0, le=100_000, description="Training-only gap drills, in pairs: a generated US Call Report filed without its leverage assets (RCOAA224) and the same report filed with them, each answer cut after its first line, the loss on that line's opening only (- DATA_QUALITY, the missing-denominator finding real extracts call for, or the first rule's - CODE); regulator.drills.generate_gap_drills; 2 rows each; never in validation or test.")
    seed: int = Field(1234, description="Seed of generation and of the split.")
    split_fractions: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="Train / validation / test shares (grouped by bank).")
    min_report_chars: int = Field(50, ge=1, description="Contract: shortest acceptable report text.")
    max_report_chars: int = Field(4000, ge=1, description="Contract: longest acceptable report text.")
    max_target_chars: int = Field(3000, ge=1, description="Contract: longest acceptable answer text.")
    max_truncation_rate: float = Field(0.01, ge=0, le=1, description="Contract: largest share of examples cut to max_seq_len.")

    @model_validator(mode="after")
    def _report_bounds_ordered(self) -> "DataConfig":
        """The contract's report-length bounds must leave room for a report (else every example fails it)."""
        if self.min_report_chars > self.max_report_chars:
            raise ValueError(f"data.min_report_chars ({self.min_report_chars}) is above data.max_report_chars "
                             f"({self.max_report_chars}): no report can satisfy the data contract")
        return self


class TrainConfig(_Section):
    """Full fine-tuning with DeepSpeed."""

    epochs: int = Field(3, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps cap (overrides epochs when smaller).")
    lr: float = Field(2e-5, gt=0, lt=1, description="Peak learning rate (full FT on a specialised set: 1e-5 to 5e-5).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at this fraction of the peak lr.")
    micro_batch_size: int = Field(4, ge=1, description="Examples per process per forward pass.")
    effective_batch_size: int = Field(64, ge=1, description="Examples per optimizer step = micro x accumulation x world size.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping (0 turns it off).")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="'auto' picks bf16 where the hardware supports it; fp32 master weights are kept either way.")
    zero_stage: ZeroStage = Field("auto", description="DeepSpeed ZeRO stage; 'auto' picks the cheapest that fits.")
    offload: Offload = Field("auto", description="ZeRO offload to CPU; 'auto' picks the cheapest that fits.")
    checkpoint_every_steps: int = Field(50, ge=1, description="DeepSpeed checkpoint interval (resume point of a retry).")
    keep_last_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept.")
    replay_fraction: float = Field(0.0, ge=0, lt=1, description="Share of general-domain rehearsal examples mixed in (forgetting mitigation).")
    replay_file: Path | None = Field(None, description="JSONL of {prompt, answer} general examples; default: the base model's own answers.")
    torch_compile: bool = Field(False, description="torch.compile the engine's model (DeepSpeed engine.compile, dynamic shapes): on an H100, 1.1B Llama, ZeRO-0 bf16, 40% -> 51% MFU (bench/NOTES.md); compiling costs about a minute, so for long GPU runs.")
    launcher: Literal["torchrun", "deepspeed"] = Field("torchrun", description="Launcher of the training subprocess.")
    backend: Literal["deepspeed", "fsdp"] = Field("deepspeed", description="Training engine: 'deepspeed' (ZeRO stages 0-3, optimizer or parameter offload) or 'fsdp' (PyTorch FSDP2 fully_shard per decoder layer: parameters, gradients and optimizer states sharded over all ranks as under ZeRO-3, so zero_stage must be 3 or auto; offload optimizer+params maps to FSDP's CPUOffloadPolicy, optimizer-only offload is refused). The same data, schedule, checkpoints and resume, HF export and memory plan either way (bench/bench_backends.py compares them).")
    seed: int = Field(42, description="Training seed.")
    curve_points: int = Field(0, ge=0, le=100, description="Learning-curve points: teacher-forced validation scores at step 0 and this many evenly spaced steps, for full FT and LoRA (0: none).")
    curve_examples: int = Field(32, ge=1, description="Validation examples the learning curve (and the LoRA sweep) scores.")
    decision_weight: float = Field(1.0, ge=1, le=1000, description="Loss weight of each check line's outcome token (OK / BREACH / DATA_QUALITY) relative to the other answer tokens, for full FT and LoRA alike (1: plain cross-entropy).")
    directive_weight: float = Field(1.0, ge=1, le=1000, description="Loss weight of the directive's closing tokens (from the DIRECTIVE marker to the end of the answer; the measure lines between the check lines weigh 1) relative to the check lines, for full FT and LoRA alike (1: plain cross-entropy).")
    drills_first: bool = Field(False, description="Curriculum: every epoch starts with the decision drills (data.train_drills), the reports follow, for full FT and LoRA alike (false: one shuffled stream).")


class LoraConfig(_Section):
    """The LoRA baseline, trained on the same data and token budget."""

    enabled: bool = Field(True, description="Train the LoRA baseline (needed for the margin criterion).")
    r: int = Field(64, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(128, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Modules to adapt.")
    lr: float = Field(2e-4, gt=0, lt=1, description="Peak lr; LoRA updates a low-rank delta from zero and needs ~10x the full-FT lr. With sweep_lrs, the sweep's choice replaces it.")
    sweep_lrs: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=list, description="Learning rates to try before training LoRA (each a short run scored teacher-forced on validation); the best is used. Empty: use lr.")
    sweep_steps: int = Field(10, ge=1, description="Optimizer steps of each sweep trial.")


class EvalConfig(_Section):
    """Evaluation on the held-out test split."""

    max_new_tokens: int = Field(512, ge=1, description="Generation bound per answer (reference answers reach ~490 tokens).")
    base_max_new_tokens: int | None = Field(None, ge=1, description="Generation bound for the base model, which never writes the answer format (None: max_new_tokens).")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    max_examples: int | None = Field(None, ge=1, description="Cap on test examples (None: the whole test split).")
    bootstrap_samples: int = Field(1000, ge=0, description="Bootstrap resamples for 95% confidence intervals.")
    forgetting_prompts: int | None = Field(None, ge=1, description="Cap on general prompts for the forgetting measure.")
    constrain_heads: bool = Field(False, description="Decode each check line's head under the filing's own (rule code, the figure as filed, the rule table's threshold; evaluation/constrained.py): no answer can invent a figure or check a rule not in force; each outcome keeps to its head's vocabulary (OK/BREACH when two figures are compared, NOT_ASSESSED/DATA_QUALITY when the filing lacks one: a missing figure is never a BREACH); the line after a check line keeps to the answer format (a finding's measure line; after OK or NOT_ASSESSED the next check line or the directive), a measure line writes one of the law table's remedies with its legal basis in the filing's jurisdiction and US framework, and the directive's closing is one of the house styles' sentences addressed to the filing's bank that agrees with the measures written above it (then the answer ends); which outcome, data-quality lines, which measure and the closing's house style stay the model's. Applies to every system, on the test split and the real filings.")
    real_source: str | None = Field(None, description="Real filings scored beside the test split for every system (a folder, zip or file; a relative path is found in the checkout, e.g. tests/fixtures/real): labelled by the rule engine, reviewed as `finetune analyze` reviews answers, never trained on. None: no real set (the gate says so).")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="Weights the answers are generated with: 'auto' is bf16 where the hardware computes it natively (CUDA with bf16, a CPU with AMX or AVX512-BF16), fp32 elsewhere (on a 2-core AVX512-BF16 CPU bf16 generates 1.9x faster, F1 within 0.01: bench/NOTES.md lever 24). The forgetting NLL is always taken in fp32.")


class GateConfig(_Section):
    """Deployment-gate thresholds: every one must hold for the full-FT model to be promoted."""

    f1_floor: float = Field(0.8, ge=0, le=1, description="Minimum violation F1 (micro).")
    rouge_floor: float = Field(0.5, ge=0, le=1, description="Minimum directive ROUGE-L.")
    min_margin_over_lora: float = Field(0.0, ge=-1, le=1, description="Minimum F1 margin of full FT over LoRA.")
    use_ci_lower_bound: bool = Field(True, description="Apply the margin to the lower end of the bootstrap 95% CI of the difference.")
    forgetting_ceiling: float = Field(0.5, ge=0, description="Largest relative NLL increase on general prompts.")
    real_max_false_violations: int | None = Field(None, ge=0, description="Most violations the candidate may report on the real filings (eval.real_source) that the rule engine does not find. None: not required; set, and no real set was scored, the gate fails.")
    real_max_invented_figures: int | None = Field(None, ge=0, description="Most answers on the real filings that may quote a figure in neither the filing nor the rule table. None: not required.")
    real_max_unreadable_answers: int | None = Field(None, ge=0, description="Most answers on the real filings without a readable check line (a model that writes nothing there would otherwise report no false violation). None: not required.")
    real_min_cleared_share: float | None = Field(None, ge=0, le=1, description="Least share of the compliant real filings the candidate must clear automatically (`analyze` status ok). None: not required.")
    shadow: bool = Field(False, description="Shadow A/B before a switch: a candidate that passes while a model is in production becomes the registry's shadow instead of production; analyze answers every filing with both (production's answers used, the shadow's recorded) until shadow_min_filings, or `finetune registry promote VERSION`, makes it production. The first promotion (nothing in production) is direct.")
    shadow_min_filings: int | None = Field(20, ge=1, description="With gate.shadow: filings the shadow must answer beside production before analyze promotes it by itself, if its agreement with the rule engine on them is not lower than production's. None: only by hand.")
    max_regression_vs_production: float | None = Field(0.0, ge=-1, le=1, description="Champion / challenger: when a model is in production, it answers the same test split and real filings (cached by its content hash and the data's), and the candidate's violation F1 may fall at most this far below production's (the paired bootstrap CI's lower end with use_ci_lower_bound, else the point estimate) and it may report no more false violations on the real filings. A negative value requires an improvement. None: production is not compared.")
    dry_run: bool = Field(False, description="Report the decision without promoting.")
    registry_dir: Path | None = Field(None, description="Model registry folder (default: <project>/registry).")


class AuditConfig(_Section):
    """Inputs of the audit's verdict on whether full FT is justified."""

    min_examples_for_full_ft: int = Field(1000, ge=1, description="Below this many examples full FT is flagged as data-starved.")
    notation_ratio_threshold: float = Field(1.15, gt=0, description="Domain tokens/word over general tokens/word above which the domain counts as new notation.")
    known_lora_gap: float | None = Field(None, description="F1 gap full FT - LoRA from an earlier run; default: read from the registry.")


class RunConfig(_Section):
    """One fine-tuning run."""

    name: str = Field("regulator", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (folder prefix).")
    model: ModelConfig = ModelConfig()
    hardware: HardwareConfig = HardwareConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    lora: LoraConfig = LoraConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    audit: AuditConfig = AuditConfig()
    fp32_host: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides (as --set takes them, e.g. `train.max_steps: 90`) applied where the run computes in fp32: a CPU run with train.precision 'auto' on a CPU without native bf16 (no AMX/AVX512-BF16, or oneDNN capped below it by ONEDNN_MAX_CPU_ISA). Such a CPU trains and generates ~2.3x slower, so a budget sized for a bf16 CPU would overrun its time there. A --set of the same key wins. Empty: the same run everywhere.")

    def world_size(self) -> int:
        """Training processes across all nodes."""
        per_node = self.hardware.gpus_per_node if self.hardware.accelerator == "cuda" else self.hardware.cpu_processes
        return per_node * self.hardware.num_nodes

    def grad_accum_steps(self) -> int:
        """Gradient accumulation steps that make up the effective batch."""
        return max(1, self.train.effective_batch_size // (self.train.micro_batch_size * self.world_size()))

    def section_hash(self, *sections: str) -> str:
        """Content hash of the named sections (part of the cache keys of the stages that read them)."""
        dumped = self.model_dump(mode="json")
        return hash_json({s: dumped[s] for s in sections})


def cross_field_problems(cfg: RunConfig) -> list[str]:
    """Return every problem that involves more than one field (empty when the config is consistent)."""
    problems: list[str] = []
    hw, tr = cfg.hardware, cfg.train
    if not math.isclose(sum(cfg.data.split_fractions), 1.0, abs_tol=1e-6):
        problems.append(f"data.split_fractions: must sum to 1, got {sum(cfg.data.split_fractions):.3f}")
    if any(f <= 0 for f in cfg.data.split_fractions):
        problems.append("data.split_fractions: every split needs a positive share")
    if hw.accelerator == "cuda" and (hw.gpus_per_node < 1 or hw.gpu_memory_gb <= 0):
        problems.append("hardware: accelerator 'cuda' needs gpus_per_node >= 1 and gpu_memory_gb > 0")
    if hw.accelerator == "cpu" and hw.gpus_per_node:
        problems.append("hardware.gpus_per_node: must be 0 when accelerator is 'cpu'")
    if hw.num_nodes > 1 and hw.rendezvous == "hostfile" and hw.hostfile is None:
        problems.append("hardware.hostfile: a multi-node run (num_nodes > 1) needs a hostfile, or hardware.rendezvous: "
                        "c10d (one agent per node, no SSH)")
    if hw.num_nodes > 1 and hw.rendezvous == "c10d" and not (hw.master_addr or hw.local_nodes):
        problems.append("hardware.master_addr: a c10d rendezvous needs the address every node reaches it at "
                        "(or hardware.local_nodes: true to rehearse the nodes on this machine)")
    if hw.rendezvous == "c10d" and cfg.train.launcher != "torchrun":
        problems.append("train.launcher: a c10d rendezvous is torch elastic's: use torchrun")
    if hw.hostfile is not None and not Path(hw.hostfile).is_file():
        problems.append(f"hardware.hostfile: {hw.hostfile} does not exist or is not a file")
    per_step = tr.micro_batch_size * cfg.world_size()
    if per_step and tr.effective_batch_size % per_step:  # no processes at all is reported above
        problems.append(
            f"train.effective_batch_size: {tr.effective_batch_size} is not a multiple of micro_batch_size x world size "
            f"= {tr.micro_batch_size} x {cfg.world_size()} = {per_step}"
        )
    if tr.zero_stage == 0 and tr.offload not in ("auto", "none"):
        problems.append("train.offload: offload needs ZeRO stage >= 1 (optimizer) or 3 (params)")
    if tr.offload == "optimizer+params" and tr.zero_stage not in ("auto", 3):
        problems.append("train.offload: 'optimizer+params' needs zero_stage 3")
    problems.extend(backend_problems(tr.backend, tr.zero_stage, tr.offload))
    if tr.replay_file is not None and not Path(tr.replay_file).is_file():
        problems.append(f"train.replay_file: {tr.replay_file} does not exist")
    if cfg.lora.enabled and cfg.lora.lr <= tr.lr:
        problems.append(f"lora.lr: {cfg.lora.lr} should be above train.lr {tr.lr} (LoRA needs a higher learning rate)")
    if cfg.data.source == "synthetic" and cfg.data.mix_synthetic:
        problems.append("data.mix_synthetic: only with a file or folder data.source (a synthetic source is "
                        "sized by data.n_examples)")
    if cfg.data.source != "synthetic" and not Path(cfg.data.source).exists():
        problems.append(f"data.source: {cfg.data.source} is neither 'synthetic' nor an existing file or folder")
    from finetune.models import hub_id

    ref = cfg.model.ref
    if ref != "packaged" and hub_id(ref) is None and not (Path(ref) / "config.json").is_file():
        problems.append(f"model.ref: {ref} is neither 'packaged', a folder with a config.json, nor a Hugging Face "
                        "Hub id (org/name[@revision])")
    problems.extend(_real_source_problems(cfg))
    problems.extend(fp32_host_problems(cfg))
    return problems


def _real_source_problems(cfg: "RunConfig") -> list[str]:
    """``eval.real_source`` must exist and share no file with ``data.source``: a real filing used to evaluate is
    never trained on."""
    if cfg.eval.real_source is None:
        return []
    from foundation.paths import resolve_input

    real = resolve_input(cfg.eval.real_source).resolve()
    if not real.exists():
        return [f"eval.real_source: {cfg.eval.real_source} does not exist (looked for {real})"]
    if cfg.data.source == "synthetic":
        return []
    data = Path(cfg.data.source).expanduser().resolve()
    if real == data or real in data.parents or data in real.parents:
        return [f"eval.real_source: {real} overlaps data.source {data}: real filings used to evaluate are never "
                "trained on; give them their own folder"]
    return []


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied (``{"train.lr": 1e-4}`` or ``["train.lr=1e-4"]``).

    String values are parsed as YAML scalars, so ``train.zero_stage=3`` gives an int and ``gate.dry_run=true`` a bool.
    """
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    items: list[tuple[str, Any]]
    if overrides is None:
        items = []
    elif isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = [parse_override(text) for text in overrides]
    for key, value in items:
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([f"override {key!r}: {part!r} is not a section"], "overrides")
        node[leaf] = value
    return out


def _format_validation_error(err: ValidationError) -> list[str]:
    """Turn pydantic's errors into 'section.field: message (got value)' lines."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].replace("Extra inputs are not permitted", "unknown field (check the spelling)")
        msg = msg.removeprefix("Value error, ")  # a validator of ours writes the whole message
        if msg.startswith(f"{loc}."):  # a section's validator names its fields and values itself
            lines.append(msg)
            continue
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        lines.append(f"{loc}: {msg}{got}")
    return lines


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw mapping into a RunConfig, raising one ConfigError that lists every problem."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err), source) from None
    problems = cross_field_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


MAX_CONFIG_BYTES = 1024 * 1024


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key] + 1}); merge the two into one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping; every way it can be unusable is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "no such config file"
        raise ConfigError([f"{path}: {what}"], str(path))
    with path.open("rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: over {MAX_CONFIG_BYTES:,} bytes; a run config is a few KB of YAML"], str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (undecodable byte at offset {exc.start}); is this a YAML "
                           "config?"], str(path)) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], str(path)) from None
    if raw is None:
        raise ConfigError([f"{path}: the config is empty; start from configs/regulator-cpu.yaml (a config names at "
                           "least its `name` and the sections it changes)"], str(path))
    if not isinstance(raw, dict):
        raise ConfigError([f"top level must be a mapping of sections, got {type(raw).__name__}"], str(path))
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as YAML (``3`` an int, ``true`` a bool, ``[1e-3]``)."""
    if "=" not in text:
        raise ConfigError([f"override {text!r}: expected key=value, e.g. train.lr=1e-4"], "--set")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError([f"override {text!r}: the value is not valid YAML ({problem})"], "--set") from None


def load_config(path: str | Path, overrides: dict[str, Any] | list[str] | None = None, *,
                native_bf16: bool | None = None) -> RunConfig:
    """Load a YAML run config, apply overrides and validate it.

    ``native_bf16``: whether the host computes bf16 natively (``training.infra.native_bf16``). False applies the
    config's ``fp32_host`` budget where it applies (``fp32_budget_applies``), under ``overrides``, which win; None
    (a config read away from the machine that runs it) leaves it out.
    """
    raw = read_config_file(path)
    cfg = validate_config(apply_overrides(raw, overrides), str(path))
    if native_bf16 is False and fp32_budget_applies(cfg):
        cfg = validate_config(apply_overrides(apply_overrides(raw, cfg.fp32_host), overrides),
                              f"{path} with its fp32_host budget")
    return cfg


def dotted(dumped: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (``train.max_steps``) of a dumped config."""
    node: Any = dumped
    for part in key.split("."):
        node = node[part]
    return node


def fp32_budget_enabled() -> bool:
    """``FINETUNE_FP32_HOST=0`` keeps a config's ``fp32_host`` budget off on every host (the test suite sets it, so
    its runs are the same on every CPU)."""
    return os.environ.get("FINETUNE_FP32_HOST", "1").strip() != "0"


def fp32_budget_applies(cfg: RunConfig) -> bool:
    """Whether ``cfg.fp32_host`` is for this run on a host without native bf16: a CPU run whose precision follows
    the hardware (an explicit train.precision is the user's choice, whatever the host)."""
    return bool(cfg.fp32_host) and cfg.hardware.accelerator == "cpu" and cfg.train.precision == "auto"


def fp32_host_problems(cfg: RunConfig) -> list[str]:
    """``fp32_host`` keys must name config fields (``section.field``) and leave a valid config."""
    problems = []
    for key in cfg.fp32_host:
        section, _, field = key.partition(".")
        model = RunConfig.model_fields.get(section)
        kind = model.annotation if model is not None else None
        if not (isinstance(kind, type) and issubclass(kind, _Section) and field in kind.model_fields):
            problems.append(f"fp32_host.{key}: not a config field (section.field, e.g. train.max_steps)")
    if problems or not cfg.fp32_host:
        return problems
    dumped = cfg.model_dump(mode="json")
    try:
        validate_config(apply_overrides({**dumped, "fp32_host": {}}, cfg.fp32_host), "fp32_host")
    except ConfigError as err:
        problems.extend(f"fp32_host: {line}" for line in err.problems)
    return problems


def config_reference() -> str:
    """Markdown reference of every config field: section, name, type, default, description."""
    lines = ["| field | default | description |", "|---|---|---|"]
    for section_name, field in RunConfig.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, _Section):
            for name, f in model.model_fields.items():
                default = f.default_factory() if f.default_factory is not None else f.default
                lines.append(f"| `{section_name}.{name}` | `{default!r}` | {f.description} |")
        else:
            default = field.default_factory() if field.default_factory is not None else field.default
            lines.append(f"| `{section_name}` | `{default!r}` | {field.description} |")
    return "\n".join(lines)
