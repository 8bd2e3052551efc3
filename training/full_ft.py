"""Full fine-tuning through the DeepSpeed engine or PyTorch FSDP2; the entry point a launcher runs on every rank.

    python -m torch.distributed.run --standalone --nproc_per_node 1 -m training.full_ft --spec spec.json

Reads a :class:`TrainSpec` (JSON), resumes from the newest complete checkpoint in ``output_dir/checkpoints``,
trains with ``engine.backward`` / ``engine.step`` (``spec.backend``: the DeepSpeed engine, or
:class:`training.fsdp_engine.FSDPEngine`, which implements the same methods), appends one JSON line per logged step to
``output_dir/metrics.jsonl`` (rank 0, flushed), and ends with a verified HF model folder ``output_dir/model`` and
``output_dir/train_summary.json``. Launch it through :mod:`training.launcher`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import torch

from foundation.errors import CheckpointError, ConfigError, TrainingError
from foundation.memory_reuse import keep_freed_memory
from foundation.paths import write_json_atomic
from training.data import Example, MicroBatches, load_examples
from training.curve import LearningCurve
from training.objective import DecisionWeight, answer_only_loss
from training.schedule import build_scheduler

log = logging.getLogger("training.full_ft")

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"


@dataclass
class TrainSpec:
    """Everything one full fine-tuning run needs; JSON round-trips through :meth:`save` / :meth:`load`.

    ``ds_config`` is a DeepSpeed config dict (see :func:`training.deepspeed_config.build_deepspeed_config`) or the
    path of one; batch shape, ZeRO stage, precision, clipping and the optimizer come from it, the peak learning
    rate included (:attr:`lr` reads it): each setting has one source.
    ``backend`` "deepspeed" runs the DeepSpeed engine; "fsdp" runs PyTorch FSDP2 full sharding
    (:mod:`training.fsdp_engine`) from the same ``ds_config``, whose ZeRO stage must then be 3.
    ``checkpoint_every_steps`` 0 disables checkpoints; ``max_steps`` caps the steps the epochs would give.
    ``curve_points`` > 0 scores the model teacher-forced on the first ``curve_examples`` validation examples before
    training and that many times during it (``curve.jsonl``: the learning curve of the report).
    """

    model_dir: str
    dataset_dir: str
    output_dir: str
    ds_config: dict[str, Any] | str
    backend: str = "deepspeed"
    epochs: int = 1
    max_steps: int | None = None
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    seed: int = 0
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    checkpoint_every_steps: int = 0
    keep_last_checkpoints: int = 2
    replay_file: str | None = None
    replay_fraction: float = 0.0
    log_every_steps: int = 1
    split: str = "train"
    curve_points: int = 0
    curve_examples: int = 32
    decision_weight: float = 1.0
    directive_weight: float = 1.0
    first_case_kinds: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise to JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainSpec":
        """Parse :meth:`to_json` output; unknown keys are a ConfigError."""
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError([f"{k}: unknown TrainSpec field" for k in unknown], source="train spec")
        return cls(**data)

    def save(self, path: Path) -> Path:
        """Write the spec to ``path`` (atomically) and return the path."""
        write_json_atomic(Path(path), asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "TrainSpec":
        """Read a spec written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())

    def resolved_ds_config(self) -> dict[str, Any]:
        """Return the DeepSpeed config dict (loading it when ``ds_config`` is a path)."""
        if isinstance(self.ds_config, dict):
            return json.loads(json.dumps(self.ds_config))
        return json.loads(Path(self.ds_config).read_text())

    @property
    def lr(self) -> float:
        """The peak learning rate: the DeepSpeed config's optimizer ``lr`` (the schedule scales it)."""
        try:
            return float(self.resolved_ds_config()["optimizer"]["params"]["lr"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(["ds_config.optimizer.params.lr: missing or not a number"],
                              source="train spec") from err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Where a single process finds its peers; set by a launcher (torchrun, deepspeed) or by prepare_process_env.
RENDEZVOUS_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def prepare_process_env() -> None:
    """Set what DeepSpeed needs before it is imported: the CPU accelerator when there is no CUDA device, and the
    single-process rendezvous variables when no launcher set them (else DeepSpeed falls back to MPI discovery)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))


def skip_shm_op_for_one_rank() -> None:
    """On CPU with a single rank, keep DeepSpeed from JIT-building its shared-memory all-reduce op.

    DeepSpeed's CPU backend compiles ``deepspeed_shm_comm`` when the process group starts (34 s of C++ build on
    2 cores, at the first run on a machine and again whenever the venv's path changes); one rank never all-reduces
    across processes, so the op is never used. ``build_shm_op`` reads the compatibility table at call time.
    """
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into decayed (matrices) and not decayed (norms, biases): the usual AdamW recipe."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def planned_steps(stream: MicroBatches, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of a training: ``epochs`` passes over the stream, capped by ``max_steps``."""
    total = stream.steps_per_epoch() * epochs
    return min(total, max_steps) if max_steps else total


def decision_weight(tokenizer: Any, weight: float, directive_weight: float = 1.0) -> DecisionWeight | None:
    """The loss weighting of the check lines' outcome tokens and of the directive (None for plain cross-entropy)."""
    if weight == 1.0 and directive_weight == 1.0:
        return None
    from evaluation.teacher_forced import outcome_token_ids  # the tokens the teacher-forced scores read, too

    colon, *_ = tokenizer(":", add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    directive = tokenizer("\nDIRECTIVE:", add_special_tokens=False)["input_ids"][len(newline)]
    return DecisionWeight(weight, colon, tuple(outcome_token_ids(tokenizer).values()), directive_weight, directive)


def load_trainable_model(model_dir: str, *, seed: int, gradient_checkpointing: bool) -> torch.nn.Module:
    """The base model in fp32 for training (seeded, no KV cache, optional gradient checkpointing)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def start_distributed(backend: str) -> None:
    """Join the launch's process group: DeepSpeed's (CPU: gloo through its CPU accelerator) or, for FSDP, torch's
    own (gloo on CPU; NCCL on CUDA, with gloo beside it for CPU objects). Call :func:`prepare_process_env` first."""
    import torch.distributed as dist

    if backend == "fsdp":
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("cuda:nccl,cpu:gloo" if torch.cuda.is_available() else "gloo")
        return
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    skip_shm_op_for_one_rank()
    deepspeed.init_distributed()


def build_engine(
    model: torch.nn.Module, ds_config: dict[str, Any], *, total_steps: int, warmup_ratio: float, min_lr_ratio: float,
    backend: str = "deepspeed",
) -> tuple[Any, Any]:
    """Wrap ``model`` in the backend's engine with the config's optimizer and our warmup + cosine LambdaLR.

    ``backend`` "deepspeed": a DeepSpeed engine; "fsdp": an :class:`~training.fsdp_engine.FSDPEngine` (FSDP2 full
    sharding) reading the same config. Returns ``(engine, lr_scheduler)``. Call :func:`start_distributed` first.
    """
    from training.memory import BACKENDS

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return build_scheduler(opt, total_steps=total_steps, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio)

    if backend not in BACKENDS:
        raise ConfigError([f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}"], source="train spec")
    if backend == "fsdp":
        from training.fsdp_engine import FSDPEngine

        engine = FSDPEngine(model, ds_config, param_groups=param_groups, lr_scheduler=schedule)
        return engine, engine.lr_scheduler
    import deepspeed

    weight_decay = ds_config.get("optimizer", {}).get("params", {}).get("weight_decay", 0.0)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, weight_decay), config=ds_config, lr_scheduler=schedule,
    )
    return engine, scheduler


def train_step(engine: Any, micro_batches: list[dict[str, torch.Tensor]],
               decision: DecisionWeight | None = None) -> tuple[torch.Tensor, int]:
    """Run one optimizer step over this rank's micro-batches; return (mean loss tensor, non-pad tokens)."""
    losses, tokens = [], 0
    for batch in micro_batches:
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        loss = answer_only_loss(engine, batch, decision)
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach().float())
        tokens += int(batch["attention_mask"].sum())
    return torch.stack(losses).mean(), tokens


def peak_rss_gib() -> float:
    """The largest resident memory of any rank so far, in GiB (``ru_maxrss``: a high-water mark). Every rank must
    call this."""
    import torch.distributed as dist

    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB
    every: list[Any] = [mine] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_gather_object(every, mine)
    return max(every)


def _all_reduce_mean_sum(loss: torch.Tensor, tokens: int, device: torch.device) -> tuple[float, int]:
    """Mean loss and summed tokens over ranks (so rank 0 logs global figures)."""
    import torch.distributed as dist

    packed = torch.tensor([float(loss), float(tokens)], dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(packed)
        packed[0] /= dist.get_world_size()
    return float(packed[0]), int(packed[1])


class MetricsLog:
    """Rank 0's ``metrics.jsonl``: one JSON object per line, flushed at once so a reader can tail it."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self._file: TextIO | None = Path(path).open("a", encoding="utf-8") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def load_training_examples(
    *, dataset_dir: Path, split: str, tokenizer: Any, replay_file: str | None, replay_fraction: float, seed: int,
    first_case_kinds: Sequence[str] = (),
) -> tuple[list[Example], int]:
    """Load the split's examples and mix in replay examples when a replay file is given; return (examples, n_replay).

    Rows of ``first_case_kinds`` open every epoch (replay examples never do).
    """
    examples = load_examples(Path(dataset_dir), split, first_case_kinds)
    if not replay_file or replay_fraction <= 0:
        return examples, 0
    from training.replay import load_replay, mix_replay

    max_len = max(len(e.input_ids) for e in examples)
    replay = load_replay(Path(replay_file), tokenizer, max_length=max_len)
    return mix_replay(examples, replay, fraction=replay_fraction, seed=seed)


def train(spec: TrainSpec, *, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the full fine-tuning described by ``spec`` on this rank; return the summary dict.

    Every rank of the launch runs this. Raises TrainingError on a NaN/inf loss or a model that does not export.
    """
    prepare_process_env()
    import torch.distributed as dist
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from training.checkpoints import (
        export_hf_model,
        find_latest_complete,
        gather_full_state_dict,
        load_checkpoint,
        save_checkpoint,
    )

    start_distributed(spec.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / CHECKPOINT_DIR

    ds_config = spec.resolved_ds_config()
    micro = int(ds_config["train_micro_batch_size_per_gpu"])
    accum = int(ds_config.get("gradient_accumulation_steps", 1))
    ds_config["train_batch_size"] = micro * accum * world  # the launch decides the world size, not the config

    tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples, n_replay = load_training_examples(
        dataset_dir=Path(spec.dataset_dir), split=spec.split, tokenizer=tokenizer, replay_file=spec.replay_file,
        replay_fraction=spec.replay_fraction, seed=spec.seed, first_case_kinds=spec.first_case_kinds,
    )
    stream = MicroBatches(examples, micro, accum, world, rank, spec.seed, pad_id)
    total_steps = planned_steps(stream, spec.epochs, spec.max_steps)
    decision = decision_weight(tokenizer, spec.decision_weight, spec.directive_weight)
    model = load_trainable_model(spec.model_dir, seed=spec.seed, gradient_checkpointing=spec.gradient_checkpointing)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, scheduler = build_engine(
        model, ds_config, total_steps=total_steps, warmup_ratio=spec.warmup_ratio, min_lr_ratio=spec.min_lr_ratio,
        backend=spec.backend,
    )
    if spec.torch_compile:
        engine.compile(compile_kwargs={"dynamic": True})  # batches vary in length: no recompile per length

    step, epoch, position, tokens_before, resumed_from, loss_value = 0, 0, 0, 0, None, float("nan")
    found = [find_latest_complete(ckpt_dir) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        folder, marker = found[0]
        if marker.get("backend", "deepspeed") != spec.backend:
            raise CheckpointError(
                f"{folder} was written by the {marker.get('backend', 'deepspeed')} backend and this run uses "
                f"{spec.backend}: resume with the same train.backend, or start a new output_dir"
            )
        load_checkpoint(engine, folder, marker)
        step, epoch, position = marker["step"], marker["epoch"], marker["position"]
        tokens_before, resumed_from = marker.get("tokens", 0), folder.name
        loss_value = marker.get("loss", float("nan"))
        if rank == 0:
            log.warning("resumed from %s at step %d (epoch %d, data position %d)", folder, step, epoch, position)

    metrics = MetricsLog(out_dir / METRICS_FILE, enabled=rank == 0)
    # Every rank scores the same examples (a ZeRO-3 forward needs all of them); rank 0 writes the curve.
    curve = LearningCurve(out_dir, tokenizer, spec.dataset_dir, points=spec.curve_points, total_steps=total_steps,
                          examples=spec.curve_examples, examples_per_step=micro * accum * world, write=rank == 0)
    start = time.perf_counter()  # before the first curve point: its scoring is subtracted like the others
    curve.maybe_score(engine, step)
    bar = tqdm(total=total_steps, initial=step, disable=rank != 0, file=sys.stderr, desc="full FT", mininterval=1)
    run_tokens = 0

    def checkpoint(next_epoch: int, next_position: int) -> None:
        state = {"epoch": next_epoch, "position": next_position, "tokens": tokens_before + run_tokens,
                 "loss": loss_value, "backend": spec.backend}
        save_checkpoint(engine, ckpt_dir, step=step, state=state, keep_last=spec.keep_last_checkpoints)

    try:
        while step < total_steps and epoch < spec.epochs:
            for next_position, micro_batches in stream.iter_steps(epoch, position):
                if step >= total_steps:
                    break
                lr = scheduler.get_last_lr()[0]
                loss, tokens = train_step(engine, micro_batches, decision)
                loss_value, tokens = _all_reduce_mean_sum(loss, tokens, engine.device)
                step += 1
                run_tokens += tokens
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"loss is {loss_value} at step {step} (epoch {epoch}, lr {lr:.3g}): lower the learning rate, "
                        "check the data for empty label rows, or use fp32; the last complete checkpoint is kept"
                    )
                bar.update(1)
                if step % spec.log_every_steps == 0 or step == total_steps:
                    elapsed = time.perf_counter() - start
                    grad_norm = engine.get_global_grad_norm()
                    record = {
                        "step": step, "total_steps": total_steps, "epoch": epoch, "loss": loss_value, "lr": lr,
                        "tokens": tokens_before + run_tokens, "tokens_per_s": run_tokens / max(elapsed - curve.seconds, 1e-9),
                        "elapsed_s": elapsed,
                        "grad_norm": None if grad_norm is None else float(grad_norm),
                    }
                    metrics.write(record)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                    if progress is not None and rank == 0:
                        progress(record)
                curve.maybe_score(engine, step)
                last_of_epoch = next_position >= len(stream.plan(epoch))
                next_epoch, next_pos = (epoch + 1, 0) if last_of_epoch else (epoch, next_position)
                if spec.checkpoint_every_steps and (step % spec.checkpoint_every_steps == 0 or step == total_steps):
                    checkpoint(next_epoch, next_pos)
            epoch, position = epoch + 1, 0
    finally:
        bar.close()
        metrics.close()
    wall = time.perf_counter() - start - curve.seconds  # training time: the curve's scoring is not training
    peak_rss = peak_rss_gib()  # before the export, which holds the full model on rank 0 a few times over

    state_dict = gather_full_state_dict(engine)
    summary: dict[str, Any] = {}
    if rank == 0:
        figures = export_hf_model(state_dict, model_dir=Path(spec.model_dir), out_dir=out_dir / MODEL_DIR)
        summary = {
            "steps": step, "total_steps": total_steps, "epochs": spec.epochs, "tokens": tokens_before + run_tokens,
            "run_tokens": run_tokens, "wall_time_s": wall, "tokens_per_s": run_tokens / wall if wall > 0 else 0.0,
            "final_loss": loss_value, "trainable_params": trainable, "resumed_from": resumed_from, "lr": spec.lr,
            "world_size": world, "backend": spec.backend, "zero_stage": engine.zero_optimization_stage(),
            "peak_rss_gib": peak_rss,
            "bf16": bool(ds_config.get("torch_autocast", {}).get("enabled") or ds_config.get("bf16", {}).get("enabled")),
            "replay_examples": n_replay, "train_examples": len(examples) - n_replay, "curve_s": curve.seconds,
            "model_dir": str(out_dir / MODEL_DIR), "exported_params": figures["n_params"],
        }
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
    dist.barrier()
    return summary


def die_with_launcher() -> None:
    """On Linux, have the kernel SIGKILL this process when the launcher that started it dies.

    torchrun starts its workers in their own session, so killing the launcher's process group (a cancelled or
    crashed task) would leave the training running on, still writing checkpoints into the work folder that the
    retry resumes from. PR_SET_PDEATHSIG ties the worker's life to its parent's.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before the call: nobody would get the result
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m training.full_ft --spec spec.json``."""
    die_with_launcher()
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="TrainSpec JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(TrainSpec.load(args.spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
