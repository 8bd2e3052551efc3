"""Shadow A/B before a switch: a newly promoted candidate first runs beside production, then replaces it.

With ``gate.shadow`` on, a candidate that passes the gate while a model is in production is registered as a version
and becomes the registry's *shadow* instead of production. ``finetune analyze`` (and the ``analyze`` flow) then
answers every filing with both models: production's answers are the ones used (status, review), the shadow's are
recorded beside them. The shadow becomes production by hand (``finetune registry promote VERSION``) or by the rule
its gate set (``gate.shadow_min_filings``): after that many filings, when its agreement with the rule engine is not
lower than production's on the same filings.

Layout (beside the registry's own files)::

    <registry>/shadow         JSON pointer {"version", "since", "min_filings", "production"}, replaced atomically
    <registry>/shadow.jsonl   one line per event: the start, each filing answered by both, the end and why
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from foundation.errors import RegistryError
from foundation.paths import read_jsonl, write_json_atomic

SHADOW = "shadow"
SHADOW_LOG = "shadow.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _append(registry_dir: Path, entries: Iterable[dict[str, Any]]) -> None:
    with open(Path(registry_dir) / SHADOW_LOG, "a") as f:
        for entry in entries:
            f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def shadow_pointer(registry_dir: Path) -> dict[str, Any] | None:
    """The shadow pointer (version, since, min_filings, production it runs beside), or None when there is none."""
    path = Path(registry_dir) / SHADOW
    if not path.exists():
        return None
    try:
        pointer = json.loads(path.read_text())
        str(pointer["version"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RegistryError(f"{path} is not a valid shadow pointer ({e}); remove it or promote a version again") from e
    return pointer


def start_shadow(registry_dir: Path, version: str, *, production: str, min_filings: int | None,
                 reason: str) -> None:
    """Make ``version`` the shadow of ``production`` (atomically replacing any earlier shadow) and log the start."""
    registry_dir = Path(registry_dir)
    pointer = {"version": version, "since": _now(), "min_filings": min_filings, "production": production}
    write_json_atomic(registry_dir / SHADOW, pointer)
    _append(registry_dir, [{"event": "start", "at": pointer["since"], "version": version, "production": production,
                            "min_filings": min_filings, "reason": reason}])


def end_shadow(registry_dir: Path, *, why: str) -> str | None:
    """Remove the shadow pointer (its version stays in the registry) and log why; return the version it named."""
    pointer = shadow_pointer(registry_dir)
    if pointer is None:
        return None
    (Path(registry_dir) / SHADOW).unlink(missing_ok=True)
    _append(registry_dir, [{"event": "end", "at": _now(), "version": pointer["version"], "why": why}])
    return str(pointer["version"])


def agrees(model_violations: Iterable[str], rule_violations: Iterable[str]) -> bool:
    """Whether a model's answer names exactly the violations the rule engine finds."""
    return set(model_violations) == set(rule_violations)


def record_filings(registry_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Log filings answered by production and the shadow: each row ``file``, ``filing_sha256``,
    ``production_agrees``, ``shadow_agrees`` (the shadow's version is the pointer's)."""
    pointer = shadow_pointer(registry_dir)
    if pointer is None or not rows:
        return
    at = _now()
    _append(registry_dir, [{"event": "filing", "at": at, "version": pointer["version"],
                            "production": pointer["production"], **row} for row in rows])


def standing(registry_dir: Path) -> dict[str, Any] | None:
    """The shadow's record since it started: filings answered by both, each model's agreement with the rule engine,
    and whether its gate's rule (``min_filings``, agreement not lower than production's) says it may replace
    production now (``ready``, with ``why``). None when there is no shadow."""
    pointer = shadow_pointer(registry_dir)
    if pointer is None:
        return None
    log = Path(registry_dir) / SHADOW_LOG
    entries = read_jsonl(log, error=RegistryError, hint="the shadow log was altered") if log.is_file() else []
    mine = [e for e in entries if e.get("event") == "filing" and e.get("version") == pointer["version"]
            and str(e.get("at", "")) >= str(pointer["since"])]
    n = len(mine)
    prod = sum(bool(e.get("production_agrees")) for e in mine) / n if n else None
    shadow = sum(bool(e.get("shadow_agrees")) for e in mine) / n if n else None
    need = pointer.get("min_filings")
    if need is None:
        ready, why = False, "no automatic rule (gate.shadow_min_filings unset): promote it by hand"
    elif n < need:
        ready, why = False, f"{n} of {need} filings answered beside production"
    elif shadow < prod:
        ready, why = False, f"agreement with the rule engine {shadow:.0%} < production's {prod:.0%} on {n} filings"
    else:
        ready, why = True, f"{n} filings, agreement with the rule engine {shadow:.0%} >= production's {prod:.0%}"
    return {**pointer, "filings": n, "production_agreement": prod, "shadow_agreement": shadow, "ready": ready,
            "why": why}
