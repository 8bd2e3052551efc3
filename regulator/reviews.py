"""The review store: supervisors' decisions on filings the analysis sent to review, kept as labelled examples.

Layout (one folder, default ``<project>/reviews``)::

    <store>/decisions/<filing sha256>.json   the latest decision on a filing: reviewer, time, the violations the
                                             supervisor confirms, the directive, the rule engine's and the model's
                                             violations, whether the decision contradicts the rule engine
    <store>/filings/<filing sha256><suffix>  the filing as reviewed (the drop folder may be emptied later)

A decision that agrees with the rule engine becomes a training example (the filing labelled by the rule engine,
train only). One that contradicts it is kept and flagged, and never trained on silently: the rule engine labels every
example, so a contradiction is a case for the rule table's owners, not a label. Files are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundation.errors import DataError
from foundation.hashing import hash_file
from foundation.paths import write_bytes_atomic

DECISIONS = "decisions"
FILINGS = "filings"


@dataclass(frozen=True)
class Decision:
    """A supervisor's decision on one filing."""

    filing_sha256: str
    file: str
    reviewer: str
    violations: list[str]
    directive: str
    rule_violations: list[str]
    model_violations: list[str] | None
    note: str = ""
    reviewed_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def contradicts_rules(self) -> bool:
        """The supervisor's violations differ from the rule engine's."""
        return sorted(self.violations) != sorted(self.rule_violations)


def record_decision(store: Path, filing: Path, decision: Decision) -> Path:
    """Keep ``decision`` and a copy of the filing it is about; return the decision's file. A later decision on the
    same filing (same content) replaces the earlier one."""
    store, filing = Path(store), Path(filing)
    if not filing.is_file():
        raise DataError(f"{filing}: the reviewed filing is not a file (a member of a zip?); decision not stored")
    if hash_file(filing) != decision.filing_sha256:
        raise DataError(f"{filing} changed since it was analysed; decision not stored, analyse it again")
    copy = store / FILINGS / f"{decision.filing_sha256}{filing.suffix.lower()}"
    if not copy.is_file():
        write_bytes_atomic(copy, filing.read_bytes())
    path = store / DECISIONS / f"{decision.filing_sha256}.json"
    record = {**asdict(decision), "contradicts_rules": decision.contradicts_rules,
              "stored_filing": str(copy.relative_to(store))}
    write_bytes_atomic(path, json.dumps(record, indent=2).encode())
    return path


def read_decisions(store: Path) -> list[dict[str, Any]]:
    """Every decision in the store, by filing hash; an unreadable decision file is an error naming it."""
    folder = Path(store) / DECISIONS
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable review decision ({type(exc).__name__}: {exc})") from exc
    return out


def trainable(store: Path, exclude_sha256: frozenset[str] = frozenset()) -> tuple[list[Path], list[dict[str, Any]]]:
    """The stored filings whose decisions agree with the rule engine (to train on), and the decisions left out with
    why: contradicting the rule engine, filing missing, or a filing in ``exclude_sha256`` (the real filings that
    evaluate the model are never trained on)."""
    keep, left_out = [], []
    for d in read_decisions(store):
        copy = Path(store) / d.get("stored_filing", "")
        why = ("contradicts the rule engine: kept for the rule table's owners, not trained on"
               if d.get("contradicts_rules") else
               "the filing is in the real set that evaluates the model" if d["filing_sha256"] in exclude_sha256 else
               "its stored filing is missing" if not copy.is_file() else None)
        if why is None:
            keep.append(copy)
        else:
            left_out.append({**d, "left_out": why})
    return keep, left_out
