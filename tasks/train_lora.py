"""Stage 5 — train_lora: the LoRA baseline on the same data, token budget and schedule shape as full FT,
with its own (higher) learning rate. Saved as a standard peft adapter."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from prefect import get_run_logger, task

from foundation.paths import write_json_atomic
from tasks.progress import watch_training
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, exclusive_stage, maybe_inject_fault, transient_only
from tasks.train_full import full_spec, package_training, replay_file, training_inputs
from training.lora import LoraSpec, sweep_lr, train_lora as run_lora


@task(name="train_lora", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def train_lora(model_dir: str, model_hash: str, dataset_dir: str, infra_dir: str, out_dir: str, key: str) -> dict:
    """Train the LoRA adapter (rank, alpha, dropout, targets and lr from the ``lora`` section of infra_check's
    effective config; data, budget and schedule shape matching full FT's spec).

    Returns:
        The stage manifest: the adapter folder (``adapter/``) and the training summary figures.
    """
    maybe_inject_fault("train_lora")
    with exclusive_stage(out_dir) as built:  # a concurrent run of the same key: wait, then reuse its output
        return built if built is not None else _lora(model_dir, model_hash, dataset_dir, infra_dir, out_dir, key)


def _lora(model_dir: str, model_hash: str, dataset_dir: str, infra_dir: str, out_dir: str, key: str) -> dict:
    """The body of ``train_lora``, run while holding the stage lock."""
    run_cfg, ds_config, work_dir = training_inputs(infra_dir, out_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)  # the in-process LoRA loop does not checkpoint: a retry starts over
    full = full_spec(run_cfg, model_dir=model_dir, dataset_dir=dataset_dir, work_dir=work_dir, ds_config=ds_config,
                     replay=replay_file(run_cfg, model_dir, model_hash))
    lo, log = run_cfg.lora, get_run_logger()
    spec = LoraSpec.matching(full, output_dir=str(work_dir), world_size=run_cfg.world_size(), lr=lo.lr, r=lo.r,
                             alpha=lo.alpha, dropout=lo.dropout, target_modules=lo.target_modules)
    sweep = None
    if lo.sweep_lrs:
        log.info("LoRA learning-rate sweep: %s, %d steps each", lo.sweep_lrs, lo.sweep_steps)
        sweep = sweep_lr(spec, list(lo.sweep_lrs), steps=lo.sweep_steps, work_dir=work_dir.parent / ".lora-sweep")
        shutil.rmtree(work_dir.parent / ".lora-sweep", ignore_errors=True)
        for trial in sweep["trials"]:
            log.info("  lr %g: teacher-forced F1 %s, check accuracy %s (%.0f s)", trial["lr"], trial["tf_f1_micro"],
                     trial["tf_check_accuracy"], trial["seconds"])
        log.info("LoRA lr chosen by the sweep: %g", sweep["chosen_lr"])
        spec = replace(spec, lr=sweep["chosen_lr"])
    with watch_training(work_dir / "metrics.jsonl", label="train-lora"):
        summary = run_lora(spec)
    if sweep is not None:
        write_json_atomic(work_dir / "lr_sweep.json", sweep)
    log.info("LoRA done: %s steps, %.0f tok/s, final loss %s", summary.get("steps"), summary.get("tokens_per_s", 0),
             summary.get("final_loss"))

    def build(tmp: Path) -> dict:
        figures = package_training(work_dir, tmp, weights="adapter", label="LoRA", summary=summary)
        shutil.rmtree(work_dir, ignore_errors=True)
        return figures

    return build_stage(out_dir, build, stage="train_lora", key=key)
