"""Stage 6 — evaluate: batched generation on the held-out test split for the base model, LoRA and full FT;
violation F1, directive ROUGE-L, bootstrap intervals, forgetting; comparison table, plots and examples."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evaluation.forgetting import answer_nll, forgetting_increase
from evaluation.generate import DTYPES, generate_answers, generation_dtype, load_model_for_eval, write_predictions
from evaluation.metrics import paired_bootstrap, score_predictions
from evaluation.report import (
    comparison_rows,
    plot_learning_curves,
    plot_loss_curves,
    plot_per_code_f1,
    render_comparison_markdown,
    render_curve_markdown,
    render_examples_markdown,
    render_paired_markdown,
    render_sweep_markdown,
    select_examples,
)
from evaluation.constrained import AnswerWords, heads_from_reference, report_words
from evaluation.real_set import read_real_set, real_rows, render_real_markdown, score_real_filings
from finetune.analysis import filing_heads, filing_words
from finetune.config import EvalConfig, RunConfig
from foundation.memory_reuse import reusing_freed_memory
from foundation.paths import resolve_input, write_json_atomic
from regulator.analyze import FilingResult, analyze_report
from regulator.prompts import render_prompt
from regulator.xbrl import ParsedReport, render_report
from tasks.general_answers import general_answers_file
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only
from training.curve import CURVE_FILE, read_curve
from training.infra import native_bf16

BASE, LORA, FULL = "base", "LoRA", "full FT"


def _test_split(dataset_dir: str, cap: int | None) -> tuple[list[str], list[str], list[str], list[str]]:
    """Ids, prompts, reference answers and report texts of the test split (the first ``cap`` rows when capped)."""
    from datasets import load_from_disk

    test = load_from_disk(dataset_dir)["test"]
    if cap is not None:
        test = test.select(range(min(cap, len(test))))
    return list(test["id"]), list(test["prompt_text"]), list(test["target"]), list(test["report_text"])


def real_source_path(source: str | Path | None) -> Path | None:
    """``eval.real_source`` as a path (relative to the checkout), or None when no real set is configured."""
    return None if source is None else resolve_input(source)


def _no_real_set(real_path: Path | None) -> str:
    """Why no real filing was scored."""
    return "eval.real_source is not set" if real_path is None else f"none of {real_path} could be read"


def _review_real(parsed: list[ParsedReport], answers: list[str]) -> list[FilingResult]:
    """Each real filing's answer reviewed as ``finetune analyze`` reviews it."""
    return [analyze_report(p, a) for p, a in zip(parsed, answers)]


@dataclass(frozen=True)
class EvalInputs:
    """What every evaluated system answers: the test split (ids, prompts, references) and the real filings, with
    the check-line heads each answer may write when ``eval.constrain_heads`` is on (else None)."""

    ids: list[str]
    prompts: list[str]
    refs: list[str]
    test_heads: list[list[str]] | None
    real_path: Path | None
    real_parsed: list[ParsedReport]
    real_errors: list[FilingResult]
    real_heads: list[list[str]] | None
    test_words: list[AnswerWords] | None = None
    real_words: list[AnswerWords] | None = None


def eval_inputs(ev: EvalConfig, dataset_dir: str) -> EvalInputs:
    """The test split (capped at ``eval.max_examples``) and the real filings of ``eval.real_source``."""
    ids, prompts, refs, reports = _test_split(dataset_dir, ev.max_examples)
    real_path = real_source_path(ev.real_source)
    real_parsed, real_errors = read_real_set(real_path) if real_path is not None else ([], [])
    if real_path is not None:
        get_run_logger().info("real set %s: %d filings readable, %d not", real_path, len(real_parsed),
                              len(real_errors))
    # Constrained heads come from the filing (real) or, equivalently, the reference's heads (a dataset row keeps
    # the answer, not the parsed filing): rule code, figure and threshold, never an outcome.
    # The words: the law table's remedies in the filing's jurisdiction and US framework, and the closings
    # addressed to its bank (a row's read back from its report text's header).
    if not ev.constrain_heads:
        return EvalInputs(ids, prompts, refs, None, real_path, real_parsed, real_errors, None)
    test_heads = [heads_from_reference(r) for r in refs]
    return EvalInputs(ids, prompts, refs, test_heads, real_path, real_parsed, real_errors,
                      [filing_heads(p) for p in real_parsed],
                      [report_words(t, h) for t, h in zip(reports, test_heads)],
                      [filing_words(p) for p in real_parsed])


def system_answers(model, tokenizer, inputs: EvalInputs, ev: EvalConfig, bound: int
                   ) -> tuple[list[str], list[FilingResult] | None, float]:
    """One system's answers on the test split, its reviewed answers on the real filings (None without any) and the
    seconds the test split's generation took."""
    started = time.monotonic()
    answers = generate_answers(model, tokenizer, inputs.prompts, max_new_tokens=bound, batch_size=ev.batch_size,
                               heads=inputs.test_heads, words=inputs.test_words)
    seconds = time.monotonic() - started
    if not inputs.real_parsed:
        return answers, None, seconds
    real = generate_answers(model, tokenizer,
                            [render_prompt(tokenizer, render_report(p)) for p in inputs.real_parsed],
                            max_new_tokens=bound, batch_size=ev.batch_size, heads=inputs.real_heads,
                            words=inputs.real_words)
    return answers, _review_real(inputs.real_parsed, real), seconds


def predictions_file(system: str) -> str:
    """The file name of a system's test-split answers in an evaluation folder."""
    return f"predictions-{system.replace(' ', '_')}.jsonl"


def prediction_rows(inputs: EvalInputs, answers: list[str]) -> list[dict]:
    """A system's answers as prediction rows (id, prompt, reference, prediction)."""
    return [{"id": i, "prompt": p, "reference": r, "prediction": a}
            for i, p, r, a in zip(inputs.ids, inputs.prompts, inputs.refs, answers)]


def _training_figures(summary_dir: str) -> dict:
    """Training time, throughput and trainable parameters from a stage's train_summary.json."""
    summary = json.loads((Path(summary_dir) / "train_summary.json").read_text())
    return {"trainable_params": summary.get("trainable_params"), "train_seconds": summary.get("wall_time_s"),
            "tokens_per_second": summary.get("tokens_per_s"), "lr": summary.get("lr")}


@task(name="evaluate", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def evaluate(cfg: dict, model_dir: str, model_hash: str, dataset_dir: str, full_dir: str, lora_dir: str | None,
             out_dir: str, key: str) -> dict:
    """Generate, score and compare base / LoRA / full FT on the test split, and on the real filings of
    ``eval.real_source`` (each answer reviewed against the rule engine as ``finetune analyze`` reviews it).

    Returns:
        The stage manifest: metrics of every system, the paired full-FT minus LoRA difference, forgetting.
    """
    maybe_inject_fault("evaluate")
    run_cfg = RunConfig.model_validate(cfg)
    ev, log = run_cfg.eval, get_run_logger()
    inputs = eval_inputs(ev, dataset_dir)
    ids, refs, real_path, real_parsed, real_errors = (inputs.ids, inputs.refs, inputs.real_path, inputs.real_parsed,
                                                      inputs.real_errors)
    general = [json.loads(line) for line in general_answers_file(model_dir, model_hash, "heldout").read_text().splitlines()]
    general = general[: ev.forgetting_prompts] if ev.forgetting_prompts else general
    systems = {BASE: (Path(model_dir), None), FULL: (Path(full_dir) / "model", None)}
    if lora_dir:
        systems[LORA] = (Path(model_dir), Path(lora_dir) / "adapter")
    dtype = generation_dtype(ev.precision, native_bf16()[0])
    predictions, nll, generation, real_results = {}, {}, {}, {}
    for name, (path, adapter) in systems.items():
        # The base model never writes the answer format: a tight bound scores it the same, minutes sooner.
        bound = ev.base_max_new_tokens if name == BASE and ev.base_max_new_tokens else ev.max_new_tokens
        with reusing_freed_memory():
            model, tokenizer = load_model_for_eval(path, adapter=adapter)
            nll[name] = answer_nll(model, tokenizer, [g["prompt"] for g in general], [g["answer"] for g in general])
            model = model.to(DTYPES[dtype])  # after the fp32 NLL, so forgetting does not depend on the precision
            log.info("%s: generating %d answers in %s (batches of %d, up to %d new tokens)", name, len(refs),
                     dtype, ev.batch_size, bound)
            predictions[name], real, generation[name] = system_answers(model, tokenizer, inputs, ev, bound)
            if real is not None:
                real_results[name] = real
            del model
        log.info("%s: %d answers generated in %.0f s; general NLL %.3f", name, len(refs), generation[name],
                 nll[name]["mean_nll"])
    scores = {n: score_predictions(refs, p, n_bootstrap=ev.bootstrap_samples) for n, p in predictions.items()}
    paired = paired_bootstrap(refs, predictions[FULL], predictions[LORA], n_bootstrap=ev.bootstrap_samples) \
        if LORA in predictions else {}
    forgetting = {n: forgetting_increase(nll[BASE]["mean_nll"], nll[n]["mean_nll"]) for n in predictions}
    training = {FULL: _training_figures(full_dir), **({LORA: _training_figures(lora_dir)} if lora_dir else {})}
    order = [n for n in (BASE, LORA, FULL) if n in predictions]
    rows = comparison_rows({n: {"scores": scores[n], "forgetting": forgetting[n], "training": training.get(n)}
                            for n in order})
    create_table_artifact(key="comparison", table=rows, description="base vs LoRA vs full FT on the test split")
    real_scores = {n: score_real_filings(real_results[n], len(real_errors)) for n in order if n in real_results}
    if real_scores:
        create_table_artifact(key="real-filings", table=real_rows(real_scores),
                              description=f"base vs LoRA vs full FT on the real filings of {real_path}")

    def build(tmp: Path) -> dict:
        for name in order:
            write_predictions(tmp / predictions_file(name), prediction_rows(inputs, predictions[name]))
        plot_per_code_f1({n: scores[n] for n in order}, tmp / "per_code_f1.png")
        logs = {"full FT": Path(full_dir) / "metrics.jsonl", **({"LoRA": Path(lora_dir) / "metrics.jsonl"} if lora_dir else {})}
        plot_loss_curves(logs, tmp / "loss_curves.png")
        curves = {FULL: read_curve(Path(full_dir) / CURVE_FILE),
                  **({LORA: read_curve(Path(lora_dir) / CURVE_FILE)} if lora_dir else {})}
        plot_learning_curves(curves, tmp / "learning_curve.png")
        sweep_file = Path(lora_dir) / "lr_sweep.json" if lora_dir else None
        sweep = json.loads(sweep_file.read_text()) if sweep_file is not None and sweep_file.is_file() else None
        examples = render_examples_markdown(refs, {n: predictions[n] for n in order},
                                            select_examples(refs, {n: predictions[n] for n in order}), ids=ids)
        for name, results in real_results.items():
            write_json_atomic(tmp / f"real-{name.replace(' ', '_')}.json", [r.to_dict() for r in results])
        real_section = (render_real_markdown(real_scores, real_results, str(real_path)) if real_scores else
                        f"No real filings were evaluated: {_no_real_set(real_path)}.")
        report = "\n\n".join([
            f"# Evaluation on {len(refs)} held-out test examples", render_comparison_markdown(rows),
            f"## Real filings ({len(real_parsed)})", real_section,
            "## Full FT minus LoRA", render_paired_markdown(paired),
            "## Learning curve (validation split, teacher-forced)", render_curve_markdown(curves),
            "## LoRA learning rate", render_sweep_markdown(sweep, training.get(LORA)),
            f"Plots: `{out_dir}/learning_curve.png`, `{out_dir}/per_code_f1.png`, `{out_dir}/loss_curves.png`",
            "## Examples", examples,
        ])
        (tmp / "report.md").write_text(report)
        metrics = {"scores": scores, "paired_full_minus_lora": paired, "forgetting": forgetting, "nll": nll,
                   "training": training, "rows": rows, "n_test": len(refs), "learning_curve": curves,
                   "lora_lr_sweep": sweep, "generation_s": generation, "generation_dtype": dtype,
                   "real": {"source": str(real_path) if real_path else None, "scores": real_scores,
                            "unreadable": [r.to_dict() for r in real_errors]}}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        create_markdown_artifact(key="evaluation-report", markdown=report, description="Evaluation report")
        return {"f1_micro": {n: scores[n].get("f1_micro") for n in order},
                "rouge_l": {n: scores[n].get("rouge_l") for n in order}, "n_test": len(refs),
                "real_false_violations": {n: r["false_violations"] for n, r in real_scores.items()},
                "real_invented_figures": {n: r["invented_figures"] for n, r in real_scores.items()}}

    return build_stage(out_dir, build, stage="evaluate", key=key)
