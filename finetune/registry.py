"""A folder-based model registry: immutable versions and an atomically switched production pointer.

Layout::

    <registry>/versions/v0001-<hash8>/   a promoted model: the model folder (weights, config, tokenizer),
                                          card.json, MODEL_CARD.md and extras/ (reports, metrics files)
    <registry>/versions/.tmp-*/           a promotion in progress (never listed; removed by the next promotion)
    <registry>/production                 JSON pointer {"version": ..., "updated_at": ...}, replaced atomically
    <registry>/history.jsonl              one line per pointer switch: version, previous, time, user, reason
    <registry>/.lock                      serialises promotions
    <registry>/shadow, shadow.jsonl       a candidate run beside production before it replaces it (finetune.shadow)

A version is built in a temporary folder, fsynced, verified to load, and only then renamed into place (rename is
atomic on one filesystem), so a crash leaves either no new version or a complete one. The pointer is written to a
temporary file and ``os.replace``d over the old one, so readers see the old or the new production, never a mix.
Promoting a model whose content is already registered reuses that version (a retried promotion after a crash
between rename and pointer switch does not duplicate it).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from finetune.shadow import end_shadow, shadow_pointer, start_shadow
from foundation.errors import RegistryError
from foundation.hashing import hash_path, short
from foundation.paths import read_jsonl, write_json_atomic

VERSIONS = "versions"
POINTER = "production"
HISTORY = "history.jsonl"
CARD_JSON = "card.json"
CARD_MD = "MODEL_CARD.md"
EXTRAS = "extras"
_TMP_PREFIX = ".tmp-"
_VERSION = re.compile(r"^v(\d{4,})-[0-9a-f]{8}$")
# Files the registry adds to a version; excluded when hashing the model content.
_REGISTRY_FILES = frozenset({CARD_JSON, CARD_MD, EXTRAS})


def _copy_file(src: Path, dst: Path) -> None:
    """Copy one file and fsync it, so a renamed version never holds data still in the page cache only."""
    shutil.copyfile(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def _locked(registry_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the registry (two promotions never pick the same version number)."""
    registry_dir.mkdir(parents=True, exist_ok=True)
    with open(registry_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _version_number(name: str) -> int:
    match = _VERSION.match(name)
    if match is None:
        raise RegistryError(f"{name!r} is not a version name (expected like 'v0001-1a2b3c4d')")
    return int(match.group(1))


def list_versions(registry_dir: Path) -> list[str]:
    """Return the complete versions, oldest first (temporary folders of unfinished promotions are ignored)."""
    versions = Path(registry_dir) / VERSIONS
    if not versions.is_dir():
        return []
    names = [p.name for p in versions.iterdir() if p.is_dir() and _VERSION.match(p.name)]
    return sorted(names, key=_version_number)


def read_card(registry_dir: Path, version: str) -> dict[str, Any]:
    """Return a version's card.json."""
    path = resolve_model(registry_dir, version) / CARD_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RegistryError(f"{path} is unreadable ({e}): the version folder was altered after promotion") from e


def production_version(registry_dir: Path) -> str | None:
    """Return the version the production pointer names, or None when nothing was promoted yet."""
    pointer = Path(registry_dir) / POINTER
    if pointer.is_symlink() and not pointer.exists():
        raise RegistryError(f"{pointer} is a symbolic link to {os.readlink(pointer)!r}, which does not exist (or "
                            "loops); remove it and set production again: finetune registry promote VERSION")
    if not pointer.exists():
        return None
    try:
        version = json.loads(pointer.read_text())["version"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RegistryError(
            f"{pointer} is not a valid production pointer ({e}); set it again: finetune registry promote VERSION"
        ) from e
    if version not in list_versions(registry_dir):
        raise RegistryError(
            f"{pointer} names version {version!r}, which is not in {Path(registry_dir) / VERSIONS}; "
            "restore that folder or point production at an existing version: finetune registry promote VERSION"
        )
    return version


def resolve_model(registry_dir: Path, ref: str) -> Path:
    """Return the folder of ``ref``: ``"production"`` or a version name such as ``v0003-1a2b3c4d``."""
    registry_dir = Path(registry_dir)
    if ref == POINTER:
        version = production_version(registry_dir)
        if version is None:
            raise RegistryError(f"no production model in {registry_dir}: nothing has been promoted yet")
        return registry_dir / VERSIONS / version
    versions = list_versions(registry_dir)
    if ref not in versions:
        raise RegistryError(
            f"version {ref!r} is not in the registry {registry_dir}; known versions: {versions or 'none'}"
        )
    return registry_dir / VERSIONS / ref


def set_production(registry_dir: Path, version: str, *, reason: str = "", user: str | None = None) -> None:
    """Point production at an existing version atomically (also the way to roll back); the switch is appended to
    the history with its time, user (default: the login name) and reason."""
    registry_dir = Path(registry_dir)
    resolve_model(registry_dir, version)
    try:
        previous = production_version(registry_dir)
    except RegistryError:
        previous = None  # a broken pointer is being repaired
    now = datetime.now(timezone.utc).isoformat()
    write_json_atomic(registry_dir / POINTER, {"version": version, "updated_at": now, "previous": previous})
    _fsync_dir(registry_dir)
    entry = {"version": version, "previous": previous, "at": now, "user": user or login_name(), "reason": reason}
    with open(registry_dir / HISTORY, "a") as f:
        f.write(json.dumps(entry) + "\n")


def login_name() -> str:
    """Who is switching: the login name, else the user id."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def read_history(registry_dir: Path) -> list[dict[str, Any]]:
    """Every production switch, oldest first (lines that do not parse are reported, not skipped)."""
    path = Path(registry_dir) / HISTORY
    if not path.is_file():
        return []
    return read_jsonl(path, error=RegistryError, hint="the registry's history was altered; repair or remove that line")


def verify_version(registry_dir: Path, version: str) -> dict[str, Any]:
    """The version's card when the version is intact: its card readable and its model content hashing to the card's
    ``model_sha256``, so a folder altered or damaged after promotion is never switched to. Raises RegistryError."""
    folder = resolve_model(registry_dir, version)
    card = read_card(registry_dir, version)
    actual = hash_path(folder, exclude=_REGISTRY_FILES | frozenset(p.name for p in folder.rglob(".*")))
    if actual != card.get("model_sha256"):
        raise RegistryError(f"version {version} is damaged: its model content hashes to {short(actual, 12)}, its card "
                            f"says {short(str(card.get('model_sha256')), 12)} (a file was changed or removed after "
                            "promotion)")
    return card


def switch_production(registry_dir: Path, version: str, *, reason: str, user: str | None = None) -> str | None:
    """Make an intact version production by hand (``finetune registry promote``); return the version it replaced.

    Refused (RegistryError, nothing switched) when the version is missing, damaged or already production, or when no
    reason is given: the history must say why production changed."""
    if not reason.strip():
        raise RegistryError("give a reason for the switch (--reason): the history records who switched and why")
    verify_version(registry_dir, version)
    try:
        current = production_version(registry_dir)
    except RegistryError:
        current = None  # a broken pointer is what this switch repairs
    if current == version:
        raise RegistryError(f"version {version} is already production; nothing switched")
    set_production(registry_dir, version, reason=reason, user=user)
    pointer = shadow_pointer(registry_dir)
    if pointer is not None and pointer["version"] == version:
        end_shadow(registry_dir, why=f"promoted to production: {reason}")
    return current


def rollback_target(registry_dir: Path) -> str:
    """The version production had before the current one came in (from the history). Raises RegistryError when
    nothing is in production or production never had another version."""
    current = production_version(registry_dir)
    if current is None:
        raise RegistryError(f"no production model in {registry_dir}: nothing to roll back")
    for entry in reversed(read_history(registry_dir)):
        if entry.get("version") == current and entry.get("previous") not in (None, current):
            return str(entry["previous"])
    raise RegistryError(f"production {current} has no earlier version to roll back to (see the history)")


def version_rows(registry_dir: Path) -> list[dict[str, Any]]:
    """One row per version, oldest first: when promoted, the gate's headline figures, the data and code it was built
    from, and whether (since when) it is production."""
    registry_dir = Path(registry_dir)
    current = production_version(registry_dir)
    since = next((e.get("at") for e in reversed(read_history(registry_dir)) if e.get("version") == current), None)
    shadow = shadow_pointer(registry_dir) or {}
    rows = []
    for version in list_versions(registry_dir):
        try:
            card = read_card(registry_dir, version)
        except RegistryError as e:
            rows.append({"version": version, "problem": str(e)})
            continue
        metrics = card.get("metrics") or {}
        rows.append({
            "version": version,
            "production": f"since {since}" if version == current else
                          (f"shadow since {shadow.get('since')}" if version == shadow.get("version") else ""),
            "promoted": card.get("created_at"),
            "f1": metrics.get("f1_micro"),
            "rouge_l": metrics.get("rouge_l"),
            "real_false_violations": metrics.get("real_false_violations"),
            "data_hash": short(str(card.get("data_hash")), 12) if card.get("data_hash") else None,
            "git_commit": (card.get("code_version") or {}).get("git_commit"),
        })
    return rows


def code_version() -> dict[str, Any]:
    """Return the git commit of this code and whether the work tree had uncommitted changes (None if not a repo)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"git_commit": commit, "dirty": bool(status) if status is not None else None}


def _render_card(card: dict[str, Any]) -> str:
    """Render MODEL_CARD.md from the card (scalar metrics as a table, the rest as JSON)."""
    metrics = card.get("metrics") or {}
    scalar = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))}
    lines = [
        f"# Model card: {card['version']}",
        "",
        f"- promoted: {card['created_at']}",
        f"- model content sha256: `{card['model_sha256']}`",
        f"- source folder: `{card['source_model_dir']}`",
        f"- code version: `{card['code_version'].get('git_commit')}` (dirty: {card['code_version'].get('dirty')})",
    ]
    if "data_hash" in card:
        lines.append(f"- data hash: `{card['data_hash']}`")
    if "decision" in card:
        lines += ["", "## Gate decision", "", "```json", json.dumps(card["decision"], indent=2, default=str), "```"]
    if scalar:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalar.items()]
    rest = {k: v for k, v in card.items() if k not in {"metrics", "decision"}}
    rest["metrics"] = {k: v for k, v in metrics.items() if k not in scalar}
    lines += ["", "## Full card", "", "```json", json.dumps(rest, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue  # locks, temp files and hidden markers are not part of the model
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            _copy_file(path, dst / rel)


def _verify_loadable(folder: Path) -> None:
    """Load the staged version as a consumer would and check it is a usable model.

    Checks: AutoModelForCausalLM and AutoTokenizer load it; no weight is empty (the ZeRO-3 failed-save trap);
    the input embedding has the config's shape; a forward pass gives finite logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def refuse(problem: str) -> RegistryError:
        return RegistryError(f"the model to promote {problem}; nothing was promoted")

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise refuse(f"does not load with AutoModelForCausalLM/AutoTokenizer ({e}); promote a complete Hugging "
                     "Face folder (config, safetensors, tokenizer)") from e
    empty = [name for name, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise refuse(f"has weights with no elements (a failed ZeRO-3 save?): {empty[:5]}")
    embed = model.get_input_embeddings().weight
    if tuple(embed.shape) != (model.config.vocab_size, model.config.hidden_size):
        raise refuse(f"has an input embedding of shape {tuple(embed.shape)} that does not match its config")
    ids = tokenizer("The bank reports a CET1 ratio of 12%.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        raise refuse("produces non-finite logits")


def _find_by_hash(registry_dir: Path, model_sha256: str) -> str | None:
    for version in list_versions(registry_dir):
        card = Path(registry_dir) / VERSIONS / version / CARD_JSON
        try:
            if json.loads(card.read_text()).get("model_sha256") == model_sha256:
                return version
        except (OSError, json.JSONDecodeError):
            continue
    return None


def _remove_stale_temps(versions: Path) -> None:
    """Remove folders of promotions that died before their rename (safe: the registry lock is held)."""
    for path in versions.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def promote(
    registry_dir: Path,
    model_dir: Path,
    *,
    card: dict[str, Any],
    files: Mapping[str, Path] | None = None,
    reason: str = "promoted",
    shadow: bool = False,
    shadow_min_filings: int | None = None,
) -> str:
    """Register ``model_dir`` as a new immutable version and make it production; return the version name.

    A model whose content is already registered is not copied again: production points at that version, whose
    card is kept as it was. With ``shadow`` and a model in production, the version becomes the registry's shadow
    instead (``finetune.shadow``: answered beside production by ``analyze``, production after
    ``shadow_min_filings`` filings with an agreement not lower than production's, or by hand).

    Args:
        registry_dir: the registry folder (created if missing).
        model_dir: a Hugging Face model folder with its tokenizer (e.g. the consolidated full fine-tune).
        card: what the model card records: ``metrics``, ``config``, ``data_hash``, ``decision`` (gate) and any
            other JSON-able facts. The registry adds ``version``, ``model_sha256``, ``created_at``,
            ``source_model_dir`` and ``code_version``.
        files: extra files to keep with the version, by name (e.g. ``{"report.md": path}``), under ``extras/``.
        reason: why production switches, for the history (the gate: its decision).
        shadow, shadow_min_filings: run the version beside production first (see above).

    Raises:
        RegistryError: the model folder is missing or does not load, an extra file is missing or badly named.
    """
    registry_dir, model_dir = Path(registry_dir), Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise RegistryError(f"{model_dir} is not a Hugging Face model folder (no config.json); nothing was promoted")
    extras = dict(files or {})
    for name, src in extras.items():
        if Path(name).is_absolute() or ".." in Path(name).parts or not name:
            raise RegistryError(f"extra file name {name!r} must be a plain relative name")
        if not Path(src).is_file():
            raise RegistryError(f"extra file {name!r} -> {src} does not exist; nothing was promoted")
    versions = registry_dir / VERSIONS
    with _locked(registry_dir):
        versions.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(versions)
        # Hash exactly what _copy_tree copies (hidden files and folders are skipped by both).
        model_sha256 = hash_path(model_dir, exclude=frozenset(p.name for p in model_dir.rglob(".*")))
        existing = _find_by_hash(registry_dir, model_sha256)
        if existing is not None:
            _go_live(registry_dir, existing, reason=reason, shadow=shadow, shadow_min_filings=shadow_min_filings)
            return existing
        numbers = [_version_number(v) for v in list_versions(registry_dir)]
        version = f"v{max(numbers, default=0) + 1:04d}-{short(model_sha256, 8)}"
        staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=versions))
        try:
            _copy_tree(model_dir, staging)
            for name, src in extras.items():
                (staging / EXTRAS / name).parent.mkdir(parents=True, exist_ok=True)
                _copy_file(Path(src), staging / EXTRAS / name)
            full_card = {
                **card,
                "version": version,
                "model_sha256": model_sha256,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "source_model_dir": str(model_dir.resolve()),
                "code_version": card.get("code_version") or code_version(),
                "extras": sorted(extras),
            }
            _write_file_synced(staging / CARD_JSON, json.dumps(full_card, indent=2, sort_keys=True, default=str))
            _write_file_synced(staging / CARD_MD, _render_card(full_card))
            _verify_loadable(staging)
            for folder in [p for p in staging.rglob("*") if p.is_dir()] + [staging]:
                _fsync_dir(folder)
            staging.chmod(0o755)
            os.rename(staging, versions / version)
            _fsync_dir(versions)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _go_live(registry_dir, version, reason=reason, shadow=shadow, shadow_min_filings=shadow_min_filings)
    return version


def _go_live(registry_dir: Path, version: str, *, reason: str, shadow: bool, shadow_min_filings: int | None) -> None:
    """Make a registered version production, or production's shadow when ``shadow`` and another version is in
    production; a version already production switches nothing (no history line)."""
    try:
        current = production_version(registry_dir)
    except RegistryError:
        current = None  # a broken pointer: switching repairs it
    if current == version:
        return
    if shadow and current is not None:
        if (shadow_pointer(registry_dir) or {}).get("version") != version:
            start_shadow(registry_dir, version, production=current, min_filings=shadow_min_filings, reason=reason)
        return
    set_production(registry_dir, version, reason=reason)
