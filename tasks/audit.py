"""Stage 1 — audit: parameter count, memory plan per ZeRO stage, time estimate, full-FT verdict."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from finetune.audit import general_sample_texts, known_lora_gap, render_markdown, run_audit
from finetune.config import RunConfig
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only
from training.memory import model_shape

DOMAIN_SAMPLE = 24


def domain_sample(cfg: RunConfig) -> list[str]:
    """A few domain texts (report + answer) for the notation measure: generated, or read from the data source
    (generated while the source is a drop folder with no filing yet)."""
    from data_contracts.prepare import awaiting_filings, load_raw

    if cfg.data.source == "synthetic" or (cfg.data.mix_synthetic and awaiting_filings(cfg.data.source)):
        from regulator.generator import generate_dataset

        with tempfile.TemporaryDirectory() as tmp:
            df = generate_dataset(n_examples=DOMAIN_SAMPLE, seed=cfg.data.seed, out_dir=Path(tmp),
                                  eu_fraction=cfg.data.eu_fraction)
    else:
        df = load_raw(cfg.data.source).head(DOMAIN_SAMPLE)
    return [f"{r.report_text}\n{r.target}" for r in df.itertuples()]


@task(name="audit", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def audit(cfg: dict, model_dir: str, registry_dir: str, out_dir: str, key: str) -> dict:
    """Plan memory and time, judge whether full FT is justified; fail here if nothing fits the hardware.

    Args:
        cfg: the validated run config as a dict.
        model_dir: the base model folder (only its config is read: no weights are loaded).
        registry_dir: the model registry, for a LoRA gap measured by an earlier run.
        out_dir, key: the stage folder and cache key (from ``run_stage``).
    Returns:
        The stage manifest: chosen plan, parameter count, time estimate, verdict.
    """
    maybe_inject_fault("audit")
    run_cfg = RunConfig.model_validate(cfg)
    from transformers import AutoTokenizer

    report = run_audit(
        run_cfg,
        shape=model_shape(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        domain_texts=domain_sample(run_cfg),
        general_texts=general_sample_texts(),
        known_lora_gap=known_lora_gap(Path(registry_dir)),
    )
    markdown = render_markdown(report, run_cfg)
    create_markdown_artifact(key="audit-report", markdown=markdown, description="Audit: memory plan and verdict")

    def write(tmp: Path) -> dict:
        (tmp / "audit.md").write_text(markdown)
        (tmp / "audit.json").write_text(json.dumps(report.as_dict(), indent=2))
        return {"n_params": report.n_params, "chosen": report.chosen, "verdict": report.verdict,
                "estimated_hours": report.estimated_hours, "notation_ratio": report.notation_ratio}

    return build_stage(out_dir, write, stage="audit", key=key)
