"""Batched greedy generation on a tiny model: batching and left padding must not change any answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluation.generate import (
    greedy_decode,
    _left_padded_batch,
    generate_answers,
    generate_token_ids,
    generation_dtype,
    load_model_for_eval,
    read_predictions,
    stop_token_ids,
    write_predictions,
)
from foundation.errors import EvaluationError

QUESTIONS = [
    "hi",
    "What is the capital of France and why is it so large?",
    "2+2",
    "Write a short poem about the sea, with rhymes, in four lines please.",
    "List three colours.",
    "Explain recursion to a child.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Many tiny decode steps: with 2 OpenMP threads on a busy 2-core machine they spin-wait on each other
    # (measured 10x slower than 1 thread under load).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    model, tokenizer = load_model_for_eval(tiny_model_dir)
    # A freshly initialised tiny model repeats one token whatever the prompt; larger weights make its greedy
    # output depend on the prompt, so a padding bug would show up as a different answer.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.5)
    return model, tokenizer


@pytest.fixture(scope="module")
def prompts(model_and_tokenizer) -> list[str]:
    _, tokenizer = model_and_tokenizer
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]


def test_batched_equals_one_at_a_time(model_and_tokenizer, prompts) -> None:
    model, tokenizer = model_and_tokenizer
    single = [generate_token_ids(model, tokenizer, [p], max_new_tokens=16, batch_size=1)[0] for p in prompts]
    assert len({tuple(s) for s in single}) > 1, "the test model must answer differently to different prompts"
    for batch_size in (2, 4, len(prompts)):
        batched = generate_token_ids(model, tokenizer, prompts, max_new_tokens=16, batch_size=batch_size)
        assert batched == single, f"batch_size={batch_size} changed the greedy output"
    assert tokenizer.padding_side == "right"  # generation pads by itself and leaves the tokenizer alone


def test_answers_decoded_in_input_order_with_progress(model_and_tokenizer, prompts) -> None:
    model, tokenizer = model_and_tokenizer
    calls: list[tuple[int, int]] = []
    answers = generate_answers(
        model, tokenizer, prompts, max_new_tokens=8, batch_size=4, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(4, 6), (6, 6)]
    reversed_answers = generate_answers(model, tokenizer, prompts[::-1], max_new_tokens=8, batch_size=4)
    assert reversed_answers == answers[::-1]
    assert all(isinstance(a, str) and a for a in answers)


def test_left_padding_and_stop_tokens(model_and_tokenizer) -> None:
    _, tokenizer = model_and_tokenizer
    ids, mask = _left_padded_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    stops = stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops


def test_rows_leave_the_batch_at_their_stop_token(model_and_tokenizer, prompts) -> None:
    """Rows that stop early are dropped from the batch and its cache; the others go on exactly as HF generate does."""
    model, tokenizer = model_and_tokenizer
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    input_ids, attention = _left_padded_batch(encoded, pad_id=tokenizer.pad_token_id or 0)
    reference = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=12, do_sample=False,
                               eos_token_id=None, pad_token_id=0)[:, input_ids.shape[1]:].tolist()
    # A token some rows emit early and others late or never: rows stop at different steps.
    stop = reference[0][3]
    expected = [row[: row.index(stop)] if stop in row else row for row in reference]
    assert len({len(r) for r in expected}) > 1, "the stop token must end rows at different steps"
    assert greedy_decode(model, input_ids, attention, max_new_tokens=12, stops={stop}) == expected


def test_bad_arguments(model_and_tokenizer, prompts) -> None:
    model, tokenizer = model_and_tokenizer
    with pytest.raises(EvaluationError, match="batch_size"):
        generate_answers(model, tokenizer, prompts, max_new_tokens=4, batch_size=0)
    with pytest.raises(EvaluationError, match="tokenize to nothing"):
        generate_answers(model, tokenizer, [""], max_new_tokens=4, batch_size=1)


def test_adapter_is_merged(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: a non-zero adapter, so merging it must change the logits.
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model(ids).logits
    merged, _ = load_model_for_eval(tiny_model_dir, adapter=tmp_path / "adapter")
    plain, _ = load_model_for_eval(tiny_model_dir)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
        assert not torch.allclose(plain(ids).logits, expected, atol=1e-5)
    assert not merged.training
    with pytest.raises(EvaluationError, match="adapter_config.json"):
        load_model_for_eval(tiny_model_dir, adapter=tmp_path)


def test_generation_precision() -> None:
    """bf16 where asked, or on 'auto' where the hardware has it natively; fp32 otherwise."""
    assert generation_dtype("auto", True) == "bfloat16" and generation_dtype("auto", False) == "float32"
    assert generation_dtype("bf16", False) == "bfloat16" and generation_dtype("fp32", True) == "float32"
    with pytest.raises(EvaluationError, match="auto, bf16 or fp32"):
        generation_dtype("fp16", True)


def test_bf16_generation_writes_answers(model_and_tokenizer, prompts) -> None:
    """A model cast to bf16 after loading (as the evaluation does after its fp32 NLL) generates whole answers."""
    import copy

    model, tokenizer = model_and_tokenizer
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    answers = generate_answers(bf16, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert len(answers) == len(prompts) and all(isinstance(a, str) and a for a in answers)


def test_predictions_roundtrip(tmp_path: Path) -> None:
    rows = [{"id": "a", "prediction": "VIOLATIONS: NONE\nDIRECTIVE: ünïcode"}, {"id": "b", "prediction": ""}]
    path = tmp_path / "preds" / "full.jsonl"
    write_predictions(path, rows)
    assert read_predictions(path) == rows
    assert [p.name for p in path.parent.iterdir()] == ["full.jsonl"]  # no temp file left behind
    path.write_text('{"id": "a"}\n{broken\n')
    with pytest.raises(EvaluationError, match="full.jsonl:2"):
        read_predictions(path)
