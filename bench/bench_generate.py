"""Benchmark: batched greedy generation against one prompt at a time (generated tokens per second).

    .venv/bin/python bench/bench_generate.py                       # tiny random model (seconds)
    .venv/bin/python bench/bench_generate.py --model packaged      # SmolLM2-135M-Instruct (minutes on 2 cores)

Both modes generate greedily for the same chat-templated general prompts; batched answers must equal the one-at-a-
time answers (the benchmark refuses to report a speed-up that changed the output). Tokens counted are the answer
tokens up to the stop token; the time includes the steps a finished row spends waiting for the rest of its batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from evaluation.forgetting import chat_prompt, load_general_prompts  # noqa: E402
from evaluation.generate import generate_token_ids, load_model_for_eval  # noqa: E402
from finetune.models import build_tiny_model, provision_base_model, resolve_model  # noqa: E402


def _timed(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int) -> tuple[list, float]:
    start = time.perf_counter()
    ids = generate_token_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return ids, time.perf_counter() - start


def run(
    model_path: str | None = None,
    *,
    n_prompts: int = 16,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    threads: int = 2,
) -> dict:
    """Time batched and one-at-a-time generation; return tokens/s of each and the speed-up.

    Args:
        model_path: an HF model folder, ``packaged`` for the base model, or None for a tiny random model.
    """
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if model_path is None:
            path = build_tiny_model(Path(tmp) / "tiny", provision_base_model())
        else:
            path = resolve_model(model_path)
        model, tokenizer = load_model_for_eval(path)
    instructions = (load_general_prompts("heldout") + load_general_prompts("replay"))[:n_prompts]
    prompts = [chat_prompt(tokenizer, p) for p in instructions]
    _timed(model, tokenizer, prompts[:1], max_new_tokens=4, batch_size=1)  # warm-up (first-call allocations)
    batched, t_batched = _timed(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    single, t_single = _timed(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=1)
    tokens = sum(len(ids) for ids in single)
    return {
        "model": str(model_path or "tiny-random-llama"),
        "n_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "threads": threads,
        "generated_tokens": tokens,
        "same_output": batched == single,
        "batched_tok_s": round(tokens / t_batched, 2),
        "single_tok_s": round(tokens / t_single, 2),
        "speedup": round(t_single / t_batched, 2),
        "batched_s": round(t_batched, 2),
        "single_s": round(t_single, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF model folder or 'packaged' (default: tiny random model)")
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = run(
        args.model,
        n_prompts=args.n_prompts,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    print(json.dumps(result, indent=2))
    if not result["same_output"]:
        sys.exit("batched generation changed the greedy output")


if __name__ == "__main__":
    main()
