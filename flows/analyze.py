"""The ``analyze`` flow: analyse a folder of XBRL filings with the production model, guarded by the rule engine.

One task (``tasks/analyze_filings.py``) does the work; the flow fixes the model for the whole run (the production
pointer is resolved once, at the start), writes ``results.jsonl`` into a run folder, publishes the table artifact
``analysis-results`` and returns the counts per status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from foundation.paths import default_registry_dir, new_run_dir, project_home
from finetune.analysis import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, resolve_model_ref
from regulator.analyze import ERROR, codes_text, summarize, write_results
from tasks.analyze_filings import analyze_filings_task


@flow(name="analyze")
def analyze(folder: str, model: str = "production", registry_dir: str | None = None,
            rules_only: bool = False) -> dict[str, Any]:
    """Analyse every XBRL filing under ``folder``.

    Args:
        folder: folder of XBRL instances (``*.xml``, ``*.xbrl``, recursive), absolute or relative to the project.
        model: ``production``, a registry version or a Hugging Face model folder.
        registry_dir: the model registry (default ``<project>/registry``).
        rules_only: the rule engine alone, no model.
    Returns:
        Counts per status (``total``, ``ok``, ``needs_review``, ``cannot_assess``, ``error``), the model used and
        the path of ``results.jsonl``.
    """
    log = get_run_logger()
    path = Path(folder) if Path(folder).is_absolute() else project_home() / folder
    model_dir = None if rules_only else resolve_model_ref(
        model, Path(registry_dir) if registry_dir else default_registry_dir())
    log.info("analysing %s with %s", path, model_dir or "the rule engine alone")
    results = analyze_filings_task(str(path), str(model_dir) if model_dir else None, DEFAULT_BATCH_SIZE,
                                   DEFAULT_MAX_NEW_TOKENS)
    run_dir = new_run_dir("analyze")
    write_results(run_dir / "results.jsonl", results)
    create_table_artifact(key="analysis-results", table=[_row(r) for r in results],
                          description=f"XBRL filings under {path}, analysed with "
                                      f"{model_dir or 'the rule engine alone'}")
    for r in results:
        if r["status"] == ERROR:
            log.warning("could not read %s: %s", r["file"], "; ".join(r["reasons"]))
    counts = summarize(results)
    log.info("%s", ", ".join(f"{n} {s}" for s, n in counts.items()))
    return {**counts, "model": str(model_dir) if model_dir else "rules-only",
            "results": str(run_dir / "results.jsonl")}


def _row(result: dict[str, Any]) -> dict[str, str]:
    """One row of the ``analysis-results`` table."""
    return {"file": result["file"], "status": result["status"], "entity": result["entity"],
            "report date": result["report_date"], "rule violations": codes_text(result, "rule_violations"),
            "model violations": codes_text(result, "model_violations"), "reasons": "; ".join(result["reasons"])}
