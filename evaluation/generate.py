"""Batched greedy generation for evaluation, model loading, and a JSONL record of predictions.

Prompts arrive already chat-templated (``regulator.prompts.render_prompt``), so they are tokenized without adding
special tokens a second time. Batches are left-padded (a decoder continues from the last position of every row)
and built from prompts sorted by length so little compute goes to padding; answers come back in the input order.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from evaluation.constrained import AnswerWords, HeadConstraint, TokenStrings, apply_constraints
from foundation.errors import EvaluationError
from foundation.paths import read_jsonl, write_bytes_atomic

STOP_TOKENS = ("<|im_end|>",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Return the ids that end an answer: the tokenizer's eos plus ``<|im_end|>`` when the vocabulary has it."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in STOP_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    if not ids:
        raise EvaluationError("the tokenizer has no eos token and no <|im_end|>: generation would never stop early")
    return sorted(ids)


def _left_padded_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[i, width - len(row) :] = 1
    return input_ids, attention


def _cache_keyword(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in recent transformers 5.x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def greedy_decode(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, *, max_new_tokens: int, stops: set[int],
    constraints: Sequence[HeadConstraint | None] | None = None,
) -> list[list[int]]:
    """Greedy decoding of a left-padded batch with a KV cache that drops rows as soon as they stop.

    ``model.generate`` keeps computing every row until the longest answer ends; here a row that emitted a stop token
    leaves the batch (its cache rows are removed), so a step costs what the rows still generating cost. Returns the
    new token ids of each row, cut before its first stop token. ``constraints`` (one per row, or None) restrict
    each row's check-line heads to its filing's (``evaluation.constrained``).
    """
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    live = list(range(rows))  # the output row of each batch row still generating
    cache = DynamicCache(config=model.config)
    cache_kw = _cache_keyword(model)
    # Left padding: each row's positions start at its first real token.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
    for _ in range(max_new_tokens):
        if constraints is not None:
            logits = apply_constraints(logits, [constraints[r] for r in live])
        token = logits.argmax(-1)
        ids = token.tolist()
        going = [j for j, t in enumerate(ids) if t not in stops]
        for j in going:
            out[live[j]].append(ids[j])
            if constraints is not None and constraints[live[j]] is not None:
                constraints[live[j]].push(ids[j])
        if not going:
            break
        if len(going) < len(live):
            keep = torch.tensor(going, device=token.device)
            cache.batch_select_indices(keep)
            live, token, attention = [live[j] for j in going], token[keep], attention[keep]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
        positions = attention.sum(-1, keepdim=True) - 1
        logits = model(input_ids=token[:, None], attention_mask=attention, position_ids=positions,
                       use_cache=True, **{cache_kw: cache}).logits[:, -1]
    return out


@torch.inference_mode()
def generate_token_ids(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    heads: Sequence[Sequence[str]] | None = None,
    words: Sequence[AnswerWords] | None = None,
) -> list[list[int]]:
    """Greedy-generate for each prompt and return the new token ids, cut before the first stop token.

    Args:
        progress: called as ``progress(done, total)`` after each batch.
        heads: per prompt, the check-line heads its answer may write (``evaluation.constrained``); None: free.
        words: per prompt, the measures and closings its answer may write (with ``heads``); None: free words.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise EvaluationError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise EvaluationError(f"prompts at indexes {empty[:5]} tokenize to nothing: check the prompt rendering")
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    # Longest first: the first batch shows at once whether the largest one fits in memory.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[list[int]] = [[] for _ in prompts]
    vocab = TokenStrings(tokenizer) if heads is not None else None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        input_ids, attention = _left_padded_batch([encoded[i] for i in chunk], pad_id)
        constraints = ([HeadConstraint(list(heads[i]), vocab, words[i] if words is not None else AnswerWords(),
                                       tuple(stops)) for i in chunk] if vocab is not None and heads is not None else None)
        new_ids = greedy_decode(model, input_ids.to(device), attention.to(device), max_new_tokens=max_new_tokens,
                                stops=set(stops), constraints=constraints)
        for row, i in enumerate(chunk):
            results[i] = new_ids[row]
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return results


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    heads: Sequence[Sequence[str]] | None = None,
    words: Sequence[AnswerWords] | None = None,
) -> list[str]:
    """Greedy-generate an answer for each chat-templated prompt (batched, KV cache); answers in input order.
    ``heads``: per prompt, the check-line heads the answer may write (constrained decoding), None: free;
    ``words``: per prompt, the measures and closings it may write, None: free words."""
    ids = generate_token_ids(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
        heads=heads, words=words,
    )
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def generation_dtype(precision: str, native_bf16: bool) -> str:
    """The weights' dtype for generation: ``"bf16"``/``"fp32"`` as asked, ``"auto"`` bf16 only where the hardware
    computes bf16 natively (emulated bf16 is slower than fp32)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise EvaluationError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return "bfloat16" if precision == "bf16" or (precision == "auto" and native_bf16) else "float32"


def load_model_for_eval(
    path: Path, *, adapter: Path | None = None, dtype: str = "float32", device: str | None = None
) -> tuple[Any, Any]:
    """Load an HF model folder (optionally with a peft adapter merged in) in eval mode, plus its tokenizer.

    Remote code is never trusted. Returns ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise EvaluationError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EvaluationError(f"{path} is not a Hugging Face model folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=False)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise EvaluationError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
        # Merged weights generate as fast as the base model; the adapter folder itself is left untouched.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def write_predictions(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write prediction rows (e.g. ``id``, ``prompt``, ``reference``, ``prediction``) as JSONL, atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    write_bytes_atomic(path, text.encode("utf-8"))


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Read prediction rows written by :func:`write_predictions`."""
    return read_jsonl(path, error=EvaluationError, hint="regenerate the predictions")
