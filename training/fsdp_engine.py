"""PyTorch FSDP2 (``fully_shard``) behind the few DeepSpeed engine methods the training loop calls.

:func:`training.full_ft.train` drives its engine through a small part of DeepSpeed's engine interface;
:class:`FSDPEngine` implements that part over plain PyTorch, so the data, the loop, the LR schedule, the checkpoint
scheme (:mod:`training.checkpoints`) and the consolidated HF export are shared by both backends:

- ``engine(**batch)`` runs the forward; ``backward(loss)`` scales by 1/accumulation, as DeepSpeed does;
  ``step()`` runs after every micro-batch and, at the accumulation boundary, clips the global gradient norm, steps
  AdamW, zeroes the gradients and steps the LR schedule (DeepSpeed's order);
- ``get_global_grad_norm()``, ``zero_optimization_stage()``, ``device``, ``global_rank``, ``world_size``,
  ``module``, ``train()`` / ``eval()`` / ``training``, ``compile()``;
- ``save_checkpoint(dir, tag)`` / ``load_checkpoint(dir, tag)``: model and optimizer state sharded with
  ``torch.distributed.checkpoint`` (``.metadata`` and one ``__<rank>_0.distcp`` per rank) plus the LR schedule;
- ``gather_full_state_dict()``: the full fp32 state dict on rank 0, for the export.

Sharding: each decoder layer, then the root (embeddings, final norm, LM head), is ``fully_shard``-ed over one mesh
of all ranks, so parameters, gradients and optimizer states are split across ranks as under ZeRO-3. The sharded
fp32 parameters are the master weights (no second copy). bf16 is FSDP's ``MixedPrecisionPolicy``: bf16 compute
and all-gathers, fp32 gradient reduction. ZeRO-3 parameter offload maps to ``CPUOffloadPolicy``.
Settings come from the same DeepSpeed-schema config dict the DeepSpeed engine reads: one source per setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from foundation.errors import ConfigError
from training.memory import backend_problems

ENGINE_STATE = "engine_state.pt"  # the LR schedule and step counter, beside the DCP shards
OPTIMIZER_KEYS = ("lr", "betas", "eps", "weight_decay", "fused", "foreach")  # what torch.optim.AdamW takes


@dataclass(frozen=True)
class FSDPSettings:
    """What the FSDP engine reads from a DeepSpeed-schema config dict."""

    grad_accum: int
    grad_clip: float
    bf16: bool
    offload: bool
    optimizer: dict[str, Any]


def fsdp_settings(ds_config: dict[str, Any]) -> FSDPSettings:
    """Read a DeepSpeed-schema config for the FSDP engine; raise ConfigError listing every setting it cannot honour."""
    zero = ds_config.get("zero_optimization", {})
    offload = ("optimizer+params" if "offload_param" in zero else "optimizer" if "offload_optimizer" in zero
               else "none")
    problems = backend_problems("fsdp", zero.get("stage", 0), offload)
    optimizer = ds_config.get("optimizer", {})
    if str(optimizer.get("type", "")).lower() != "adamw":
        problems.append(f"optimizer.type: the fsdp backend runs torch AdamW, got {optimizer.get('type')!r}")
    if ds_config.get("fp16", {}).get("enabled"):
        problems.append("fp16: the fsdp backend has no loss scaling; use bf16 (train.precision) or fp32")
    if problems:
        raise ConfigError(problems, source="FSDP engine")
    params = optimizer.get("params", {})
    return FSDPSettings(
        grad_accum=int(ds_config.get("gradient_accumulation_steps", 1)),
        grad_clip=float(ds_config.get("gradient_clipping", 0.0)),
        bf16=bool(ds_config.get("torch_autocast", {}).get("enabled") or ds_config.get("bf16", {}).get("enabled")),
        offload=offload == "optimizer+params",
        optimizer={k: tuple(v) if k == "betas" else v for k, v in params.items() if k in OPTIMIZER_KEYS},
    )


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the classes Hugging Face names in ``_no_split_modules`` (its FSDP wrap units)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


class FSDPEngine:
    """A model sharded with FSDP2, its AdamW and LR schedule, stepped the way the DeepSpeed engine steps them.

    Call after ``torch.distributed`` is initialised (gloo on CPU, NCCL on CUDA). ``param_groups`` builds the
    optimizer groups from the sharded model and ``lr_scheduler`` the schedule from the optimizer, as
    ``deepspeed.initialize`` takes them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ds_config: dict[str, Any],
        *,
        param_groups: Callable[[torch.nn.Module, float], list[dict[str, Any]]],
        lr_scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
    ) -> None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        settings = fsdp_settings(ds_config)
        self.global_rank, self.world_size = dist.get_rank(), dist.get_world_size()
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        shard: dict[str, Any] = {"mesh": init_device_mesh(self.device.type, (self.world_size,))}
        if settings.bf16:
            shard["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if settings.offload:
            shard["offload_policy"] = CPUOffloadPolicy(pin_memory=cuda)
        self._layers = decoder_layers(model)
        for layer in self._layers:
            fully_shard(layer, **shard)
        fully_shard(model, **shard)  # the root: parameters outside the layers (embeddings, final norm, head)
        self.module = model
        # Groups are built from the sharded parameters: fully_shard replaces every parameter with a DTensor.
        self.optimizer = torch.optim.AdamW(param_groups(model, settings.optimizer.get("weight_decay", 0.0)),
                                           **settings.optimizer)
        self.lr_scheduler = lr_scheduler(self.optimizer)
        self._accum, self._clip = settings.grad_accum, settings.grad_clip
        self._micro_steps = 0
        self._grad_norm: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @property
    def training(self) -> bool:
        """Whether the module is in training mode."""
        return self.module.training

    def train(self, mode: bool = True) -> "FSDPEngine":
        """Put the module in training mode (or eval with ``mode=False``)."""
        self.module.train(mode)
        return self

    def eval(self) -> "FSDPEngine":
        """Put the module in eval mode."""
        return self.train(False)

    def zero_optimization_stage(self) -> int:
        """3: parameters, gradients and optimizer states are sharded over all ranks, as under ZeRO-3."""
        return 3

    def compile(self, compile_kwargs: dict[str, Any] | None = None) -> None:
        """``torch.compile`` each decoder layer (FSDP2's unit), leaving the hooks between layers uncompiled."""
        for layer in self._layers:
            layer.compile(**(compile_kwargs or {}))

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` scaled by 1/accumulation; FSDP reduce-scatters the gradients (mean over ranks)."""
        (loss / self._accum).backward()

    def step(self) -> None:
        """Count a micro-batch; at the accumulation boundary clip, step AdamW and the LR schedule, zero the grads."""
        self._micro_steps += 1
        if self._micro_steps % self._accum:
            return
        # With clipping off the norm is still measured (inf never clips), for the metrics as DeepSpeed reports it.
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self._clip or float("inf"))
        self._grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()

    def get_global_grad_norm(self) -> float | None:
        """The gradient norm over all ranks before clipping, at the last optimizer step."""
        return self._grad_norm

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool = False) -> None:
        """Write ``save_dir/tag``: sharded model and optimizer state (every rank), the LR schedule (rank 0).

        Every rank must call this. ``save_latest`` is accepted for DeepSpeed's signature; :mod:`training.checkpoints`
        finds the newest checkpoint by its marker instead.
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        folder = Path(save_dir) / tag
        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))
        if self.global_rank == 0:
            torch.save({"lr_scheduler": self.lr_scheduler.state_dict(), "micro_steps": self._micro_steps},
                       folder / ENGINE_STATE)

    def load_checkpoint(self, load_dir: str, tag: str) -> tuple[str, dict[str, Any]]:
        """Restore the state :meth:`save_checkpoint` wrote in ``load_dir/tag``; return ``(path, {})`` as DeepSpeed
        returns ``(path, client_state)``. Every rank must call this."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        folder = Path(load_dir) / tag
        # get_state_dict gives the optimizer its (empty) Adam moments first, so DCP has tensors to load into.
        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(self.module, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
        extra = torch.load(folder / ENGINE_STATE, weights_only=True)
        self.lr_scheduler.load_state_dict(extra["lr_scheduler"])
        self._micro_steps = int(extra["micro_steps"])
        return str(folder), {}

    def gather_full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full fp32 state dict on rank 0, gathered shard by shard into CPU memory (None on other ranks)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.global_rank != 0:
            return None
        return {k: v.detach().float() for k, v in state.items()}
