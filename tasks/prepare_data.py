"""Stage 3 — prepare_data: build or load the examples, validate them against the data contract, split by bank,
tokenise, save HF dataset splits with a content hash. A failed contract stops the flow before training."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact

from data_contracts.contracts import ContractLimits
from data_contracts.prepare import load_raw, prepare_dataset, provenance
from finetune.config import RunConfig
from foundation.errors import DataContractError
from regulator.drills import generate_drills
from regulator.generator import generate_dataset
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
                               balanced_compliant=d.train_balanced_compliant, eu_module_fraction=d.eu_module_fraction)
        raw["source_file"] = [os.path.relpath(p, tmp) if p else "" for p in raw["source_file"]]
        return raw

    def build(tmp: Path) -> dict:
        parts: dict[str, pd.DataFrame] = {}
        if d.source == "synthetic":
            parts["generated"] = generated(tmp, d.n_examples)
        else:
            parts["filings"] = load_raw(d.source)
            if d.mix_synthetic:  # real filings topped up with generated ones (other banks, the same contracts)
                parts["generated"] = generated(tmp, d.mix_synthetic)
        if d.train_drills:
            parts["drills"] = generate_drills(d.train_drills, d.seed, d.drill_lines, d.eu_fraction)
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
        (tmp / "data.md").write_text(markdown)
        create_markdown_artifact(key="data-stats", markdown=markdown, description="Prepared data statistics")
        return {"dataset_hash": manifest["content_hash"], "rows": manifest["rows"],
                "held_out_families": manifest["held_out_families"], "provenance": origin}

    return build_stage(out_dir, build, stage="prepare_data", key=key)
