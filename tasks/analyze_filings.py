"""The one task of the ``analyze`` flow: analyse a folder of XBRL filings (rule engine, model, guardrail).

Retried on transient failures (a worker losing memory while generating); an unreadable filing is not a failure
(it is an ``error`` result). No cache: a quarterly folder gains late filings and the production pointer moves
between runs, and a cache hit that returned last run's verdicts would be silently stale; re-running is minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from finetune.analysis import analyze_filings, evaluated_constrained
from tasks.stage import RETRIES, RETRY_DELAY_S, transient_only


@task(name="analyze_filings", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      cache_policy=NO_CACHE)
def analyze_filings_task(folder: str, model_dir: str | None, batch_size: int, max_new_tokens: int
                         ) -> list[dict[str, Any]]:
    """Analyse every XBRL filing under ``folder``, decoding as the gate judged the model (its card's
    ``eval.constrain_heads``); return one ``FilingResult.to_dict()`` per file."""
    log = get_run_logger()
    constrain = model_dir is not None and evaluated_constrained(Path(model_dir))
    if model_dir is not None:
        log.info("check-line heads %s, as the model was judged", "constrained" if constrain else "free")

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "generate":  # ceil divisions: the last batch may be short
            log.info("model answers: batch %d of %d", -(-done // batch_size), -(-total // batch_size))

    results = analyze_filings([Path(folder)], model_dir=Path(model_dir) if model_dir else None,
                              batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                              constrain=constrain)
    return [r.to_dict() for r in results]
