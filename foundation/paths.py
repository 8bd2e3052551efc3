"""The one place that knows where things live: project home, model cache, run folders, stage output folders.

Layout under the project home (``FINETUNE_HOME``, default: the repository root)::

    .cache/models/<name>/            provisioned base models (safetensors + tokenizer), built once at setup
    .cache/stages/<stage>/<key>/     cached stage outputs, one folder per cache key, with a COMPLETE marker
    runs/<run-name>/                 one folder per flow run: config, manifests, report, links to stage outputs
    registry/                        promoted models (versions/ + the production pointer)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

COMPLETE_MARKER = "COMPLETE.json"


def project_home() -> Path:
    """Return the project home: ``$FINETUNE_HOME`` if set, else the repository root holding this package."""
    env = os.environ.get("FINETUNE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo
    return Path.home() / ".cache" / "finetune"


def code_root() -> Path:
    """The checkout holding the code and what ships with it (configs, fixtures): where relative input paths of a
    config are found, whatever ``FINETUNE_HOME`` moves the outputs to."""
    return Path(__file__).resolve().parents[1]


def resolve_input(path: str | Path) -> Path:
    """An input path of a config: absolute as given, relative to :func:`code_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else code_root() / path


def cache_dir() -> Path:
    """Return the cache root (models, stage outputs)."""
    return project_home() / ".cache"


def models_dir() -> Path:
    """Return the folder that holds provisioned base models (``$FINETUNE_MODEL_CACHE`` overrides it)."""
    env = os.environ.get("FINETUNE_MODEL_CACHE")
    return Path(env).expanduser().resolve() if env else cache_dir() / "models"


def stage_dir(stage: str, key: str) -> Path:
    """Return the output folder of ``stage`` for cache key ``key`` (named by the key, so a key maps to one place)."""
    return cache_dir() / "stages" / stage / key


def runs_dir() -> Path:
    """Return the folder holding one sub-folder per flow run."""
    return project_home() / "runs"


def new_run_dir(name: str | None = None) -> Path:
    """Create and return a fresh, unique run folder; two runs never share one."""
    runs = runs_dir()
    runs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    prefix = f"{stamp}-{name}-" if name else f"{stamp}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=runs))


def default_registry_dir() -> Path:
    """The project's model registry (promoted versions and the production pointer)."""
    return project_home() / "registry"


def reviews_dir(path: str | Path | None = None) -> Path:
    """The review store (supervisors' decisions): ``path`` absolute as given or relative to the project home, by
    default ``<project home>/reviews``, where the analyze flow keeps them."""
    if path is None:
        return project_home() / "reviews"
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_home() / path


def is_complete(folder: Path) -> bool:
    """Return True when ``folder`` holds a completion marker written by :func:`mark_complete`."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def read_marker(folder: Path) -> dict[str, Any]:
    """Return the content of a folder's completion marker."""
    return json.loads((Path(folder) / COMPLETE_MARKER).read_text())


def mark_complete(folder: Path, info: dict[str, Any]) -> None:
    """Write the completion marker last, atomically, so a half-written folder is never taken as done."""
    write_json_atomic(Path(folder) / COMPLETE_MARKER, info)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and ``os.replace``: readers see the old file or the
    new one, never a half-written one, and a failed write leaves no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_jsonl(path: Path, *, error: type[Exception], hint: str) -> list[Any]:
    """Every JSON value of a JSON-lines file, blank lines skipped; ``error`` naming the file, the line and ``hint``
    (what to do) on a line that does not parse."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise error(f"{path}:{number} is not valid JSON ({e}); {hint}") from e
    return rows


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to ``path`` atomically (``write_bytes_atomic``)."""
    write_bytes_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


@contextmanager
def building(final: Path, keep_if: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder to build into; on success move it to ``final``, on error remove it.

    An existing ``final`` is replaced (moved aside first, so ``final`` is never half-present), except when
    ``keep_if(final)`` holds: then a concurrent builder of the same content finished first and its folder is kept.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        _install(tmp, final, keep_if)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, final: Path, keep_if: Callable[[Path], bool] | None) -> None:
    """Move the built ``tmp`` to ``final`` (see :func:`building`)."""
    if keep_if is not None and keep_if(final):
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(final, old)
    except FileNotFoundError:
        old = None
    try:
        os.replace(tmp, final)
    except OSError:
        if keep_if is None or not keep_if(final):  # lost a race to another builder whose folder is not usable
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def record_stage(run_dir: Path, stage: str, manifest: dict[str, Any]) -> None:
    """Record a stage in a run folder: its manifest as ``stages/<stage>.json`` and a link to its output folder."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "stages" / f"{stage}.json", manifest)
    link = run_dir / stage
    if link.is_symlink() or link.exists():
        link.unlink()
    if manifest.get("out_dir"):
        link.symlink_to(manifest["out_dir"], target_is_directory=True)
