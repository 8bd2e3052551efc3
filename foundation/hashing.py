"""One hashing helper for the whole project: content hashes of files, folders and JSON-able values."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_json(value: Any) -> str:
    """Return the sha256 of ``value`` serialised as canonical JSON (sorted keys, no whitespace)."""
    return hash_bytes(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode())


def hash_file(path: Path) -> str:
    """Return the sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_path(path: Path, *, exclude: frozenset[str] = frozenset()) -> str:
    """Return a content hash of a file or of a folder tree (relative names + file hashes, in sorted order).

    Names in ``exclude`` (file or folder names at any depth) are skipped, e.g. a completion marker.
    """
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot hash {path}: no such file or folder")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part in exclude for part in rel.parts) or not p.is_file():
            continue
        h.update(str(rel.as_posix()).encode() + b"\0" + hash_file(p).encode() + b"\n")
    return h.hexdigest()


def short(digest: str, n: int = 12) -> str:
    """Return the first ``n`` characters of a hex digest, for folder names."""
    return digest[:n]
