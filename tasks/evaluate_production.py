"""Stage 6b — evaluate_production: the model in production answers the same test split and real filings as the
candidate, so the gate can require the candidate to be not worse (champion / challenger).

Its cache key is the production model's content hash with the test data's and the evaluation settings' hashes: a
weekly run whose production and data did not change reuses these answers instead of generating them again.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from evaluation.champion import INFO, PREDICTIONS, REAL
from evaluation.generate import DTYPES, generation_dtype, load_model_for_eval, write_predictions
from evaluation.metrics import score_predictions
from evaluation.real_set import score_real_filings
from finetune.config import RunConfig
from foundation.memory_reuse import reusing_freed_memory
from foundation.paths import write_json_atomic
from tasks.evaluate import eval_inputs, prediction_rows, system_answers
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only
from training.infra import native_bf16


@task(name="evaluate_production", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S,
      retry_condition_fn=transient_only, persist_result=True)
def evaluate_production(cfg: dict, production_dir: str, version: str, model_sha256: str, dataset_dir: str,
                        out_dir: str, key: str) -> dict:
    """Generate and score the production model's answers on the test split and the real filings.

    Returns:
        The stage manifest: the version compared, its F1 and ROUGE-L, its false violations on the real filings.
    """
    maybe_inject_fault("evaluate_production")
    ev, log = RunConfig.model_validate(cfg).eval, get_run_logger()
    inputs = eval_inputs(ev, dataset_dir)
    dtype = generation_dtype(ev.precision, native_bf16()[0])
    log.info("production %s: generating %d answers in %s", version, len(inputs.refs), dtype)
    with reusing_freed_memory():
        model, tokenizer = load_model_for_eval(Path(production_dir))
        model = model.to(DTYPES[dtype])
        answers, real, seconds = system_answers(model, tokenizer, inputs, ev, ev.max_new_tokens)
        del model
    scores = score_predictions(inputs.refs, answers, n_bootstrap=ev.bootstrap_samples)
    real_scores = score_real_filings(real, len(inputs.real_errors)) if real is not None else None
    log.info("production %s: F1 %.3f, ROUGE-L %.3f (%.0f s)", version, scores.get("f1_micro") or float("nan"),
             scores.get("rouge_l") or float("nan"), seconds)

    def build(tmp: Path) -> dict:
        write_predictions(tmp / PREDICTIONS, prediction_rows(inputs, answers))
        if real_scores is not None:
            write_json_atomic(tmp / REAL, real_scores)
        write_json_atomic(tmp / INFO, {"version": version, "model_sha256": model_sha256, "generation_s": seconds,
                                       "scores": scores})
        return {"version": version, "f1_micro": scores.get("f1_micro"), "rouge_l": scores.get("rouge_l"),
                "real_false_violations": real_scores["false_violations"] if real_scores else None}

    return build_stage(out_dir, build, stage="evaluate_production", key=key)
