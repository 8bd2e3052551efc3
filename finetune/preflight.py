"""What a valid config points at, checked before anything starts: the model folder and the data source.

``load_config`` checks the config itself (types, ranges, fields that contradict each other) and stays cheap. The
checks here read a little of what the config names — a model folder's ``config.json`` and weight headers, the first
filings of a data-source folder — so that ``finetune validate`` does not call valid what ``finetune run`` would
refuse half a minute later, deep in a flow. Each problem names its field and value. ``validate`` and ``run`` (before
Prefect starts) call :func:`check_inputs`; ``plan`` checks the model's config alone (it reads no weights; a hub id
needs no cache when the project ships its architecture: :func:`plan_model_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from foundation.errors import ConfigError, ModelProvisioningError
from finetune.models import PACKAGED_MODEL

# Filings read to find one that can be used: enough to tell a folder of broken files from one bad file, bounded so
# that validating a folder of thousands of filings stays quick.
MAX_FILINGS_READ = 20
# Unreadable filings named in a problem; the rest are counted.
MAX_NAMED = 3
PACKAGED = ("packaged", PACKAGED_MODEL)


def model_ref_config(ref: str, source: str, *, weights: bool = False) -> Any:
    """The Hugging Face config of ``model.ref`` (``finetune.models.model_config``: a local folder must hold the
    readable config of a decoder-only causal LM) after, with ``weights``, checking a folder's weights are complete;
    a ``ConfigError`` from ``source`` naming ``model.ref`` otherwise."""
    from finetune.models import check_weights, local_path, model_config

    try:
        config = model_config(ref)
        if weights and ref not in PACKAGED:
            check_weights(local_path(ref))
    except ModelProvisioningError as err:
        raise ConfigError([f"model.ref: {err}"], source) from None
    return config


def plan_model_config(ref: str, source: str) -> tuple[Any, str]:
    """The Hugging Face config of ``model.ref`` for ``finetune plan`` and where it came from
    (``finetune.models.planning_config``: a hub id may be planned from the architecture shipped with the project,
    no weights and no download needed); a ``ConfigError`` from ``source`` naming ``model.ref`` otherwise."""
    from finetune.models import planning_config

    try:
        return planning_config(ref)
    except ModelProvisioningError as err:
        raise ConfigError([f"model.ref: {err}"], source) from None


def data_source_problems(source: str, *, limit: int = MAX_FILINGS_READ) -> list[str]:
    """Problems of a ``data.source`` of filings (a folder or a zip): no filing at all, entries the search had to skip
    (a folder it may not read, a link to a folder), or none of the first ``limit`` filings readable (a few named
    with their reasons). JSONL, Parquet and ``synthetic`` sources are checked when loaded; ``[]`` for them."""
    from regulator.analyze import FilingResult, expand_paths, read_filings

    path = Path(source)
    if source == "synthetic" or not (path.is_dir() or path.suffix.lower() == ".zip"):
        return []
    files, skipped = expand_paths([path])
    problems = [f"data.source: {reason}" for result in skipped for reason in result.reasons]
    if not files:
        return problems
    failures: list[str] = []
    for file in files[:limit]:
        got = read_filings(file)
        if any(not isinstance(item, FilingResult) for item in got):
            return problems  # one filing reads: the loader names any other that does not
        failures.extend(reason for item in got for reason in item.reasons)
    which = f"none of its {len(files)}" if len(files) <= limit else f"none of the first {limit} of its {len(files)}"
    named = "; ".join(failures[:MAX_NAMED]) + (f"; and {len(failures) - MAX_NAMED} more" if len(failures) > MAX_NAMED
                                               else "")
    return [*problems, f"data.source: {source}: {which} filings can be read: {named}"]


def check_inputs(cfg: RunConfig, source: str, *, packaged: bool = True) -> None:
    """Raise one ``ConfigError`` (from ``source``, the config file) listing every problem of the model folder and
    the data source the config names. ``packaged=False`` skips reading the packaged model's config (``run``
    provisions that model itself; reading its config costs seconds)."""
    problems: list[str] = []
    if packaged or cfg.model.ref not in PACKAGED:
        try:
            model_ref_config(cfg.model.ref, source, weights=True)
        except ConfigError as err:
            problems += err.problems
    problems += data_source_problems(cfg.data.source)
    if problems:
        raise ConfigError(problems, source)
