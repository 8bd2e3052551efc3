"""Benchmark the data stage at reference scale (6,800 examples): generation, XBRL parsing, `analyze --rules-only`,
contract validation.

Prints rows/s per step and returns them as a dict. Run: ``.venv/bin/python bench/bench_data.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

N_EXAMPLES = 6_800


def run(n_examples: int = N_EXAMPLES, seed: int = 0) -> dict:
    """Time generation (write + parse + label), re-parsing every instance, and both contracts; return rows/s."""
    import great_expectations  # noqa: F401  (imported first so its 3 s import is not billed to a step)

    from data_contracts.contracts import ContractLimits, validate_raw, validate_splits
    from data_contracts.prepare import split_by_bank
    from finetune.analysis import analyze_filings
    from regulator.generator import generate_dataset
    from regulator.xbrl import parse_xbrl_file

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        raw = generate_dataset(n_examples, seed, Path(tmp))
        results["generate (write+parse+label)"] = _rate(n_examples, start)

        files = sorted((Path(tmp) / "xbrl").iterdir())
        start = time.perf_counter()
        for path in files:
            parse_xbrl_file(path)
        results["parse XBRL"] = _rate(len(files), start)

        start = time.perf_counter()
        analyze_filings(files, model_dir=None)  # `finetune analyze --rules-only`: parse, assess, review reasons
        results["analyze --rules-only"] = _rate(len(files), start)

        start = time.perf_counter()
        validate_raw(raw, ContractLimits())
        results["raw contract"] = _rate(n_examples, start)

        splits = split_by_bank(raw, seed)
        for df in splits.values():  # token counts stand in for a tokenizer: this times the contract, not tokenising
            df["n_tokens"] = df["report_text"].str.len() // 3 + df["target"].str.len() // 3
            df["truncated"] = False
        start = time.perf_counter()
        validate_splits(splits, ContractLimits())
        results["splits contract"] = _rate(n_examples, start)

    print(f"{'step':32} {'rows':>7} {'seconds':>8} {'rows/s':>9}")
    for step, r in results.items():
        print(f"{step:32} {int(r['rows']):>7} {r['seconds']:>8.2f} {r['rows_per_s']:>9.0f}")
    return results


def _rate(rows: int, start: float) -> dict[str, float]:
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


if __name__ == "__main__":
    run()
