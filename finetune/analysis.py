"""A model on filings: the room above the domain package ``regulator``.

``regulator.analyze.assess_filings`` reads filings and checks answers against the rule engine without knowing any
model; here a model folder (a Hugging Face folder, ``production`` or a registry version) is resolved, checked, loaded
and asked for its answers in batches. The CLI (``finetune analyze``) and the flow ``flows/analyze.py`` call
:func:`analyze_filings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.errors import DataError
from foundation.memory_reuse import reusing_freed_memory
from regulator.analyze import AnswerFn, FilingResult, Progress, assess_filings
from regulator.xbrl import ParsedReport, render_report

if TYPE_CHECKING:
    from evaluation.constrained import AnswerWords

DEFAULT_BATCH_SIZE = 8
# Reference answers are 130-430 SmolLM2 tokens (mean 241, p99 354, max 425 over 800 generated reports): 448 lets
# the longest finish, and rows that finish leave the batch, so the bound only stops an answer that runs away.
DEFAULT_MAX_NEW_TOKENS = 448


def analyze_filings(
    paths: list[Path],
    *,
    model_dir: Path | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    precision: str = "auto",
    progress: Progress | None = None,
    constrain: bool = False,
) -> list[FilingResult]:
    """Analyse every filing under ``paths`` with the model of ``model_dir`` guarded by the rule engine (the rule
    engine alone when ``model_dir`` is None); one result per filing, in file order. ``constrain``: the check
    lines' heads are decoded under ``evaluation.constrained`` (figures as filed, thresholds of the rule table)."""
    answer = (model_answers(Path(model_dir), batch_size, max_new_tokens, precision, constrain=constrain)
              if model_dir is not None else None)
    return assess_filings(paths, answer=answer, progress=progress)


def model_answers(model_dir: Path, batch_size: int, max_new_tokens: int, precision: str = "auto", *,
                  constrain: bool = False) -> AnswerFn:
    """An answer function for ``assess_filings``: the model, loaded on first use, answers each rendered report;
    ``precision`` as the evaluation's ``eval.precision`` (auto: bf16 where the hardware computes it natively);
    ``constrain`` as ``eval.constrain_heads``."""

    def answer(parsed: list[ParsedReport], progress: Progress | None) -> list[str]:
        import torch

        from evaluation.generate import generate_answers, generation_dtype, load_model_for_eval
        from regulator.prompts import render_prompt
        from training.infra import native_bf16

        device = "cuda" if torch.cuda.is_available() else None
        dtype = generation_dtype(precision, native_bf16()[0])
        with reusing_freed_memory():
            try:
                model, tokenizer = load_model_for_eval(model_dir, device=device, dtype=dtype)
            except Exception as exc:  # what check_model_folder cannot see (a weight of the wrong shape, a tokenizer)
                raise DataError(f"{model_dir}: the model does not load ({type(exc).__name__}: {exc})") from exc
            prompts = [render_prompt(tokenizer, render_report(p)) for p in parsed]
            report = (lambda done, total: progress("generate", done, total)) if progress is not None else None
            heads = [filing_heads(p) for p in parsed] if constrain else None
            words = [filing_words(p) for p in parsed] if constrain else None
            return generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                    batch_size=batch_size, progress=report, heads=heads, words=words)

    return answer


def evaluated_constrained(model_dir: Path) -> bool:
    """Whether the gate judged this model with constrained check-line heads: a registry version's card records the
    run's ``eval.constrain_heads``; a plain model folder (no card) says False. ``analyze`` decodes as judged."""
    card = Path(model_dir) / "card.json"
    if not card.is_file():
        return False
    try:
        config = json.loads(card.read_text()).get("config") or {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{card}: unreadable model card ({type(exc).__name__}: {exc})") from exc
    return bool((config.get("eval") or {}).get("constrain_heads", False))


def filing_heads(parsed: ParsedReport) -> list[str]:
    """The check-line heads a filing's answer may write under constrained decoding (``evaluation.constrained``)."""
    from evaluation.constrained import allowed_heads
    from regulator.rules import evaluate_rules

    return allowed_heads(evaluate_rules(parsed).checks)


def filing_words(parsed: ParsedReport) -> AnswerWords:
    """The measures and closings a filing's answer may write under constrained decoding: the law table's remedies
    with their legal basis in the filing's jurisdiction and US framework (``regulator.render.remedies``), and the
    closings addressed to the filing's bank (``regulator.render.closings``)."""
    from evaluation.constrained import answer_words
    from regulator.rules import regime

    return answer_words(parsed.jurisdiction, regime(parsed), parsed.entity_name, filing_heads(parsed))


def resolve_model_ref(ref: str, registry_dir: Path) -> Path:
    """A model for analysis: a Hugging Face folder path, ``"production"`` or a registry version name.

    Raises ``RegistryError`` (nothing promoted, unknown version) or ``DataError`` for a folder without config.json.
    """
    from finetune.registry import resolve_model

    path = Path(ref).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return path.resolve()
    if "/" in ref or path.is_symlink():
        raise DataError(f"{ref}: no such model folder; pass a model folder, 'production' or a registry version")
    return check_model_folder(resolve_model(Path(registry_dir), ref))


def check_model_folder(path: Path) -> Path:
    """``path`` if it holds a loadable Hugging Face causal LM (a readable config of a decoder-only causal LM,
    complete weights); else an error saying what is wrong, before any filing is read."""
    from finetune.models import check_weights, read_folder_config

    if not (path / "config.json").is_file():
        raise DataError(f"{path} is not a Hugging Face model folder (no config.json); pass a model folder, "
                        "'production' or a registry version")
    read_folder_config(path)
    check_weights(path)
    return path


def shadow_round(registry_dir: Path, paths: list[Path], production: list[dict], *,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 precision: str = "auto", user: str = "analyze (shadow rule)") -> dict | None:
    """Answer the filings production just answered (``production``: ``FilingResult.to_dict()`` rows) with the
    registry's shadow too, when there is one (``finetune.shadow``); record both models' agreement with the rule
    engine per filing and, when the shadow's rule says it is ready, switch production to it. Production's answers
    stay the ones used. Returns the shadow's standing (its answers under ``results``), or None without a shadow."""
    from finetune.registry import resolve_model, switch_production
    from finetune.shadow import agrees, record_filings, shadow_pointer, standing
    from foundation.hashing import hash_file

    pointer = shadow_pointer(registry_dir)
    if pointer is None:
        return None
    model_dir = resolve_model(registry_dir, pointer["version"])
    shadow = [r.to_dict() for r in analyze_filings(paths, model_dir=model_dir, batch_size=batch_size,
                                                   max_new_tokens=max_new_tokens, precision=precision,
                                                   constrain=evaluated_constrained(model_dir))]
    by_file = {r["file"]: r for r in shadow}
    rows = []
    for p in production:
        s = by_file.get(p["file"])
        if s is None or "error" in (p["status"], s["status"]) or p.get("model_violations") is None:
            continue
        rows.append({"file": p["file"],
                     "filing_sha256": hash_file(Path(p["file"])) if Path(p["file"]).is_file() else None,
                     "production_agrees": agrees(p["model_violations"], p["rule_violations"]),
                     "shadow_agrees": s.get("model_violations") is not None
                     and agrees(s["model_violations"], s["rule_violations"])})
    record_filings(registry_dir, rows)
    now = standing(registry_dir)
    if now["ready"]:
        switch_production(registry_dir, pointer["version"], reason=f"shadow A/B: {now['why']}", user=user)
        now["promoted"] = True
    return {**now, "results": shadow}
