"""Stage 3 — prepare_data: build or load the examples, validate them against the data contract, split by bank,
tokenise, save HF dataset splits with a content hash. A failed contract stops the flow before training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from data_contracts.contracts import ContractLimits
from data_contracts.prepare import awaiting_filings, load_raw, prepare_dataset, provenance
from finetune.config import RunConfig
from foundation.errors import DataContractError
from foundation.hashing import hash_file
from foundation.paths import resolve_input, reviews_dir
from regulator.drills import generate_drills, generate_gap_drills
from regulator.generator import RAW_COLUMNS, TRAIN_ONLY, generate_dataset
from regulator.reviews import trainable
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only


def contract_limits(cfg: RunConfig) -> ContractLimits:
    """The data contract's limits from the run config."""
    d = cfg.data
    return ContractLimits(min_report_chars=d.min_report_chars, max_report_chars=d.max_report_chars,
                          max_target_chars=d.max_target_chars, max_tokens=cfg.model.max_seq_len,
                          max_truncation_rate=d.max_truncation_rate)


def provenance_markdown(origin: dict, source: str) -> str:
    """Where the examples came from (``data_contracts.prepare.provenance``), as markdown."""
    lines = [f"## Provenance (data.source: {source})", "", "| part | rows | forms | report dates |", "|---|---|---|---|"]
    for name, p in origin.items():
        forms = ", ".join(f"{form} {n}" for form, n in p["forms"].items())
        lines.append(f"| {name} | {p['rows']} | {forms} | {p['first_report_date']} to {p['last_report_date']} |")
    return "\n".join(lines)


def stats_markdown(manifest: dict) -> str:
    """Class balance, token lengths and truncation per split, as markdown."""
    lines = ["# Prepared data", f"Held-out directive families (test only): {manifest['held_out_families']}", "",
             "| split | rows | banks | tokens mean | p95 | max | truncated | cases |", "|---|---|---|---|---|---|---|---|"]
    for name, s in manifest["stats"]["splits"].items():
        tok = s.get("tokens", {})
        lines.append(f"| {name} | {s.get('rows')} | {s.get('banks')} | {tok.get('mean', 0):.0f} | {tok.get('p95')} | "
                     f"{tok.get('max')} | {s.get('truncation_rate', 0):.1%} | {s.get('case_kind')} |")
    return "\n".join(lines)


@task(name="prepare_data", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def prepare_data(cfg: dict, model_dir: str, out_dir: str, key: str) -> dict:
    """Generate (or load), validate, split, tokenise and save the dataset.

    Returns:
        The stage manifest: dataset folder, content hash, rows per split, statistics.
    Raises:
        DataContractError: the data failed its contract; the report is a Prefect artifact. Not retried.
    """
    maybe_inject_fault("prepare_data")
    run_cfg = RunConfig.model_validate(cfg)
    d = run_cfg.data
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def generated(tmp: Path, n_examples: int) -> pd.DataFrame:
        """``n_examples`` generated reports (plus the rebalanced pool), their files named relative to ``tmp``."""
        raw = generate_dataset(n_examples=n_examples, seed=d.seed, out_dir=tmp / "raw", eu_fraction=d.eu_fraction,
                               n_train_balanced=d.train_balanced, eu_csv_fraction=d.eu_csv_fraction,
                               balanced_compliant=d.train_balanced_compliant, eu_module_fraction=d.eu_module_fraction,
                               us_extract_fraction=d.train_us_extract_fraction,
                               us_no_at1_fraction=d.train_us_no_at1_fraction,
                               us_elector_extract_fraction=d.train_us_elector_extract_fraction,
                               us_total_bound_fraction=d.train_us_total_bound_fraction)
        raw["source_file"] = [os.path.relpath(p, tmp) if p else "" for p in raw["source_file"]]
        return raw

    left_out: list[dict] = []
    log = get_run_logger()
    # the real evaluation set: never trained on, neither its filings (reviews) nor its banks (delivered filings)
    real = resolve_input(run_cfg.eval.real_source) if run_cfg.eval.real_source else None

    def reviewed(tmp: Path) -> pd.DataFrame:
        """The filings of the review store whose decisions agree with the rule engine, labelled, train only."""
        real_files = [p for p in ([real] if real.is_file() else real.rglob("*")) if p.is_file()] if real else []
        keep, dropped = trainable(reviews_dir(d.reviews), frozenset(hash_file(p) for p in real_files))
        left_out.extend(dropped)
        log.info("review store %s: %d decisions to train on, %d left out", reviews_dir(d.reviews), len(keep),
                 len(dropped))
        if not keep:
            return pd.DataFrame(columns=[*RAW_COLUMNS, TRAIN_ONLY])
        folder = tmp / "reviewed"
        folder.mkdir()
        for path in keep:
            shutil.copyfile(path, folder / path.name)
        rows = load_raw(folder)
        rows[TRAIN_ONLY] = True
        return rows

    real_banks: list[str] = []

    def without_real_banks(filings: pd.DataFrame) -> pd.DataFrame:
        """The delivered filings less those of a bank in the real evaluation set (eval.real_source): what is
        evaluated on is never trained on, by bank."""
        if real is None or not real.exists():
            return filings
        banks = set(load_raw(real)["bank_id"].astype(str))
        mask = filings["bank_id"].astype(str).isin(banks)
        real_banks.extend(sorted(set(filings.loc[mask, "bank_id"].astype(str))))
        if mask.any():
            log.warning("data.source: %d filings of %d banks of the real evaluation set %s are not trained on",
                        int(mask.sum()), len(real_banks), real)
        return filings[~mask].reset_index(drop=True)

    def build(tmp: Path) -> dict:
        parts: dict[str, pd.DataFrame] = {}
        if d.source == "synthetic":
            parts["generated"] = generated(tmp, d.n_examples)
        elif d.mix_synthetic and awaiting_filings(d.source):  # a drop folder before its first delivery
            log.info("data.source %s holds no filings yet: the %d generated reports alone", d.source, d.mix_synthetic)
            parts["generated"] = generated(tmp, d.mix_synthetic)
        else:
            parts["filings"] = without_real_banks(load_raw(d.source))
            if d.mix_synthetic:  # real filings topped up with generated ones (other banks, the same contracts)
                parts["generated"] = generated(tmp, d.mix_synthetic)
        if d.reviews is not None:
            parts["reviews"] = reviewed(tmp)
        if d.train_drills:
            parts["drills"] = generate_drills(d.train_drills, d.seed, d.drill_lines, d.eu_fraction,
                                              fine_share=d.drill_fine_share)
        if d.train_gap_drills:
            parts["gap_drills"] = generate_gap_drills(d.train_gap_drills, d.seed)
        raw = pd.concat(list(parts.values()), ignore_index=True)
        origin = provenance(parts)
        try:
            manifest = prepare_dataset(raw=raw, tokenizer=tokenizer, out_dir=tmp, seed=d.seed,
                                       max_seq_len=run_cfg.model.max_seq_len, limits=contract_limits(run_cfg),
                                       split_fractions=tuple(d.split_fractions))
        except DataContractError as err:
            create_markdown_artifact(key="data-contract-failure", markdown=err.report_markdown or str(err),
                                     description="Data contract failed: nothing downstream ran")
            raise
        markdown = stats_markdown(manifest) + "\n\n" + provenance_markdown(origin, d.source)
        if real_banks:
            markdown += ("\n\n## Filings not trained on\n\nBanks of the real evaluation set (eval.real_source), "
                         f"evaluated on and so never trained on: {', '.join(real_banks)}")
        if left_out:
            markdown += "\n\n## Reviews not trained on\n\n" + "\n".join(
                f"- {r['file']} ({r['reviewer']}, {r['reviewed_at']}): {r['left_out']}" for r in left_out)
        (tmp / "data.md").write_text(markdown)
        create_markdown_artifact(key="data-stats", markdown=markdown, description="Prepared data statistics")
        return {"dataset_hash": manifest["content_hash"], "rows": manifest["rows"],
                "held_out_families": manifest["held_out_families"], "provenance": origin,
                "reviews_left_out": [{k: r.get(k) for k in ("file", "filing_sha256", "reviewer", "left_out")}
                                     for r in left_out]}

    return build_stage(out_dir, build, stage="prepare_data", key=key)
