"""Micro-batches from the prepared dataset: length-grouped, padded, deterministic, resumable, sharded by rank.

Why length grouping and not packing: packing concatenates examples into one row, and without a per-document
attention mask (varlen kernels, not available to HF Llama on CPU SDPA) every example would attend to the tail of
the previous one, so its loss would be computed in a context it never has at inference. Length grouping keeps each
example alone in its row, the -100 prompt masking stays exact, and sorting inside shuffled mega-batches keeps the
padding small while the order stays random.

Data position: ``(epoch, index)`` where ``index`` counts *global* micro-batches of the epoch's plan already
consumed. Global micro-batch ``i`` goes to rank ``i % world_size``, so one optimizer step on ``world_size`` ranks
with ``grad_accum`` micro-batches each sees the same ``world_size * grad_accum`` micro-batches as one rank with
``world_size * grad_accum`` accumulation steps: 1-rank and N-rank runs see identical data per step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from foundation.errors import DataError

IGNORE_INDEX = -100
REQUIRED_COLUMNS = ("input_ids", "labels")


@dataclass(frozen=True)
class Example:
    """One tokenised example: ``labels`` is -100 wherever no loss is taken (prompt tokens).

    ``first``: planned before the other examples of every epoch (a curriculum, ``plan_epoch``).
    """

    input_ids: list[int]
    labels: list[int]
    first: bool = False


def load_examples(dataset_dir: Path, split: str = "train", first_kinds: Sequence[str] = ()) -> list[Example]:
    """Load ``split`` of a DatasetDict saved with ``save_to_disk`` and return its examples.

    Rows whose ``case_kind`` is in ``first_kinds`` are marked ``first`` (each epoch starts with them).
    Raises DataError when the folder, the split or a column is missing, or an example's labels do not align.
    """
    from datasets import load_from_disk

    dataset_dir = Path(dataset_dir)
    try:
        dsd = load_from_disk(str(dataset_dir))
    except FileNotFoundError as exc:
        raise DataError(f"{dataset_dir}: no dataset saved with save_to_disk here ({exc}); run prepare_data") from exc
    if split not in dsd:
        raise DataError(f"{dataset_dir}: split {split!r} missing (have {list(dsd)}); re-run prepare_data")
    ds = dsd[split]
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{dataset_dir}/{split}: columns {missing} missing (have {ds.column_names})")
    if first_kinds and "case_kind" not in ds.column_names:
        raise DataError(f"{dataset_dir}/{split}: no case_kind column to put {list(first_kinds)} first; "
                        "re-run prepare_data")
    cols = ds.select_columns(list(REQUIRED_COLUMNS)).to_dict()
    kinds = ds["case_kind"] if first_kinds else [None] * len(ds)
    examples = [Example(list(i), list(l), k in first_kinds)
                for i, l, k in zip(cols["input_ids"], cols["labels"], kinds)]
    for n, ex in enumerate(examples):
        if len(ex.input_ids) != len(ex.labels) or not ex.input_ids:
            raise DataError(f"{dataset_dir}/{split} row {n}: input_ids and labels differ in length or are empty")
    if not examples:
        raise DataError(f"{dataset_dir}/{split} is empty")
    return examples


def plan_epoch(
    lengths: Sequence[int], *, micro_batch_size: int, seed: int, epoch: int, group_size: int,
    mega_batch_factor: int = 32, first: Sequence[bool] | None = None,
) -> list[list[int]]:
    """Return the epoch's global micro-batches (lists of example indices), deterministic given ``seed`` and ``epoch``.

    Indices are shuffled, cut into mega-batches of ``mega_batch_factor`` micro-batches, sorted by length inside each,
    cut into micro-batches, and the micro-batch order is shuffled again. Incomplete micro-batches and the tail that
    does not fill a whole optimizer step (``group_size`` = world size x grad accumulation micro-batches) are dropped,
    so every rank runs the same number of steps. With ``first`` (a flag per example, some set), the flagged examples
    are planned that way on their own and come before the others, which are planned the same way after them.
    """
    rng = random.Random(f"{seed}:{epoch}")
    everything = list(range(len(lengths)))
    if first is None or not any(first):
        groups = [everything]
    else:
        groups = [[i for i in everything if first[i]], [i for i in everything if not first[i]]]
    batches: list[list[int]] = []
    for group in groups:
        batches += _shuffled_batches(group, lengths, rng, micro_batch_size * mega_batch_factor, micro_batch_size)
    return batches[: len(batches) - len(batches) % group_size]


def _shuffled_batches(order: list[int], lengths: Sequence[int], rng: random.Random, mega: int,
                      micro_batch_size: int) -> list[list[int]]:
    """``order`` shuffled, length-sorted inside mega-batches, cut into full micro-batches, which are shuffled."""
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i : i + micro_batch_size] for i in range(0, len(chunk), micro_batch_size)]
    batches = [b for b in batches if len(b) == micro_batch_size]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example: pad ids, attention mask 0, labels -100 on padding."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class MicroBatches:
    """The training stream of one rank: planned micro-batches, sharded, resumable from a data position."""

    examples: list[Example]
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    rank: int
    seed: int
    pad_token_id: int

    @property
    def group_size(self) -> int:
        """Global micro-batches per optimizer step."""
        return self.world_size * self.grad_accum_steps

    def plan(self, epoch: int) -> list[list[int]]:
        """The epoch's global micro-batch plan (the same on every rank)."""
        return plan_epoch(
            [len(e.input_ids) for e in self.examples],
            micro_batch_size=self.micro_batch_size,
            seed=self.seed,
            epoch=epoch,
            group_size=self.group_size,
            first=[e.first for e in self.examples],
        )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (every epoch has the same count)."""
        steps = len(self.plan(0)) // self.group_size
        if steps == 0:
            raise DataError(
                f"{len(self.examples)} examples do not fill one optimizer step of {self.group_size} micro-batches "
                f"of {self.micro_batch_size}; lower the batch size or accumulation, or add data"
            )
        return steps

    def iter_steps(self, epoch: int, start_index: int = 0) -> Iterator[tuple[int, list[dict[str, torch.Tensor]]]]:
        """Yield ``(next_index, micro_batches)`` per optimizer step of ``epoch`` from global index ``start_index``.

        ``micro_batches`` are this rank's ``grad_accum_steps`` collated batches; ``next_index`` is the data position
        to store in a checkpoint taken after this step.
        """
        if start_index % self.group_size:
            raise DataError(f"data position {start_index} is not on an optimizer-step boundary ({self.group_size})")
        plan = self.plan(epoch)
        for begin in range(start_index, len(plan), self.group_size):
            group = plan[begin : begin + self.group_size]
            mine = group[self.rank :: self.world_size]
            yield begin + self.group_size, [
                collate([self.examples[i] for i in b], pad_token_id=self.pad_token_id) for b in mine
            ]
