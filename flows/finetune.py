"""The ``finetune`` flow: a full fine-tuning engagement as one Prefect flow.

Stages (each a retryable, cached task in ``tasks/``)::

    audit -> infra_check -> prepare_data -> train_full -+
                                   |                    +-> evaluate -> deployment_gate -> registry
                                   +-----> train_lora --+

Run it with ``finetune run CONFIG`` or through the deployment ``finetune/regulator``. Each flow run writes a
run folder (``runs/<stamp>-<name>-*``) holding the resolved config, every stage's manifest and links to the
stage outputs; stage outputs themselves are cached by content hash and shared between runs.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger

from finetune.config import RunConfig, dotted, fp32_budget_applies, fp32_budget_enabled, load_config
from foundation.errors import AttemptsExhausted, GateRejected
from finetune.models import hub_id, model_fingerprint, resolve_model
from finetune import registry as model_registry
from foundation.paths import (default_registry_dir, new_run_dir, project_home, record_stage, reviews_dir,
                              write_json_atomic)
from foundation.hashing import hash_path
from foundation.memory_reuse import reuse_decision
from finetune.summary import evaluation_result
from tasks.audit import audit
from tasks.deployment_gate import deployment_gate
from tasks.evaluate import evaluate, real_source_path
from tasks.evaluate_production import evaluate_production
from tasks.infra_check import infra_check
from tasks.prepare_data import prepare_data
from tasks.stage import run_stage
from tasks.train_full import train_full
from tasks.train_lora import train_lora
from training.infra import native_bf16, onednn_isa_cap

Stage = Literal["audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "evaluate_production",
                "deployment_gate"]


def registry_dir(cfg: RunConfig) -> Path:
    """The model registry folder of a run."""
    return Path(cfg.gate.registry_dir) if cfg.gate.registry_dir else default_registry_dir()


@flow(name="finetune")  # not log_prints: dill captures stdout through print, which log_prints reroutes
def finetune(
    config_path: str = "configs/regulator-cpu.yaml",
    overrides: dict[str, Any] | None = None,
    stop_after: Stage | None = None,
    attempt: int = 1,
    max_attempts: int = 3,
    rerun_of: str | None = None,
) -> dict[str, Any]:
    """Run the fine-tuning engagement for one config.

    Args:
        config_path: YAML run config (see ``configs/``), relative to the project folder or absolute.
        overrides: dotted-key overrides, e.g. ``{"train.lr": 1e-4, "data.n_examples": 200}``.
        stop_after: run the stages up to and including this one, then stop.
        attempt: 1 for a run started by a person or a schedule; the re-run automation
            (``deploy/automations.yaml``) starts a crashed run again with ``attempt + 1``.
        max_attempts: an ``attempt`` above this ends the run Failed at once (a run that crashes every time is
            not started for ever).
        rerun_of: the id of the crashed flow run this one re-runs (set by the automation; for the log).
    Returns:
        A summary: the run folder and every stage's manifest.
    """
    log = get_run_logger()
    check_attempt(attempt, max_attempts, rerun_of)
    if rerun_of:
        log.info("attempt %d of %d: automatic re-run of crashed flow run %s", attempt, max_attempts, rerun_of)
    path = Path(config_path)
    bf16, bf16_why = native_bf16()
    host_bf16 = bf16 if fp32_budget_enabled() else None  # None: the config as written, whatever the host
    cfg = load_config(path if path.is_absolute() else project_home() / path, overrides, native_bf16=host_bf16)
    cfg_dict = cfg.model_dump(mode="json")
    run_dir = new_run_dir(cfg.name)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    log.info("run folder: %s", run_dir)
    budget = None
    if host_bf16 is False and fp32_budget_applies(cfg):
        budget = (f"no native bf16 here ({bf16_why}): the config's fp32_host budget applies: "
                  + ", ".join(f"{key}={dotted(cfg_dict, key)!r}" for key in cfg.fp32_host))
        log.info(budget)
    write_json_atomic(run_dir / "host.json", {"native_bf16": bf16, "why": bf16_why, "fp32_host_budget": budget})
    log.info("freed-memory reuse %s", reuse_decision()[1])
    model_dir = resolve_model(cfg.model.ref)
    model_hash = model_fingerprint(model_dir)
    base_model = {"ref": cfg.model.ref, "folder": str(model_dir), "content_hash": model_hash,
                  "hub_commit": model_dir.name if hub_id(cfg.model.ref) else None}
    if base_model["hub_commit"]:
        log.info("model %s: Hugging Face Hub snapshot at commit %s", cfg.model.ref, base_model["hub_commit"])
    write_json_atomic(run_dir / "base_model.json", base_model)  # the run's record of what it fine-tuned
    registry = registry_dir(cfg)
    done: dict[str, Any] = {}
    no_new_data: str | None = None
    same_as: str | None = None  # the production version the candidate is, when nothing changed

    def record(stage: str, manifest: dict[str, Any]) -> bool:
        done[stage] = manifest
        record_stage(run_dir, stage, manifest)
        return stage == stop_after

    if record("audit", run_stage(
        audit, stage="audit",
        inputs={"cfg": cfg.section_hash("model", "hardware", "data", "train", "audit"), "model": model_hash},
        cfg=cfg_dict, model_dir=str(model_dir), registry_dir=str(registry),
    )):
        return _summary(run_dir, done)
    if record("infra_check", run_stage(
        infra_check, stage="infra_check",
        inputs={"cfg": cfg.section_hash("model", "hardware", "train"), "model": model_hash,
                "host": _host_fingerprint()},
        cfg=cfg_dict, model_dir=str(model_dir),
    )):
        return _summary(run_dir, done)
    infra_dir = done["infra_check"]["out_dir"]
    if record("prepare_data", run_stage(
        prepare_data, stage="prepare_data",
        inputs={"cfg": cfg.section_hash("data"), "max_seq_len": cfg.model.max_seq_len, "model": model_hash,
                "source": _source_hash(cfg), "reviews": _reviews_hash(cfg),
                # delivered filings and reviews of the real set's banks are left out: the real set shapes the data
                "real": _real_set_hash(cfg) if cfg.data.source != "synthetic" or cfg.data.reviews else None},
        cfg=cfg_dict, model_dir=str(model_dir),
    )):
        return _summary(run_dir, done)
    data_hash = done["prepare_data"]["content_hash"]
    dataset_dir = str(Path(done["prepare_data"]["out_dir"]) / "dataset")
    train_inputs = {"cfg": cfg.section_hash("model", "train"), "model": model_hash, "data": data_hash,
                    "infra": done["infra_check"]["content_hash"]}
    common = {"model_dir": str(model_dir), "model_hash": model_hash, "dataset_dir": dataset_dir, "infra_dir": infra_dir}
    if record("train_full", run_stage(train_full, stage="train_full", inputs=train_inputs, **common)):
        return _summary(run_dir, done)
    if cfg.lora.enabled and record("train_lora", run_stage(
        train_lora, stage="train_lora",
        inputs={**train_inputs, "lora": cfg.section_hash("lora")}, **common,
    )):
        return _summary(run_dir, done)
    full_dir = done["train_full"]["out_dir"]
    lora_dir = done["train_lora"]["out_dir"] if "train_lora" in done else None
    if record("evaluate", run_stage(
        evaluate, stage="evaluate",
        inputs={"cfg": cfg.section_hash("eval"), "model": model_hash, "data": data_hash,
                "infra": done["infra_check"]["content_hash"],  # eval.precision 'auto' follows the hardware
                "full": done["train_full"]["content_hash"],
                "lora": done["train_lora"]["content_hash"] if lora_dir else None,
                "real": _real_set_hash(cfg)},
        cfg=cfg_dict, model_dir=str(model_dir), model_hash=model_hash, dataset_dir=dataset_dir,
        full_dir=full_dir, lora_dir=lora_dir,
    )):
        return _summary(run_dir, done)
    champion = _production(cfg, registry)
    if champion is not None and champion[3].get("train_full_key") == done["train_full"]["content_hash"]:
        no_new_data = (f"no new data: production {champion[0]} was trained on the same data ({data_hash[:12]}) with "
                       "the same settings and code; the candidate is that model, nothing to compare")
        log.info(no_new_data)
        same_as = champion[0]
        champion = None
    if champion is not None:
        version, folder, sha256, _ = champion
        log.info("champion / challenger: the candidate is compared with production %s", version)
        if record("evaluate_production", run_stage(
            evaluate_production, stage="evaluate_production",
            inputs={"cfg": cfg.section_hash("eval"), "production": sha256, "data": data_hash,
                    "infra": done["infra_check"]["content_hash"], "real": _real_set_hash(cfg)},
            cfg=cfg_dict, production_dir=str(folder), version=version, model_sha256=sha256, dataset_dir=dataset_dir,
        )):
            return _summary(run_dir, done)
    elif cfg.gate.max_regression_vs_production is not None:
        log.info("champion / challenger: no model in production yet, nothing to compare with")
    production_dir = done["evaluate_production"]["out_dir"] if "evaluate_production" in done else None
    try:
        record("deployment_gate", run_stage(
            deployment_gate, stage="deployment_gate",
            inputs={"cfg": cfg.section_hash("gate"), "eval": done["evaluate"]["content_hash"],
                    "registry": str(registry),
                    "production": done["evaluate_production"]["content_hash"] if production_dir else None,
                    "same_as_production": same_as},
            cfg=cfg_dict, eval_dir=done["evaluate"]["out_dir"], full_dir=full_dir, data_hash=data_hash,
            registry_dir=str(registry), production_dir=production_dir, same_as_production=same_as,
            base_model=base_model, train_key=done["train_full"]["content_hash"], provenance=done["prepare_data"]["figures"].get("provenance"),
        ))
    except GateRejected as err:
        # A rejection fails the run (so a schedule shows it), but the run still says what it found and why.
        done["deployment_gate"] = {"figures": {"passed": False, "version": None, "registry_dir": str(registry),
                                               "decision": err.decision}}
        _summary(run_dir, done, no_new_data)
        err.run_dir = str(run_dir)
        raise
    return _summary(run_dir, done, no_new_data)


def check_attempt(attempt: int, max_attempts: int, rerun_of: str | None) -> None:
    """Refuse an automatic re-run beyond ``max_attempts`` (a final Failed state: the re-run automation reacts
    to Crashed only, so the chain of re-runs ends here)."""
    if attempt > max_attempts:
        raise AttemptsExhausted(
            f"attempt {attempt} > max_attempts {max_attempts}: the run crashed {attempt - 1} times"
            f"{f' (last: flow run {rerun_of})' if rerun_of else ''}; not running it again automatically. "
            "Read the crashed runs' logs, fix the cause, then start the deployment by hand.")


def _production(cfg: RunConfig, registry: Path) -> tuple[str, Path, str, dict[str, Any]] | None:
    """The version in production, its folder, model content hash and card, when the gate compares with it
    (``gate.max_regression_vs_production`` set) and one exists; else None. A damaged version is an error: the
    comparison would judge the candidate against other weights than production's."""
    if cfg.gate.max_regression_vs_production is None:
        return None
    version = model_registry.production_version(registry)
    if version is None:
        return None
    card = model_registry.verify_version(registry, version)
    return version, model_registry.resolve_model(registry, version), card["model_sha256"], card


def _source_hash(cfg: RunConfig) -> str:
    """Content hash of a file or folder data source ('synthetic' is described by the config alone)."""
    return "synthetic" if cfg.data.source == "synthetic" else hash_path(Path(cfg.data.source))


def _reviews_hash(cfg: RunConfig) -> str | None:
    """Content hash of the review store trained on (``data.reviews``), None without one: a new decision re-runs
    prepare_data and what follows."""
    if cfg.data.reviews is None:
        return None
    store = reviews_dir(cfg.data.reviews)
    return hash_path(store) if store.exists() else "empty"


def _real_set_hash(cfg: RunConfig) -> str | None:
    """Content hash of the real filings evaluated (``eval.real_source``), None without a real set."""
    path = real_source_path(cfg.eval.real_source)
    return hash_path(path) if path is not None and path.exists() else None


def _host_fingerprint() -> dict[str, Any]:
    """What infra detection depends on, cheaply: host, cores, GPU count, library versions."""
    import os
    from importlib.metadata import version

    import torch

    return {"node": platform.node(), "cpus": os.cpu_count(), "cuda": torch.cuda.device_count(),
            "torch": torch.__version__, "deepspeed": version("deepspeed"), "onednn_max_cpu_isa": onednn_isa_cap()}


def _summary(run_dir: Path, done: dict[str, Any], no_new_data: str | None = None) -> dict[str, Any]:
    """Write and return the run summary: the run folder, the results, the gate's decision, manifests, and whether
    the run found nothing new to learn from (``no_new_data``: why, or None)."""
    result: dict[str, Any] = {"no_new_data": no_new_data} if no_new_data else {}
    if "evaluate" in done:
        linked = run_dir / "evaluate"  # the run folder's link to the stage output: the path the README names
        result.update(evaluation_result(linked if linked.exists() else Path(done["evaluate"]["out_dir"])))
        result["f1_micro"] = done["evaluate"]["figures"]["f1_micro"]
        result["rouge_l"] = done["evaluate"]["figures"]["rouge_l"]
    if "deployment_gate" in done:
        gate = done["deployment_gate"]["figures"]
        decision = gate.get("decision")
        if decision is None and done["deployment_gate"].get("out_dir"):
            decision_file = Path(done["deployment_gate"]["out_dir"]) / "decision.json"
            decision = json.loads(decision_file.read_text()) if decision_file.is_file() else None
        result["gate"] = {"passed": gate["passed"], "version": gate["version"], "decision": decision,
                          "shadow_of": gate.get("shadow_of")}
        result.update({"gate_passed": gate["passed"], "promoted_version": gate["version"],
                       "registry": gate["registry_dir"]})
    host_file = run_dir / "host.json"
    budget = json.loads(host_file.read_text()).get("fp32_host_budget") if host_file.is_file() else None
    summary = {"run_dir": str(run_dir), "result": result, "stages": done, "memory_reuse": reuse_decision()[1],
               "fp32_host_budget": budget}
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
