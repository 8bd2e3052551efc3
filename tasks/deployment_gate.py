"""Stage 7 — deployment_gate: promote the full-FT model only if every threshold holds; otherwise fail the run
with a named error that lists every failed criterion. The decision is a markdown artifact either way."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from evaluation.champion import compare_with_production, render_comparison_markdown
from evaluation.gate import GateThresholds, check_gate, gate_metrics
from finetune.config import RunConfig
from finetune.registry import promote
from finetune.shadow import shadow_pointer
from tasks.evaluate import FULL, predictions_file
from tasks.registry_history import publish_registry_history
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only


def thresholds(cfg: RunConfig) -> GateThresholds:
    """The gate's thresholds from the run config."""
    g = cfg.gate
    return GateThresholds(f1_floor=g.f1_floor, rouge_floor=g.rouge_floor, min_margin_over_lora=g.min_margin_over_lora,
                          use_ci_lower_bound=g.use_ci_lower_bound, forgetting_ceiling=g.forgetting_ceiling,
                          real_max_false_violations=g.real_max_false_violations,
                          real_max_invented_figures=g.real_max_invented_figures,
                          real_min_cleared_share=g.real_min_cleared_share,
                          real_max_unreadable_answers=g.real_max_unreadable_answers,
                          max_regression_vs_production=g.max_regression_vs_production)


def decision_markdown(decision, *, version: str | None, dry_run: bool, versus_production: str = "",
                      shadow_of: str | None = None) -> str:
    """The gate decision as markdown: the verdict, every criterion with its figure and threshold, then production
    vs the candidate (``versus_production``). ``shadow_of``: the production version the promoted one now shadows."""
    verdict = "PASSED" if decision.passed else "REJECTED"
    outcome = (f"promoted as **{version}**, the **shadow** of production {shadow_of}: `finetune analyze` answers "
               "with both until the shadow's rule or `finetune registry promote` makes it production"
               if version and shadow_of else f"promoted as **{version}** (production)" if version else
               "dry run: nothing promoted" if dry_run and decision.passed else "nothing promoted")
    lines = [f"# Deployment gate: {verdict}", outcome, "", "| criterion | figure | threshold | pass |", "|---|---|---|---|"]
    for c in decision.criteria:
        lines.append(f"| {c.name} | {c.figure} | {c.threshold} | {'yes' if c.passed else '**no**'} |")
    lines += ["", *[f"- {c.message}" for c in decision.criteria]]
    if versus_production:
        lines += ["", "## Production vs candidate", "", versus_production]
    return "\n".join(lines)


@task(name="deployment_gate", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def deployment_gate(cfg: dict, eval_dir: str, full_dir: str, data_hash: str, registry_dir: str, out_dir: str,
                    key: str, production_dir: str | None = None, same_as_production: str | None = None,
                    train_key: str | None = None, provenance: dict | None = None,
                    base_model: dict | None = None) -> dict:
    """Judge the full-FT model against the gate; promote it into the registry when it passes. ``production_dir``:
    the production model's answers (``tasks/evaluate_production.py``), None when nothing is in production or the
    config does not compare with it; ``same_as_production``: the production version the candidate is (same training
    key: nothing new to learn from), None otherwise. ``train_key`` (the train_full stage's key) and ``provenance`` (where the
    training data came from) and ``base_model`` (its reference, folder, content hash and hub commit) go on the model
    card: the next run knows from them whether anything is new.

    Raises:
        GateRejected: a criterion failed (or a metric is missing/NaN); the run ends Failed.
    """
    maybe_inject_fault("deployment_gate")
    run_cfg = RunConfig.model_validate(cfg)
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text())
    real = (metrics.get("real") or {}).get("scores", {}).get(FULL)
    versus = (compare_with_production(Path(eval_dir) / predictions_file(FULL), Path(production_dir),
                                      n_bootstrap=run_cfg.eval.bootstrap_samples) if production_dir else
              {"version": same_as_production, "same_model": True} if same_as_production else None)
    gate_input = gate_metrics(metrics["scores"].get(FULL, {}), metrics.get("paired_full_minus_lora", {}),
                              metrics.get("forgetting", {}).get(FULL), real, versus)
    decision = check_gate(gate_input, thresholds(run_cfg))
    version = None
    if decision.passed and not run_cfg.gate.dry_run:
        version = promote(
            Path(registry_dir), Path(full_dir) / "model",
            card={"metrics": gate_input, "decision": decision.to_dict(), "config": cfg, "data_hash": data_hash,
                  "comparison": metrics.get("rows"), "train_full_key": train_key, "data_provenance": provenance,
                  "base_model": base_model,
                  "versus_production": versus},
            files={name: Path(eval_dir) / name for name in ("report.md", "per_code_f1.png", "learning_curve.png")
                   if (Path(eval_dir) / name).is_file()},
            reason=f"deployment gate passed ({len(decision.criteria)} criteria), data {data_hash[:12]}",
            shadow=run_cfg.gate.shadow, shadow_min_filings=run_cfg.gate.shadow_min_filings,
        )
        publish_registry_history(Path(registry_dir))
    shadow = shadow_pointer(Path(registry_dir)) if version else None
    shadow_of = shadow["production"] if shadow and shadow["version"] == version else None
    markdown = decision_markdown(
        decision, version=version, dry_run=run_cfg.gate.dry_run, shadow_of=shadow_of,
        versus_production=render_comparison_markdown(versus, (real or {}).get("false_violations"))
        if run_cfg.gate.max_regression_vs_production is not None else "")
    create_markdown_artifact(key="gate-decision", markdown=markdown, description="Deployment gate decision")
    get_run_logger().info("gate %s%s", "passed" if decision.passed else "rejected",
                          (f": promoted {version}" + (f" as the shadow of production {shadow_of}" if shadow_of else ""))
                          if version else "")
    decision.raise_if_rejected()

    def build(tmp: Path) -> dict:
        (tmp / "decision.md").write_text(markdown)
        (tmp / "decision.json").write_text(json.dumps({**decision.to_dict(), "version": version,
                                                       "metrics": gate_input, "versus_production": versus},
                                                      indent=2, default=str))
        return {"passed": decision.passed, "version": version, "registry_dir": registry_dir,
                "dry_run": run_cfg.gate.dry_run, "shadow_of": shadow_of}

    return build_stage(out_dir, build, stage="deployment_gate", key=key)
