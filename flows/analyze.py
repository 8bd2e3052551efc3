"""The ``analyze`` flow: analyse a folder of XBRL filings with the production model, guarded by the rule engine.

One task (``tasks/analyze_filings.py``) does the work; the flow fixes the model for the whole run (the production
pointer is resolved once, at the start), writes ``results.jsonl`` into a run folder, publishes the table artifact
``analysis-results`` and returns the counts per status. With ``review=True`` it then pauses for each filing sent to
review with a typed form in the Prefect UI (``SupervisorReview``): the rule engine's verdict, the model's answer and
the reasons are its description; the supervisor's decision goes to the review store (``regulator/reviews.py``),
which ``prepare_data`` reads as training data (``data.reviews``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model

from foundation.hashing import hash_file
from foundation.paths import default_registry_dir, new_run_dir, project_home, reviews_dir
from finetune.analysis import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, resolve_model_ref, shadow_round
from regulator.analyze import ERROR, NEEDS_REVIEW, RULE_CODES, codes_text, summarize, write_results
from regulator.reviews import Decision, record_decision
from tasks.analyze_filings import analyze_filings_task
from tasks.registry_history import publish_registry_history


class SupervisorReview(RunInput):
    """The form a supervisor fills in for one filing sent to review (rendered by the Prefect UI: Resume on the paused
    run; each field's title is its label, its description the help text below it)."""

    reviewer: str = Field(title="Reviewer", min_length=1, pattern=r"\S",
                          description="Your name: recorded with the decision")
    violations: list[str] = Field(title="Violations", description=(
        "The violation codes the filing really shows, one per item (it starts with the rule engine's: keep them to "
        "confirm, delete or add to correct). No item: the filing is compliant. Codes: " + ", ".join(RULE_CODES)))
    directive: str = Field("", title="Directive", description="The directive to send (it starts with the model's): "
                                                               "correct it where the model was wrong")
    note: str = Field("", title="Note", description="Why, where the decision departs from the rule engine or the "
                                                    "model")


def review_form(result: dict[str, Any], number: int = 1, total: int = 1) -> type[SupervisorReview]:
    """The SupervisorReview form for one filing: its violations and directive start with the rule engine's codes and
    the model's directive, the reviewer stays required (empty), and the filing's summary is the form's description.

    (``RunInput.with_initial_data`` would drop the fields' titles, descriptions and constraints, and make the
    reviewer optional: the defaults are set here on copies of the fields instead.)"""
    start = {"violations": list(result["rule_violations"]), "directive": result.get("model_directive") or ""}
    fields = SupervisorReview.model_fields
    with_start = create_model(SupervisorReview.__name__, __base__=SupervisorReview, **{
        name: (fields[name].annotation, Field(value, title=fields[name].title, description=fields[name].description))
        for name, value in start.items()})
    return with_start.with_initial_data(description=_review_markdown(result, number, total))


@flow(name="analyze")
def analyze(folder: str, model: str = "production", registry_dir: str | None = None,
            rules_only: bool = False, review: bool = False, review_timeout_s: int = 86_400,
            reviews: str | None = None) -> dict[str, Any]:
    """Analyse every XBRL filing under ``folder``.

    Args:
        folder: folder of XBRL instances (``*.xml``, ``*.xbrl``, recursive), absolute or relative to the project.
        model: ``production``, a registry version or a Hugging Face model folder.
        registry_dir: the model registry (default ``<project>/registry``).
        rules_only: the rule engine alone, no model.
        review: pause for a supervisor's decision on each filing sent to review (a form in the UI).
        review_timeout_s: how long each pause waits; the filings not reviewed by then are listed, not lost.
        reviews: the review store (default ``<project>/reviews``).
    Returns:
        Counts per status (``total``, ``ok``, ``needs_review``, ``cannot_assess``, ``error``), the model used, the
        path of ``results.jsonl`` and, with ``review``, the decisions stored (``reviewed``) and contradicting the
        rule engine (``contradicting``).
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
    out = {**counts, "model": str(model_dir) if model_dir else "rules-only", "results": str(run_dir / "results.jsonl")}
    if model == "production" and not rules_only:
        out["shadow"] = _shadow(Path(registry_dir) if registry_dir else default_registry_dir(), path, results, run_dir)
    if review:
        out.update(_ask_supervisors(results, reviews_dir(reviews), review_timeout_s))
    return out


def _shadow(registry: Path, path: Path, results: list[dict[str, Any]], run_dir: Path) -> dict[str, Any] | None:
    """Shadow A/B (``finetune.shadow``): the registry's shadow answers the same filings beside production (whose
    answers are the ones used); its answers go to ``shadow_results.jsonl``, its standing to the log, and it becomes
    production when its gate's rule says so."""
    log = get_run_logger()
    standing = shadow_round(registry, [path], results)
    if standing is None:
        return None
    write_results(run_dir / "shadow_results.jsonl", standing.pop("results"))
    log.info("shadow %s beside production: %s", standing["version"], standing["why"])
    if standing.get("promoted"):
        log.warning("shadow %s is production now (%s)", standing["version"], standing["why"])
        publish_registry_history(registry)
    return standing


def _ask_supervisors(results: list[dict[str, Any]], store: Path, timeout_s: int) -> dict[str, Any]:
    """Pause for each filing sent to review; store each decision; stop asking when a pause times out."""
    log = get_run_logger()
    pending = [r for r in results if r["status"] == NEEDS_REVIEW]
    stored, contradicting = [], []
    for i, result in enumerate(pending, start=1):
        if not Path(result["file"]).is_file():
            log.warning("%s: a member of a zip; its review cannot be stored with the filing, not asked", result["file"])
            continue
        sha256 = hash_file(Path(result["file"]))  # the filing as analysed: a change before the decision is refused
        form = review_form(result, i, len(pending))
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, key=f"review-{sha256[:16]}")
        except FlowPauseTimeout:
            log.warning("no decision within %d s: %d filings left to review (analyse them again to ask)", timeout_s,
                        len(pending) - i + 1)
            break
        decision = Decision(filing_sha256=sha256, file=result["file"], reviewer=answer.reviewer,
                            violations=sorted(answer.violations), directive=answer.directive,
                            rule_violations=list(result["rule_violations"]),
                            model_violations=result.get("model_violations"), note=answer.note)
        record_decision(store, Path(result["file"]), decision)
        stored.append(result["file"])
        if not decision.contradicts_rules:
            log.info("%s: %s confirmed the rule engine (%s): stored for training (data.reviews)", result["file"],
                     answer.reviewer, decision.violations or "compliant")
        else:
            contradicting.append(result["file"])
            log.warning("%s: %s decided %s, the rule engine %s: kept and flagged, not trained on", result["file"],
                        answer.reviewer, decision.violations or "compliant", decision.rule_violations or "compliant")
    return {"reviewed": stored, "contradicting": contradicting, "review_store": str(store)}


def _review_markdown(result: dict[str, Any], number: int, total: int) -> str:
    """What the supervisor sees above the form: the filing, the rule engine's verdict, the model's answer, why."""
    return "\n".join([
        f"## Review {number} of {total}: {Path(result['file']).name}",
        f"{result['entity']} ({result['form']}, {result['report_date']})  ", f"File: `{result['file']}`", "",
        f"**Rule engine:** {codes_text(result, 'rule_violations')}  ",
        f"**Model:** {codes_text(result, 'model_violations')}", "",
        "**Sent to review because:**", *[f"- {reason}" for reason in result["reasons"]], "",
        "**The model's answer:**", "```", result.get("model_answer") or "(none)", "```"])


def _row(result: dict[str, Any]) -> dict[str, str]:
    """One row of the ``analysis-results`` table."""
    return {"file": result["file"], "status": result["status"], "entity": result["entity"],
            "report date": result["report_date"], "rule violations": codes_text(result, "rule_violations"),
            "model violations": codes_text(result, "model_violations"), "reasons": "; ".join(result["reasons"])}
