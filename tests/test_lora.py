"""The peft LoRA baseline: trains, only adapter weights train, the adapter loads with peft, merge works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foundation.errors import ConfigError
from tests.test_full_ft import make_token_dataset
from training.deepspeed_config import build_deepspeed_config
from training.full_ft import TrainSpec
from training.lora import LoraSpec, train_lora


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tokenizer_dir: Path) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lora")
    dataset = make_token_dataset(root / "dataset", tokenizer_dir)
    spec = LoraSpec(model_dir=str(tiny_model_dir), dataset_dir=str(dataset), output_dir=str(root / "out"),
                    micro_batch_size=4, grad_accum_steps=2, max_steps=6, lr=3e-2, r=8, alpha=16, dropout=0.0,
                    merge=True, seed=1)
    return root / "out", train_lora(spec)


def test_lora_trains_only_adapter(lora_run: tuple[Path, dict]) -> None:
    out, summary = lora_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert set(records[0]) >= {"step", "total_steps", "epoch", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s",
                               "grad_norm"}
    assert records[-1]["loss"] < records[0]["loss"] - 0.3
    assert 0 < summary["trainable_params"] < summary["total_params"] / 10
    assert summary["steps"] == 6 and summary["tokens"] == records[-1]["tokens"]


def test_adapter_loads_with_peft_and_merge_matches(lora_run: tuple[Path, dict], tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = lora_run
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    targets = {name.split(".")[-1] for name in config["target_modules"]}  # peft may store full module paths
    assert config["r"] == 8 and targets >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "lm_head" not in targets
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad) or not any(
        p.requires_grad for p in peft_model.parameters()
    )
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    with torch.no_grad():
        lora_logits = peft_model.eval()(ids).logits
        merged_logits = merged.eval()(ids).logits
        base_logits = base.eval()(ids).logits
    assert torch.allclose(lora_logits, merged_logits, atol=1e-4)
    assert not torch.allclose(lora_logits, base_logits, atol=1e-4)
    assert (out / "merged" / "tokenizer.json").is_file()


def test_matching_spec_keeps_the_token_budget() -> None:
    cfg = build_deepspeed_config(micro_batch_size=4, grad_accum_steps=8, world_size=2, zero_stage=2, lr=2e-5,
                                 on_cpu=True, bf16=True, grad_clip=0.5)
    full = TrainSpec(model_dir="m", dataset_dir="d", output_dir="o", ds_config=cfg, epochs=3, max_steps=100, seed=7,
                     first_case_kinds=["drill"])
    lora = LoraSpec.matching(full, output_dir="lo", world_size=2)
    assert lora.first_case_kinds == ["drill"]  # the same curriculum: the very same examples in the same order
    assert (lora.micro_batch_size, lora.grad_accum_steps) == (4, 16)
    assert (lora.epochs, lora.max_steps, lora.seed, lora.bf16, lora.grad_clip) == (3, 100, 7, True, 0.5)
    assert lora.lr == 2e-4  # its own learning rate, not full FT's


def test_invalid_spec() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        train_lora(LoraSpec(model_dir="m", dataset_dir="d", output_dir="o", dropout=1.5, r=0))


@pytest.fixture(scope="module")
def regulator_dataset(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A prepared regulator dataset (generated filings, rule-engine labels), tokenised with the real tokenizer."""
    from transformers import AutoTokenizer

    from data_contracts.contracts import ContractLimits
    from data_contracts.prepare import prepare_dataset
    from regulator.generator import generate_dataset

    root = tmp_path_factory.mktemp("regulator")
    raw = generate_dataset(96, seed=2, out_dir=root / "raw", n_train_balanced=32)  # every code in train
    manifest = prepare_dataset(raw=raw, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir), out_dir=root,
                               seed=2, max_seq_len=1024, limits=ContractLimits(max_tokens=1024),
                               split_fractions=(0.5, 0.25, 0.25))
    return Path(manifest["dataset_dir"])


def test_learning_curve_and_lr_sweep(regulator_dataset: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.curve import read_curve
    from training.lora import sweep_lr

    spec = LoraSpec(model_dir=str(tiny_model_dir), dataset_dir=str(regulator_dataset), output_dir=str(tmp_path / "out"),
                    micro_batch_size=2, max_steps=2, lr=1e-3, r=4, alpha=8, dropout=0.0, seed=1, curve_points=2,
                    curve_examples=4, decision_weight=5.0, first_case_kinds=["drill"])
    summary = train_lora(spec)
    curve = read_curve(tmp_path / "out" / "curve.jsonl")
    assert [(r["step"], r["examples_seen"]) for r in curve] == [(0, 0), (1, 2), (2, 4)]
    assert all(0.0 <= r["tf_check_accuracy"] <= 1.0 and r["tf_examples"] == 4 for r in curve)
    assert summary["final_scores"]["step"] == 2 and summary["curve_s"] > 0
    # scoring time is kept out of training time (it once was subtracted without having been counted)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["tokens_per_s"] < 1e6 for r in records) and summary["wall_time_s"] > 0
    sweep = sweep_lr(spec, [1e-4, 3e-2], steps=1, work_dir=tmp_path / "sweep")
    assert [t["lr"] for t in sweep["trials"]] == [1e-4, 3e-2] and sweep["steps"] == 1
    best = max(sweep["trials"], key=lambda t: (t["tf_f1_micro"] or -1.0, t["tf_check_accuracy"] or -1.0))
    assert sweep["chosen_lr"] == best["lr"]
    with pytest.raises(ConfigError, match="at least one"):
        sweep_lr(spec, [], steps=1, work_dir=tmp_path / "none")
