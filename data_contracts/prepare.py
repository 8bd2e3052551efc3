"""Data preparation guarded by the contracts: load, split by bank, tokenise, validate, save with a content hash.

``prepare_dataset`` is the whole stage; the other functions are its steps, usable on their own.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.contracts import ContractLimits, validate_raw, validate_splits
from foundation.errors import DataError
from foundation.hashing import hash_path
from regulator.generator import RAW_COLUMNS, TRAIN_ONLY, load_xbrl_folder
from regulator.drills import DRILL_KINDS, loss_spans
from regulator.prompts import render_prompt

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100


def load_raw(source: Path | str) -> pd.DataFrame:
    """Load the raw example table from JSONL, Parquet, a folder of XBRL filings (instances and zips) or a zip (an
    xBRL-CSV report package or a bulk zip of instances); ``DataError`` if unusable."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give a .jsonl, a .parquet, a zip or a folder of XBRL filings")
    if path.is_dir() or path.suffix.lower() == ".zip":
        return _normalise(load_xbrl_folder(path), path)
    if not path.is_file():  # a named pipe or a device would hang or never end: only regular files are read
        raise DataError(f"{path}: not a regular file; give a .jsonl, a .parquet, a zip or a folder of XBRL filings")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected one example per row")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        df = _read_jsonl(path)
    elif suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    else:
        raise DataError(f"{path}: unsupported format {suffix or '(no suffix)'!r}; use .jsonl, .parquet, .zip or a folder")
    if df.empty:
        raise DataError(f"{path}: holds no rows; expected one example per row")
    return _normalise(df, path)


def awaiting_filings(source: Path | str) -> bool:
    """Whether ``source`` is a folder that exists and holds no filing yet: a drop folder before its first delivery
    (the weekly deployment's ``filings/incoming``). Anything else, missing folders included, is for ``load_raw``."""
    from regulator.analyze import expand_paths

    path = Path(source)
    return path.is_dir() and not expand_paths([path])[0]


def _read_jsonl(path: Path) -> pd.DataFrame:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 (undecodable byte 0x{data[exc.start]:02x} at line {line}, byte offset {exc.start}); "
            "re-export the file as UTF-8"
        ) from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object per line")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: file has no JSON lines; expected one example per line")
    return pd.DataFrame(rows)


def _normalise(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; expected columns {list(RAW_COLUMNS)}")
    out = df[list(RAW_COLUMNS)].copy()
    # Optional: rows only training may use (a rebalanced pool); absent means every row may go to any split.
    out[TRAIN_ONLY] = df[TRAIN_ONLY].fillna(False).astype(bool) if TRAIN_ONLY in df.columns else False
    out["violations"] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for v in out["violations"]]
    out["source_file"] = out["source_file"].fillna("").astype(str)
    return out.reset_index(drop=True)


def provenance(parts: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Where the examples came from, per part (e.g. ``filings``, ``generated``, ``drills``): rows, filings by form
    (the rendered report's first line up to its date: ``US FFIEC 051 CBLR``, ``EU COREP 4.0`` ...) and the range of
    report dates. Parts without rows are left out."""
    out: dict[str, dict[str, Any]] = {}
    for name, df in parts.items():
        if df is None or df.empty:
            continue
        dates = sorted(str(d) for d in df["report_date"] if str(d))
        forms = pd.Series([kind if kind in DRILL_KINDS else _form_of(text)
                           for kind, text in zip(df["case_kind"], df["report_text"])]).value_counts()
        out[name] = {"rows": int(len(df)), "forms": {str(k): int(v) for k, v in forms.items()},
                     "first_report_date": dates[0] if dates else None,
                     "last_report_date": dates[-1] if dates else None}
    return out


def _form_of(report_text: str) -> str:
    """The form a rendered report states before its report date (``US FFIEC 031``), or ``drill``/``unknown``."""
    first = str(report_text).split("\n", 1)[0].split()
    head = []
    for word in first:
        if len(word) == 10 and word[4] == "-" and word[7] == "-" and word[:4].isdigit():
            return " ".join(head) or "unknown"
        head.append(word)
    return "unknown"


def held_out_families(df: pd.DataFrame, seed: int) -> list[str]:
    """The template families kept for the test split only (one, chosen by ``seed``; none if fewer than two).
    Drill rows have no directive and so no family to hold out."""
    families = sorted(df.loc[~df["case_kind"].isin(DRILL_KINDS), "template_family"].astype(str).unique())
    return [random.Random(seed).choice(families)] if len(families) >= 2 else []


def split_by_bank(
    df: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, pd.DataFrame]:
    """Deterministic train/validation/test split grouped by ``bank_id``; no bank is in two splits.

    Every row of a held-out template family (and every bank with such a row) goes to test; test is then topped up
    to its fraction with other banks (plus, if needed, a bank for each violation class test still lacks), then
    validation is filled, and the remaining banks are train. Rows marked ``train_only`` (a rebalanced training
    pool) go to train and do not count in the fractions, so validation and test keep the natural mix; those of a
    held-out family are dropped, so its wording never reaches training.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    held = held_out_families(df, seed)
    only_train = df[TRAIN_ONLY].astype(bool) if TRAIN_ONLY in df.columns else pd.Series(False, index=df.index)
    pool = df[only_train & ~df["template_family"].isin(held)]
    df = df[~only_train]
    if df.empty:
        raise DataError("every row is marked train_only: validation and test need rows of the natural mix")
    banks = df["bank_id"].astype(str)
    test_banks = set(banks[df["template_family"].isin(held)])
    rows_per_bank = banks.value_counts()
    codes_per_bank = {b: {c for v in vs for c in v} for b, vs in df.groupby(banks)["violations"]}
    # Test must show every violation class the data has; small demo sets need a bank picked for a rare class.
    missing_in_test = set().union(*codes_per_bank.values()) - set().union(*(codes_per_bank[b] for b in test_banks))
    others = sorted(set(rows_per_bank.index) - test_banks)
    random.Random(seed).shuffle(others)
    n = len(df)
    n_test = int(rows_per_bank[list(test_banks)].sum()) if test_banks else 0
    val_banks: set[str] = set()
    n_val = 0
    for bank in others:
        if n_test < fractions[2] * n or missing_in_test & codes_per_bank[bank]:
            test_banks.add(bank)
            n_test += int(rows_per_bank[bank])
            missing_in_test -= codes_per_bank[bank]
        elif n_val < fractions[1] * n:
            val_banks.add(bank)
            n_val += int(rows_per_bank[bank])
    assignment = np.where(banks.isin(test_banks), "test", np.where(banks.isin(val_banks), "validation", "train"))
    out = {name: df[assignment == name] for name in SPLITS}
    out["train"] = pd.concat([out["train"], pool[~pool["bank_id"].astype(str).isin(test_banks | val_banks)]])
    return {name: part.reset_index(drop=True) for name, part in out.items()}


def tokenise(df: pd.DataFrame, tokenizer: Any, max_seq_len: int) -> pd.DataFrame:
    """Add ``prompt_text``, ``input_ids`` (prompt + target + eos), ``labels`` (-100 over the prompt), ``n_tokens``
    and ``truncated``. A sequence over ``max_seq_len`` is cut at the end and marked truncated; the prompt is never
    cut, so a truncated example loses the end of its target (the contract bounds how often that happens).
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token; targets must end with one so the model learns to stop")
    prompts = [render_prompt(tokenizer, text) for text in df["report_text"]]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    targets = list(df["target"])
    encoded = tokenizer(targets, add_special_tokens=False, return_offsets_mapping=True) if prompts else {}
    target_ids = encoded["input_ids"] if prompts else []
    kinds = list(df["case_kind"])
    input_ids, labels, n_tokens, truncated = [], [], [], []
    for n, (p, t) in enumerate(zip(prompt_ids, target_ids)):
        ids = [*p, *t, tokenizer.eos_token_id]
        spans = loss_spans(kinds[n], targets[n])
        if spans is not None:  # a drill's loss is its outcome words (or decision) only, and it has no end to learn
            lab = [IGNORE_INDEX] * len(p) + _span_labels(t, encoded["offset_mapping"][n], spans, kinds[n])
            lab.append(IGNORE_INDEX)
        else:
            lab = [IGNORE_INDEX] * len(p) + [*t, tokenizer.eos_token_id]
        truncated.append(len(ids) > max_seq_len)
        input_ids.append(ids[:max_seq_len])
        labels.append(lab[:max_seq_len])
        n_tokens.append(len(ids))
    out = df.copy()
    out["prompt_text"] = prompts
    out["input_ids"] = input_ids
    out["labels"] = labels
    out["n_tokens"] = n_tokens  # before truncation, so the statistics show how long examples really are
    out["truncated"] = truncated
    return out


def _span_labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]], kind: str) -> list[int]:
    """``ids`` where a token overlaps one of the character ``spans`` of a drill's target
    (``regulator.drills.loss_spans``), else -100."""
    keep = [any(start < e and s < end for s, e in spans) for start, end in offsets]
    if sum(keep) < len(spans):
        raise DataError(f"{kind} target: {len(spans)} spans to learn but only {sum(keep)} of its tokens cover them")
    return [i if k else IGNORE_INDEX for i, k in zip(ids, keep)]


def split_stats(splits: dict[str, pd.DataFrame], held: list[str]) -> dict:
    """Class balance, violation counts, token-length statistics and truncation rate per split."""
    stats: dict[str, Any] = {"held_out_families": held, "splits": {}}
    for name, df in splits.items():
        lengths = np.asarray(df["n_tokens"], dtype=float) if len(df) else np.zeros(1)
        codes = pd.Series([c for v in df["violations"] for c in v], dtype=object).value_counts()
        stats["splits"][name] = {
            "rows": int(len(df)),
            "banks": int(df["bank_id"].nunique()),
            "case_kind": {k: int(v) for k, v in df["case_kind"].value_counts().sort_index().items()},
            "violations": {k: int(v) for k, v in codes.sort_index().items()},
            "jurisdiction": {k: int(v) for k, v in df["jurisdiction"].value_counts().sort_index().items()},
            "template_families": sorted(df["template_family"].unique().tolist()),
            "tokens": {
                "min": int(lengths.min()),
                "mean": round(float(lengths.mean()), 1),
                "p95": int(np.percentile(lengths, 95)),
                "max": int(lengths.max()),
            },
            "truncation_rate": round(float(np.mean(df["truncated"])) if len(df) else 0.0, 4),
        }
    stats["rows"] = sum(s["rows"] for s in stats["splits"].values())
    return stats


def prepare_dataset(
    *,
    raw: pd.DataFrame,
    tokenizer: Any,
    out_dir: Path,
    seed: int,
    max_seq_len: int,
    limits: ContractLimits,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict:
    """Validate, split, tokenise, validate again, then save ``out_dir/dataset`` (HF DatasetDict) and ``stats.json``.

    Nothing is written under ``out_dir/dataset`` unless both contracts pass (``DataContractError`` otherwise).
    Returns a manifest: paths, the dataset's ``content_hash``, the held-out families and the statistics.
    """
    from datasets import Dataset, DatasetDict, Features, Sequence, Value

    validate_raw(raw, limits)
    splits = split_by_bank(raw, seed, split_fractions)
    tokenised = {name: tokenise(df, tokenizer, max_seq_len) for name, df in splits.items()}
    validate_splits(tokenised, limits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = Features(
        {
            **{c: Value("string") for c in RAW_COLUMNS if c != "violations"},
            "violations": Sequence(Value("string")),
            "prompt_text": Value("string"),
            "input_ids": Sequence(Value("int32")),
            "labels": Sequence(Value("int32")),
            "n_tokens": Value("int32"),
            "truncated": Value("bool"),
        }
    )
    dataset = DatasetDict(
        {name: Dataset.from_pandas(df[list(features)], features=features, preserve_index=False)
         for name, df in tokenised.items()}
    )
    final = out_dir / "dataset"
    staging = out_dir / ".dataset.partial"
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)  # the finished folder appears at once; a crash leaves only the staging folder
    held = held_out_families(raw, seed)
    stats = split_stats(tokenised, held)
    stats["max_seq_len"] = max_seq_len
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return {
        "dataset_dir": str(final),
        "stats_path": str(stats_path),
        # state.json holds a random per-process fingerprint; the content is the arrow data and its schema.
        "content_hash": hash_path(final, exclude=frozenset({"state.json"})),
        "held_out_families": held,
        "rows": {name: int(len(df)) for name, df in tokenised.items()},
        "stats": stats,
    }
