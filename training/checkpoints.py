"""Atomic engine checkpoints (save, keep-last-K, find the latest complete one) and the final HF export.

Layout under ``ckpt_dir``: ``step-00000040/`` folders, each holding the engine's own files (DeepSpeed's, or the
FSDP engine's torch.distributed.checkpoint shards) plus ``COMPLETE.json``.
A checkpoint is written into ``.tmp-step-00000040/`` by every rank, then rank 0 writes the marker (step, epoch,
data position, per-rank RNG states, and the size of every file) and renames the folder. A crash at any point
leaves either a ``.tmp-*`` folder (never read, removed at the next save) or a complete checkpoint; a marker whose
listed files are missing or have changed size is reported and skipped.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from foundation.errors import CheckpointError, TrainingError
from foundation.paths import building, write_json_atomic

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
PREFIX = "step-"
TMP_PREFIX = ".tmp-"


def tag_for(step: int) -> str:
    """Return the checkpoint folder name of ``step``."""
    return f"{PREFIX}{step:08d}"


def capture_rng() -> str:
    """Return this process's python + torch RNG states, serialised to base64 (fits in the JSON marker)."""
    buf = io.BytesIO()
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, buf)
    return base64.b64encode(buf.getvalue()).decode()


def restore_rng(blob: str) -> None:
    """Restore the RNG states captured by :func:`capture_rng`."""
    state = torch.load(io.BytesIO(base64.b64decode(blob)), weights_only=False)
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _all_gather(value: Any) -> list[Any]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, value)
        return out
    return [value]


def save_checkpoint(engine: Any, ckpt_dir: Path, *, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Save an atomic checkpoint of ``engine`` at ``step`` with ``state`` (epoch, data position, ...) in its marker.

    Every rank must call this. Returns the final folder. Older complete checkpoints beyond ``keep_last`` and stale
    temporary folders are removed afterwards.
    """
    ckpt_dir = Path(ckpt_dir)
    tag, tmp_tag = tag_for(step), f"{TMP_PREFIX}{tag_for(step)}"
    rank = engine.global_rank
    if rank == 0:
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tmp_tag, save_latest=False)
    rngs = _all_gather(capture_rng())
    _barrier()
    final = ckpt_dir / tag
    if rank == 0:
        tmp = ckpt_dir / tmp_tag
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        marker = {"step": step, "tag": tag, "world_size": len(rngs), "rng": rngs, "files": files, **state}
        write_json_atomic(tmp / MARKER, marker)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune_checkpoints(ckpt_dir, keep_last=keep_last)
    _barrier()
    return final


def read_complete(folder: Path) -> dict[str, Any]:
    """Return the marker of a complete checkpoint folder; raise CheckpointError saying what is wrong otherwise."""
    folder = Path(folder)
    marker_path = folder / MARKER
    if not marker_path.is_file():
        raise CheckpointError(f"{folder}: no {MARKER} (the save did not finish)")
    try:
        marker = json.loads(marker_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{marker_path}: unreadable marker ({exc})") from exc
    for name, size in marker.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} listed in the marker is missing")
        if path.stat().st_size != size:
            raise CheckpointError(f"{folder}: {name} is {path.stat().st_size} bytes, the marker says {size}")
    if not marker.get("files") or "step" not in marker:
        raise CheckpointError(f"{marker_path}: marker lacks files or step")
    return marker


def _is_valid(folder: Path) -> bool:
    try:
        read_complete(folder)
    except CheckpointError:
        return False
    return True


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Return the (not necessarily complete) checkpoint folders in ``ckpt_dir``, newest step first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]), reverse=True)


def find_latest_complete(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Return ``(folder, marker)`` of the newest complete checkpoint, warning about each one skipped; or None."""
    for folder in list_checkpoints(ckpt_dir):
        try:
            return folder, read_complete(folder)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
    return None


def prune_checkpoints(ckpt_dir: Path, *, keep_last: int) -> None:
    """Remove stale temporary folders and all but the newest ``keep_last`` valid checkpoints.

    Invalid checkpoint folders are left for a person to inspect (resume skips them with a warning); counting only
    valid ones means a corrupt newer folder can never cause the last good checkpoint to be deleted.
    """
    ckpt_dir = Path(ckpt_dir)
    for p in ckpt_dir.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)
    complete = [p for p in list_checkpoints(ckpt_dir) if _is_valid(p)]
    for p in complete[max(keep_last, 1):]:
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(engine: Any, folder: Path, marker: dict[str, Any]) -> None:
    """Restore model, optimizer, LR scheduler and this rank's RNG state from a complete checkpoint."""
    world = engine.world_size
    if marker["world_size"] != world:
        raise CheckpointError(
            f"{folder} was written by {marker['world_size']} ranks, this run has {world}: resume with the same "
            "number of processes, or start a new output_dir"
        )
    load_path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name)
    if load_path is None:
        raise CheckpointError(f"DeepSpeed could not load {folder}")
    restore_rng(marker["rng"][engine.global_rank])


def gather_full_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """Return the full fp32 state dict on rank 0 (None elsewhere); under ZeRO-3 and FSDP the shards are gathered.

    The module keeps fp32 weights in every precision mode we configure (bf16 runs as autocast, or under FSDP as a
    MixedPrecisionPolicy over fp32 shards), so this is the trained fp32 model, not a bf16 rounding of it.
    Every rank must call this.
    """
    from training.fsdp_engine import FSDPEngine

    if isinstance(engine, FSDPEngine):
        return engine.gather_full_state_dict()
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            state = {k: v.detach().clone().float() for k, v in module.state_dict().items()} if engine.global_rank == 0 else None
        return state
    if engine.global_rank != 0:
        return None
    return {k: v.detach().clone().float() for k, v in module.state_dict().items()}


def export_hf_model(state_dict: dict[str, torch.Tensor], *, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Write a consolidated HF model folder (fp32 safetensors, config, tokenizer, generation config), then verify it.

    The folder is built beside ``out_dir`` and renamed into place, so ``out_dir`` is either absent or complete.
    Returns figures for the summary; raises TrainingError when the saved model does not load with the right shapes.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(model_dir)
    with building(Path(out_dir)) as tmp:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise TrainingError(f"trained weights do not match {model_dir}'s config: missing={missing[:5]} unexpected={unexpected[:5]}")
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp)
        try:
            GenerationConfig.from_pretrained(model_dir).save_pretrained(tmp)
        except OSError:
            log.info("%s has no generation_config.json; keeping the one save_pretrained wrote", model_dir)
        figures = verify_export(tmp, expected=state_dict)
    return figures


def verify_export(folder: Path, *, expected: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Load ``folder`` with AutoModelForCausalLM and check every weight's shape and values against ``expected``."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except Exception as exc:  # any load failure means a broken export, whatever transformers raises
        raise TrainingError(f"the exported model in {folder} does not load: {exc}") from exc
    loaded = model.state_dict()
    bad = []
    for name, tensor in expected.items():
        got = loaded.get(name)
        if got is None or got.numel() == 0 or got.shape != tensor.shape or not torch.equal(got, tensor):
            bad.append(f"{name}: saved {None if got is None else tuple(got.shape)} vs trained {tuple(tensor.shape)}")
    if bad:
        raise TrainingError(f"the exported model in {folder} does not match the trained weights: {bad[:5]}")
    return {"n_params": sum(p.numel() for p in model.parameters()), "n_tensors": len(loaded)}
