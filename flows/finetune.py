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

import platform
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger

from finetune.config import RunConfig, load_config
from finetune.models import model_fingerprint, resolve_model
from finetune.paths import new_run_dir, project_home, record_stage, write_json_atomic
from tasks.audit import audit
from tasks.infra_check import infra_check
from tasks.stage import run_stage

Stage = Literal["audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "deployment_gate"]


def registry_dir(cfg: RunConfig) -> Path:
    """The model registry folder of a run."""
    return Path(cfg.gate.registry_dir) if cfg.gate.registry_dir else project_home() / "registry"


@flow(name="finetune", log_prints=True)
def finetune(
    config_path: str = "configs/regulator-cpu.yaml",
    overrides: dict[str, Any] | None = None,
    stop_after: Stage | None = None,
) -> dict[str, Any]:
    """Run the fine-tuning engagement for one config.

    Args:
        config_path: YAML run config (see ``configs/``), relative to the project folder or absolute.
        overrides: dotted-key overrides, e.g. ``{"train.lr": 1e-4, "data.n_examples": 200}``.
        stop_after: run the stages up to and including this one, then stop.
    Returns:
        A summary: the run folder and every stage's manifest.
    """
    log = get_run_logger()
    path = Path(config_path)
    cfg = load_config(path if path.is_absolute() else project_home() / path, overrides)
    cfg_dict = cfg.model_dump(mode="json")
    run_dir = new_run_dir(cfg.name)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    log.info("run folder: %s", run_dir)
    model_dir = resolve_model(cfg.model.ref)
    model_hash = model_fingerprint(model_dir)
    registry = registry_dir(cfg)
    done: dict[str, Any] = {}

    def record(stage: str, manifest: dict[str, Any]) -> bool:
        done[stage] = manifest
        record_stage(run_dir, stage, manifest)
        return stage == stop_after

    if record("audit", run_stage(
        audit, stage="audit", code=("finetune", "training/memory.py"),
        inputs={"cfg": cfg.section_hash("model", "hardware", "data", "train", "audit"), "model": model_hash},
        cfg=cfg_dict, model_dir=str(model_dir), registry_dir=str(registry),
    )):
        return _summary(run_dir, done)
    if record("infra_check", run_stage(
        infra_check, stage="infra_check", code=("finetune", "training/infra.py", "training/deepspeed_config.py"),
        inputs={"cfg": cfg.section_hash("model", "hardware", "train"), "model": model_hash,
                "host": _host_fingerprint()},
        cfg=cfg_dict, model_dir=str(model_dir),
    )):
        return _summary(run_dir, done)
    return _summary(run_dir, done)


def _host_fingerprint() -> dict[str, Any]:
    """What infra detection depends on, cheaply: host, cores, GPU count, library versions."""
    import os
    from importlib.metadata import version

    import torch

    return {"node": platform.node(), "cpus": os.cpu_count(), "cuda": torch.cuda.device_count(),
            "torch": torch.__version__, "deepspeed": version("deepspeed")}


def _summary(run_dir: Path, done: dict[str, Any]) -> dict[str, Any]:
    """Write and return the run summary."""
    summary = {"run_dir": str(run_dir), "stages": done}
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
