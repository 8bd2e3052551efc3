"""Great Expectations contracts for the raw table and the tokenised splits (ephemeral context, no network).

A failed contract raises ``DataContractError``: its message and ``failures`` name each failed expectation, how many
rows failed and sample offending row ids; ``report_markdown`` holds the same as a markdown report for an artifact.
Checks that must hold before Great Expectations can run (columns present, text columns really text) raise the same
error without calling it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from foundation.errors import DataContractError
from regulator.drills import DRILL_KINDS
from regulator.generator import RAW_COLUMNS
from regulator.rules import CASE_KINDS, RULE_CODES

SAMPLE_ROWS = 5
_TEXT_COLUMNS = ("id", "bank_id", "bank_name", "jurisdiction", "report_date", "template_family", "case_kind",
                 "report_text", "target", "directive")


@dataclass(frozen=True)
class ContractLimits:
    """Bounds the contracts enforce; the lead maps run-config values onto these fields."""

    min_report_chars: int = 100
    max_report_chars: int = 2_000
    min_target_chars: int = 40
    max_target_chars: int = 3_000
    min_tokens: int = 16
    max_tokens: int = 2_048
    max_truncation_rate: float = 0.02
    required_case_kinds: tuple[str, ...] = CASE_KINDS
    known_violation_codes: tuple[str, ...] = RULE_CODES
    coverage_splits: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class ContractResult:
    """A passed contract: which suite, how many expectations and rows were checked."""

    suite: str
    n_expectations: int
    n_rows: int
    report_markdown: str


@dataclass
class _Suite:
    """Expectations to run on several small frames (GX validates one batch per frame)."""

    name: str
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    expectations: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, frame_name: str, frame: pd.DataFrame, expectation: Any) -> None:
        self.frames.setdefault(frame_name, frame)
        self.expectations.setdefault(frame_name, []).append(expectation)


def validate_raw(df: pd.DataFrame, limits: ContractLimits = ContractLimits()) -> ContractResult:
    """Validate the raw example table: columns, non-null, unique ids, known codes and kinds, text lengths."""
    import great_expectations as gx

    _require_columns(df, RAW_COLUMNS, "raw table")
    _require_text(df, "raw table")
    E = gx.expectations
    view = _scalar_view(df)
    suite = _Suite("raw_contract")
    for col in RAW_COLUMNS:
        if col != "source_file":  # empty for synthetic rows without a file
            column = "violations_joined" if col == "violations" else col
            suite.add("raw", view, E.ExpectColumnValuesToNotBeNull(column=column))
    suite.add("raw", view, E.ExpectColumnValuesToBeUnique(column="id"))
    suite.add("raw", view, E.ExpectColumnValuesToBeInSet(column="jurisdiction", value_set=["EU", "US"]))
    suite.add("raw", view, E.ExpectColumnValuesToBeInSet(column="case_kind", value_set=[*CASE_KINDS, *DRILL_KINDS]))
    suite.add("raw", view, E.ExpectColumnDistinctValuesToContainSet(
        column="case_kind", value_set=list(limits.required_case_kinds)))
    suite.add("raw", view, E.ExpectColumnValuesToMatchRegex(column="report_date", regex=r"^\d{4}-\d{2}-\d{2}$"))
    suite.add("raw", view, E.ExpectColumnValuesToMatchRegex(column="violations_joined", regex=_codes_regex(limits)))
    suite.add("raw", view, E.ExpectColumnValuesToMatchRegex(column="target", regex=r"^ANALYSIS:\n"))
    suite.add("raw", view, E.ExpectColumnValueLengthsToBeBetween(
        column="report_text", min_value=limits.min_report_chars, max_value=limits.max_report_chars))
    suite.add("raw", view, E.ExpectColumnValueLengthsToBeBetween(
        column="target", min_value=limits.min_target_chars, max_value=limits.max_target_chars))
    return _run(suite, n_rows=len(df))


def validate_splits(splits: dict[str, pd.DataFrame], limits: ContractLimits = ContractLimits()) -> ContractResult:
    """Validate tokenised splits: token bounds, truncation rate, code coverage, no bank or near-duplicate leakage."""
    import great_expectations as gx

    E = gx.expectations
    suite = _Suite("splits_contract")
    for name, df in splits.items():
        _require_columns(df, (*RAW_COLUMNS, "n_tokens", "truncated"), f"split {name!r}")
        frame = _scalar_view(df)
        frame["truncated_rate"] = df["truncated"].astype(float).to_numpy()
        suite.add(name, frame, E.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=limits.min_tokens, max_value=limits.max_tokens))
        suite.add(name, frame, E.ExpectColumnMeanToBeBetween(
            column="truncated_rate", min_value=0.0, max_value=limits.max_truncation_rate))
    present = sorted({c for df in splits.values() for codes in df["violations"] for c in codes})
    for name in limits.coverage_splits:
        if name in splits and present:
            codes = pd.DataFrame({"code": [c for codes in splits[name]["violations"] for c in codes] or [""]})
            expectation = E.ExpectColumnDistinctValuesToContainSet(column="code", value_set=present)
            suite.add(f"{name}_codes", codes, expectation)
    pairs = pd.concat(
        [pd.DataFrame({"split": name, "bank_id": df["bank_id"].astype(str).to_numpy()}) for name, df in splits.items()]
    ).drop_duplicates()
    suite.add("banks_across_splits", pairs.reset_index(drop=True), E.ExpectColumnValuesToBeUnique(column="bank_id"))
    texts = pd.concat(
        [
            pd.DataFrame({"split": name, "id": df["id"].astype(str).to_numpy(),
                          "report_hash": [normalised_report_hash(t) for t in df["report_text"]]})
            for name, df in splits.items()
        ]
    ).drop_duplicates(subset=["split", "report_hash"])
    suite.add("reports_across_splits", texts.reset_index(drop=True),
              E.ExpectColumnValuesToBeUnique(column="report_hash"))
    return _run(suite, n_rows=sum(len(df) for df in splits.values()))


def normalised_report_hash(text: str) -> str:
    """Hash of a report body with identity and formatting removed, so copies under another name/date collide.

    The header line (entity, date) is dropped, case and whitespace are folded and number formatting is unified.
    """
    body = text.split("\n", 1)[1] if "\n" in text else text
    body = re.sub(r"\s+", " ", body.casefold()).strip()
    body = re.sub(r"(?<=\d),(?=\d{3})", "", body)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _codes_regex(limits: ContractLimits) -> str:
    code = "|".join(re.escape(c) for c in limits.known_violation_codes)
    return rf"^(?:(?:{code})(?:, (?:{code}))*)?$"


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        failure = {"expectation": "required_columns", "column": ", ".join(missing), "unexpected_count": len(df),
                   "element_count": len(df), "sample": []}
        raise DataContractError(
            f"{what} is missing required column(s) {missing}; present: {sorted(map(str, df.columns))}. "
            "Regenerate the data or map the columns before preparing it.",
            failures=[failure],
            report_markdown=f"# Data contract failed\n\n{what}: missing column(s) {', '.join(missing)}\n",
        )
    bad = df.loc[~df["violations"].map(_is_code_list), "id"].astype(str).tolist()
    if bad:
        raise DataContractError(
            f"{what}: column 'violations' must hold lists of codes; {len(bad)} rows do not, e.g. ids {bad[:5]}",
            failures=[{"expectation": "violations_are_lists", "column": "violations", "unexpected_count": len(bad),
                       "element_count": len(df), "sample": bad[:SAMPLE_ROWS]}],
            report_markdown=f"# Data contract failed\n\n{what}: {len(bad)} rows with non-list violations\n",
        )


def _is_code_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1)


def _require_text(df: pd.DataFrame, what: str) -> None:
    """Text columns must be str without undecoded bytes or replacement characters (a wrong-encoding symptom)."""
    failures = []
    for col in _TEXT_COLUMNS:
        values = df[col]
        bad = values.map(lambda v: v is not None and v == v and (not isinstance(v, str) or "\ufffd" in v
                                                                  or _has_surrogates(v)))
        if bad.any():
            ids = df.loc[bad, "id"].astype(str).tolist()
            failures.append({"expectation": "text_is_clean_unicode", "column": col, "unexpected_count": len(ids),
                             "element_count": len(df), "sample": ids[:SAMPLE_ROWS]})
    if failures:
        lines = [f"  - {f['column']}: {f['unexpected_count']} rows, e.g. ids {f['sample']}" for f in failures]
        raise DataContractError(
            f"{what}: text columns hold non-text or badly decoded values (U+FFFD or surrogates: the source was "
            "probably not UTF-8); re-export it as UTF-8:\n" + "\n".join(lines),
            failures=failures,
            report_markdown="# Data contract failed\n\n" + "\n".join(lines) + "\n",
        )


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _scalar_view(df: pd.DataFrame) -> pd.DataFrame:
    """Columns GX can check as scalars: list-valued violations joined, text as plain object columns."""
    view = pd.DataFrame({c: df[c].astype(object).to_numpy() for c in df.columns if c != "violations"})
    view["violations_joined"] = [", ".join(map(str, v)) for v in df["violations"]]
    return view


def _run(suite: _Suite, *, n_rows: int) -> ContractResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory only: no gx/ folder, no docs site, no analytics calls, no progress bars in the logs.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    source = context.data_sources.add_pandas(suite.name)
    failures: list[dict] = []
    total = 0
    for frame_name, expectations in suite.expectations.items():
        frame = suite.frames[frame_name]
        batch = source.add_dataframe_asset(name=frame_name).add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame}
        )
        gx_suite = gx.ExpectationSuite(name=f"{suite.name}.{frame_name}", expectations=expectations)
        index_cols = [c for c in ("id", "bank_id") if c in frame.columns][:1]
        result_format = {"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_ROWS}
        if index_cols:
            result_format["unexpected_index_column_names"] = index_cols
        outcome = batch.validate(gx_suite, result_format=result_format)
        total += len(expectations)
        failures.extend(_failure(frame_name, r, len(frame)) for r in outcome.results if not r.success)
    markdown = _markdown(suite.name, total, n_rows, failures)
    if failures:
        lines = [f"  - {_describe(f)}" for f in failures]
        raise DataContractError(
            f"data contract {suite.name!r} failed: {len(failures)} of {total} expectations on {n_rows} rows:\n"
            + "\n".join(lines),
            failures=failures,
            report_markdown=markdown,
        )
    return ContractResult(suite.name, total, n_rows, markdown)


def _failure(frame_name: str, result: Any, n_rows: int) -> dict:
    cfg = result.expectation_config
    res = result.result or {}
    sample = res.get("unexpected_index_list") or res.get("partial_unexpected_list") or []
    sample = [s.get("id", s.get("bank_id", s)) if isinstance(s, dict) else s for s in sample]
    failure = {
        "expectation": cfg.type,
        "frame": frame_name,
        "column": cfg.kwargs.get("column", ""),
        "kwargs": {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")},
        "unexpected_count": int(res.get("unexpected_count") or 0),
        "element_count": int(res.get("element_count") or n_rows),
        "sample": [_plain(s) for s in sample[:SAMPLE_ROWS]],
        "observed_value": _plain(res.get("observed_value")),
    }
    if res.get("partial_missing_list"):
        failure["missing"] = [_plain(m) for m in res["partial_missing_list"]]
    if result.exception_info and result.exception_info.get("raised_exception"):
        failure["error"] = result.exception_info.get("exception_message")
    return failure


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _describe(f: dict) -> str:
    where = f"{f['frame']}.{f['column']}" if f["column"] else f["frame"]
    if f.get("missing"):
        return f"{f['expectation']} on {where}: missing {f['missing']}"
    if f["unexpected_count"]:
        return (f"{f['expectation']} on {where}: {f['unexpected_count']} of {f['element_count']} rows; "
                f"sample {f['sample']}")
    extra = f"; error {f['error']}" if f.get("error") else ""
    return f"{f['expectation']} on {where}: observed {f['observed_value']} (expected {f['kwargs']}){extra}"


def _markdown(name: str, total: int, n_rows: int, failures: list[dict]) -> str:
    status = "passed" if not failures else f"FAILED ({len(failures)} of {total} expectations)"
    lines = [f"# Data contract `{name}`: {status}", "", f"{total} expectations on {n_rows} rows.", ""]
    if failures:
        lines += ["| expectation | where | failed rows | sample |", "|---|---|---|---|"]
        for f in failures:
            where = f"{f['frame']}.{f['column']}" if f["column"] else f["frame"]
            detail = f.get("missing") or f["sample"] or f["observed_value"]
            lines.append(f"| {f['expectation']} | {where} | {f['unexpected_count']} | {detail} |")
    return "\n".join(lines) + "\n"
