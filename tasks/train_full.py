"""Stage 4 — train_full: every weight trained through the real DeepSpeed engine, in a launched subprocess.

Checkpoints go to a work folder named by the stage's cache key, outside the output folder, so a retry of the task
or a new run of the same config resumes from the last complete checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import get_run_logger, task

from finetune.config import RunConfig
from regulator.drills import DRILL
from tasks.general_answers import general_answers_file
from tasks.progress import watch_training
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, exclusive_stage, maybe_inject_fault, transient_only
from training.full_ft import TrainSpec
from training.launcher import run_training
from evaluation.report import plot_loss_curves

KEEP = ("train_summary.json", "metrics.jsonl", "curve.jsonl", "lr_sweep.json", "train_spec.json", "train.log")
SUMMARY_FIGURES = ("steps", "tokens", "wall_time_s", "tokens_per_s", "final_loss", "trainable_params", "resumed_from",
                   "lr", "world_size", "backend", "peak_rss_gib")


def package_training(work_dir: Path, tmp: Path, *, weights: str, label: str, summary: dict) -> dict:
    """Copy a finished training's weights folder and logs into the stage folder, plot its loss; return figures."""
    shutil.copytree(work_dir / weights, tmp / weights)
    for name in KEEP:
        if (work_dir / name).is_file():
            shutil.copy2(work_dir / name, tmp / name)
    plot_loss_curves({label: tmp / "metrics.jsonl"}, tmp / "loss.png")
    return {k: summary.get(k) for k in SUMMARY_FIGURES}


def replay_file(cfg: RunConfig, model_dir: str, model_hash: str) -> str | None:
    """The rehearsal data: the user's file, else the base model's cached answers to the replay instructions."""
    if cfg.train.replay_fraction <= 0:
        return None
    if cfg.train.replay_file:
        return str(cfg.train.replay_file)
    return str(general_answers_file(model_dir, model_hash, "replay"))


def training_inputs(infra_dir: str, out_dir: str) -> tuple[RunConfig, dict, Path]:
    """What a training stage reads from infra_check (effective config, DeepSpeed config) and its work folder
    (``<key>.work`` beside the output folder: checkpoints, logs)."""
    run_cfg = RunConfig.model_validate(json.loads((Path(infra_dir) / "effective_config.json").read_text()))
    ds_config = json.loads((Path(infra_dir) / "ds_config.json").read_text())
    return run_cfg, ds_config, Path(out_dir).with_name(Path(out_dir).name + ".work")


def full_spec(cfg: RunConfig, *, model_dir: str, dataset_dir: str, work_dir: Path, ds_config: dict,
              replay: str | None) -> TrainSpec:
    """The full-FT spec of a run config (infra_check's effective config and its DeepSpeed config, which carries
    the batch shape, precision, optimizer and peak learning rate: the one place a training setting comes from)."""
    t = cfg.train
    return TrainSpec(
        model_dir=model_dir, dataset_dir=dataset_dir, output_dir=str(work_dir), ds_config=ds_config, backend=t.backend,
        epochs=t.epochs, max_steps=t.max_steps, warmup_ratio=t.warmup_ratio, min_lr_ratio=t.min_lr_ratio,
        seed=t.seed, gradient_checkpointing=cfg.model.gradient_checkpointing, torch_compile=t.torch_compile,
        checkpoint_every_steps=t.checkpoint_every_steps, keep_last_checkpoints=t.keep_last_checkpoints,
        replay_file=replay, replay_fraction=t.replay_fraction, curve_points=t.curve_points,
        curve_examples=t.curve_examples, decision_weight=t.decision_weight, directive_weight=t.directive_weight,
        first_case_kinds=[DRILL] if t.drills_first else [],
    )


@task(name="train_full", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def train_full(model_dir: str, model_hash: str, dataset_dir: str, infra_dir: str, out_dir: str, key: str) -> dict:
    """Full fine-tuning with DeepSpeed (ZeRO stage, precision, batch and learning rate from infra_check's
    ``ds_config.json``, every other setting from its ``effective_config.json``).

    Returns:
        The stage manifest: the consolidated HF model folder (``model/``), the training summary figures.
    """
    maybe_inject_fault("train_full")
    with exclusive_stage(out_dir) as built:  # a concurrent run of the same key: wait, then reuse its output
        return built if built is not None else _full(model_dir, model_hash, dataset_dir, infra_dir, out_dir, key)


def _full(model_dir: str, model_hash: str, dataset_dir: str, infra_dir: str, out_dir: str, key: str) -> dict:
    """The body of ``train_full``, run while holding the stage lock."""
    run_cfg, ds_config, work_dir = training_inputs(infra_dir, out_dir)
    spec = full_spec(run_cfg, model_dir=model_dir, dataset_dir=dataset_dir, work_dir=work_dir, ds_config=ds_config,
                     replay=replay_file(run_cfg, model_dir, model_hash))
    hw = run_cfg.hardware
    nproc = hw.cpu_processes if hw.accelerator == "cpu" else hw.gpus_per_node
    log = get_run_logger()
    with watch_training(work_dir / "metrics.jsonl", label="train-full"):
        summary = run_training(spec, nproc=nproc, launcher=run_cfg.train.launcher, num_nodes=hw.num_nodes,
                               hostfile=hw.hostfile if hw.rendezvous == "hostfile" else None,
                               master_addr=hw.master_addr, master_port=hw.master_port, local_nodes=hw.local_nodes)
    log.info("full FT done: %s steps, %.0f tok/s, final loss %s, resumed from %s", summary.get("steps"),
             summary.get("tokens_per_s", 0), summary.get("final_loss"), summary.get("resumed_from"))

    manifest = build_stage(out_dir, lambda tmp: package_training(work_dir, tmp, weights="model", label="full FT",
                                                                 summary=summary), stage="train_full", key=key)
    # Sealed: the model, metrics and summary are in the stage folder; the checkpoints (~1.6 GB for 135M parameters
    # with Adam states) served only a resume of this key, which can no longer happen.
    shutil.rmtree(work_dir, ignore_errors=True)
    return manifest
