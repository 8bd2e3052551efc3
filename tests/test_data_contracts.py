"""Data contracts and preparation: bad inputs are refused with a message naming the problem; good data is
split by bank, tokenised, validated and saved with a stable content hash."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from data_contracts.contracts import ContractLimits, validate_raw, validate_splits
from data_contracts.prepare import (
    IGNORE_INDEX,
    held_out_families,
    load_raw,
    prepare_dataset,
    split_by_bank,
    tokenise,
)
from foundation.errors import DataContractError, DataError, XBRLError
from regulator.generator import RAW_COLUMNS, TRAIN_ONLY, generate_dataset
from regulator.prompts import render_prompt
from tests.test_xbrl import BILLION_LAUGHS, XXE


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def raw_and_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("raw")
    return generate_dataset(240, seed=11, out_dir=out), out


@pytest.fixture()
def raw(raw_and_dir: tuple[pd.DataFrame, Path]) -> pd.DataFrame:
    return raw_and_dir[0].copy()


@pytest.fixture(scope="module")
def tokenised_splits(raw_and_dir, tokenizer) -> dict[str, pd.DataFrame]:
    splits = split_by_bank(raw_and_dir[0], seed=1)
    return {name: tokenise(df, tokenizer, 1024) for name, df in splits.items()}


def _splits(tokenised_splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: df.copy() for name, df in tokenised_splits.items()}


# ----------------------------------------------------------------------------------------------- good data


def test_raw_contract_passes_on_generated_data(raw: pd.DataFrame) -> None:
    result = validate_raw(raw, ContractLimits())
    assert result.n_expectations >= 15 and result.n_rows == len(raw)
    assert "passed" in result.report_markdown


def test_split_by_bank_is_deterministic_grouped_and_holds_out_a_family(raw: pd.DataFrame) -> None:
    a, b = split_by_bank(raw, seed=1), split_by_bank(raw, seed=1)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    banks = {name: set(df["bank_id"]) for name, df in a.items()}
    assert not (banks["train"] & banks["test"] or banks["train"] & banks["validation"] or banks["validation"]
                & banks["test"])
    assert sum(len(df) for df in a.values()) == len(raw)
    held = held_out_families(raw, seed=1)
    assert len(held) == 1 and set(raw.loc[raw["template_family"].isin(held), "id"]) <= set(a["test"]["id"])
    assert not set(a["train"]["template_family"]) & set(held)
    assert 0.6 < len(a["train"]) / len(raw) < 0.9
    codes = {c for v in raw["violations"] for c in v}
    for name in ("train", "test"):
        assert {c for v in a[name]["violations"] for c in v} == codes


def test_tokenise_masks_the_prompt_and_ends_with_eos(raw: pd.DataFrame, tokenizer) -> None:
    out = tokenise(raw.head(4), tokenizer, 1024)
    row = out.iloc[0]
    assert row["prompt_text"] == render_prompt(tokenizer, row["report_text"])
    n_prompt = len(tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    assert row["input_ids"][-1] == tokenizer.eos_token_id and row["n_tokens"] == len(row["input_ids"])
    assert tokenizer.decode(row["input_ids"][n_prompt:-1]) == row["target"]
    short = tokenise(raw.head(2), tokenizer, n_prompt + 5)
    assert short["truncated"].all() and all(len(ids) == n_prompt + 5 for ids in short["input_ids"])


def test_prepare_dataset_saves_dataset_stats_and_stable_hash(raw: pd.DataFrame, tokenizer, tmp_path: Path) -> None:
    from datasets import load_from_disk

    kwargs = dict(raw=raw, tokenizer=tokenizer, seed=1, max_seq_len=1024, limits=ContractLimits())
    manifest = prepare_dataset(out_dir=tmp_path / "a", **kwargs)
    again = prepare_dataset(out_dir=tmp_path / "b", **kwargs)
    assert manifest["content_hash"] == again["content_hash"]
    ds = load_from_disk(manifest["dataset_dir"])
    assert set(ds) == {"train", "validation", "test"}
    assert {*RAW_COLUMNS, "prompt_text", "input_ids", "labels", "n_tokens", "truncated"} <= set(ds["train"].features)
    stats = json.loads(Path(manifest["stats_path"]).read_text())
    assert stats["rows"] == len(raw) and stats["held_out_families"] == manifest["held_out_families"]
    assert {"min", "mean", "p95", "max"} <= set(stats["splits"]["test"]["tokens"])
    assert "truncation_rate" in stats["splits"]["train"] and stats["splits"]["train"]["case_kind"]


def test_load_raw_jsonl_parquet_and_folder_round_trip(raw_and_dir, tmp_path: Path) -> None:
    raw, out = raw_and_dir
    jsonl = tmp_path / "raw.jsonl"
    raw.head(10).to_json(jsonl, orient="records", lines=True, force_ascii=False)
    parquet = tmp_path / "raw.parquet"
    raw.head(10).to_parquet(parquet)
    for source in (jsonl, parquet):
        loaded = load_raw(source)
        # the raw columns, plus train_only (kept from the file, False when the file has no such column)
        assert list(loaded.columns) == [*RAW_COLUMNS, TRAIN_ONLY] and loaded["violations"].tolist() == raw.head(10)[
            "violations"].tolist()
    no_flag = tmp_path / "no_flag.jsonl"
    raw.head(10).drop(columns=[TRAIN_ONLY]).to_json(no_flag, orient="records", lines=True, force_ascii=False)
    assert not load_raw(no_flag)[TRAIN_ONLY].any()
    folder = load_raw(out / "xbrl")
    assert len(folder) == len(raw)


# ----------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('<?xml version="1.0"?><xbrli:xbrl xmlns:xbrli="http://www.xbrl.org/2003/instance"><xbrli:context',
         "not well-formed XML"),
        (XXE, "XXE"),
        (BILLION_LAUGHS, "billion laughs"),
        ("this is a PDF export, not XML", "not well-formed XML at line 1"),
        ('<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "root element is rss, not xbrli:xbrl"),
    ],
    ids=["corrupt-xml", "external-entity", "billion-laughs", "not-xml", "wrong-root"],
)
def test_bad_xbrl_in_a_folder_is_named(raw_and_dir, tmp_path: Path, content: str, message: str) -> None:
    _, out = raw_and_dir
    folder = tmp_path / "filings"
    folder.mkdir()
    good = sorted((out / "xbrl").iterdir())[0]
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "bad.xml").write_text(content)
    with pytest.raises(XBRLError, match=message) as err:
        load_raw(folder)
    assert "bad.xml" in str(err.value) and "1 of 2" in str(err.value)


def test_missing_columns_are_named(raw: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match=r"missing required column\(s\) \['target'\]") as err:
        validate_raw(raw.drop(columns=["target"]))
    assert err.value.failures[0]["column"] == "target"
    path = tmp_path / "raw.jsonl"
    raw.drop(columns=["bank_id"]).head(3).to_json(path, orient="records", lines=True)
    with pytest.raises(DataError, match=r"missing required column\(s\) \['bank_id'\]"):
        load_raw(path)


def test_unknown_violation_code_is_named_with_row(raw: pd.DataFrame) -> None:
    raw.at[3, "violations"] = ["CET1_RATIO", "LIQUIDITY_MAGIC"]
    with pytest.raises(DataContractError, match="violations_joined") as err:
        validate_raw(raw)
    failure = err.value.failures[0]
    assert failure["expectation"] == "expect_column_values_to_match_regex" and failure["unexpected_count"] == 1
    assert failure["sample"] == [raw.at[3, "id"]]
    assert "violations_joined" in err.value.report_markdown


def test_duplicate_ids_are_named(raw: pd.DataFrame) -> None:
    raw.at[5, "id"] = raw.at[4, "id"]
    with pytest.raises(DataContractError, match=r"expect_column_values_to_be_unique on raw.id: 2 of 240 rows"):
        validate_raw(raw)


def test_over_long_texts_are_refused(raw: pd.DataFrame) -> None:
    raw.at[0, "report_text"] = raw.at[0, "report_text"] * 20
    with pytest.raises(DataContractError, match=r"expect_column_value_lengths_to_be_between on raw.report_text: 1"):
        validate_raw(raw, ContractLimits(max_report_chars=2000))


def test_missing_case_kind_is_named(raw: pd.DataFrame) -> None:
    with pytest.raises(DataContractError, match=r"case_kind: missing \['data_quality'\]"):
        validate_raw(raw[raw["case_kind"] != "data_quality"].reset_index(drop=True))


def test_badly_decoded_text_is_refused(raw: pd.DataFrame) -> None:
    raw.at[2, "bank_name"] = "Caf\ufffd Bank"
    with pytest.raises(DataContractError, match="U\\+FFFD") as err:
        validate_raw(raw)
    assert err.value.failures[0]["sample"] == [raw.at[2, "id"]]


def test_bank_leakage_across_splits_is_named(tokenised_splits) -> None:
    splits = _splits(tokenised_splits)
    leaked = splits["train"].iloc[[0]].assign(id="leaked-copy")
    splits["test"] = pd.concat([splits["test"], leaked], ignore_index=True)
    bank = leaked["bank_id"].iloc[0]
    with pytest.raises(DataContractError, match="banks_across_splits") as err:
        validate_splits(splits, ContractLimits())
    failure = next(f for f in err.value.failures if f["frame"] == "banks_across_splits")
    assert bank in failure["sample"]


def test_near_duplicate_report_across_splits_is_named(tokenised_splits) -> None:
    splits = _splits(tokenised_splits)
    copied = splits["train"].at[0, "report_text"].split("\n", 1)[1]
    # same figures under another bank's header, different spacing: a near duplicate
    header = splits["test"].at[0, "report_text"].split("\n", 1)[0]
    splits["test"].at[0, "report_text"] = header + "\n" + copied.replace(", ", ",  ")
    with pytest.raises(DataContractError, match="reports_across_splits"):
        validate_splits(splits, ContractLimits())


def test_token_bounds_and_truncation_rate(tokenised_splits) -> None:
    splits = _splits(tokenised_splits)
    splits["validation"]["truncated"] = True
    with pytest.raises(DataContractError, match=r"expect_column_mean_to_be_between on validation.truncated_rate"):
        validate_splits(splits, ContractLimits())
    with pytest.raises(DataContractError, match=r"expect_column_values_to_be_between on train.n_tokens"):
        validate_splits(_splits(tokenised_splits), ContractLimits(max_tokens=300))


def test_violation_class_missing_from_test_is_named(tokenised_splits) -> None:
    splits = _splits(tokenised_splits)
    test = splits["test"]
    splits["test"] = test[[("NSFR" not in v) for v in test["violations"]]].reset_index(drop=True)
    with pytest.raises(DataContractError, match=r"test_codes.code: missing \[[^]]*'NSFR'"):
        validate_splits(splits, ContractLimits())


def test_empty_wrong_encoding_bad_json_and_unknown_format(raw: pd.DataFrame, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_raw(empty)
    latin = tmp_path / "latin.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in raw.head(3).to_dict(orient="records")]
    lines[1] = lines[1].replace(raw.at[1, "bank_name"], "Crédit Bank")
    latin.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.jsonl: not UTF-8 \(undecodable byte 0xe9 at line 2"):
        load_raw(latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], lines[2], '{"id": "x", ']))
    with pytest.raises(DataError, match="broken.jsonl: line 3 is not valid JSON"):
        load_raw(broken)
    with pytest.raises(DataError, match="no such file"):
        load_raw(tmp_path / "absent.parquet")
    (tmp_path / "raw.csv").write_text("id\n1\n")
    with pytest.raises(DataError, match="unsupported format '.csv'"):
        load_raw(tmp_path / "raw.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_raw(tmp_path / "bad.parquet")


def test_failed_contract_writes_no_dataset(raw: pd.DataFrame, tokenizer, tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="train.n_tokens") as err:
        prepare_dataset(raw=raw, tokenizer=tokenizer, out_dir=tmp_path, seed=1, max_seq_len=1024,
                        limits=ContractLimits(max_tokens=300))
    assert not (tmp_path / "dataset").exists()
    assert err.value.report_markdown.startswith("# Data contract `splits_contract`: FAILED")


def test_train_only_rows_stay_in_train_and_validation_keeps_the_natural_mix(tmp_path: Path) -> None:
    from data_contracts.prepare import held_out_families, split_by_bank

    df = generate_dataset(120, seed=8, out_dir=tmp_path, n_train_balanced=64)
    splits = split_by_bank(df, seed=8, fractions=(0.5, 0.25, 0.25))
    pool = df[df[TRAIN_ONLY]]
    held = held_out_families(df, 8)
    for name in ("validation", "test"):
        assert not splits[name][TRAIN_ONLY].any()
    kept = pool[~pool["template_family"].isin(held)]
    assert set(kept["id"]) <= set(splits["train"]["id"])  # the pool is training data...
    assert not set(pool[pool["template_family"].isin(held)]["id"]) & set(splits["train"]["id"])  # ...minus held-out wording
    natural_rows = sum(len(splits[n][~splits[n][TRAIN_ONLY]]) for n in splits)
    assert natural_rows == 120 and len(splits["test"]) >= 0.25 * 120  # fractions count the natural rows only


def test_a_named_pipe_is_refused_not_read(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "raw.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_raw(fifo)
