"""Run-config validation: every problem reported at once, each naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finetune.config import (RunConfig, apply_overrides, config_reference, dotted, fp32_budget_enabled, load_config,
                             validate_config)
from foundation.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_valid() -> None:
    gpu = load_config(ROOT / "configs/regulator.yaml")
    cpu = load_config(ROOT / "configs/regulator-cpu.yaml")
    assert (gpu.train.lr, gpu.train.warmup_ratio, gpu.train.min_lr_ratio) == (2e-5, 0.05, 0.1)
    assert (gpu.train.epochs, gpu.train.effective_batch_size, gpu.train.precision) == (3, 64, "bf16")
    assert (gpu.train.zero_stage, gpu.train.grad_clip, gpu.lora.r) == (2, 1.0, 64)
    assert (gpu.data.n_examples, gpu.world_size()) == (6800, 8)
    assert gpu.train.micro_batch_size * gpu.grad_accum_steps() * gpu.world_size() == 64
    assert cpu.hardware.accelerator == "cpu"


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"train": {"lr": -1}}, ["train.lr"]),
        ({"train": {"lr": 1e-4, "epochs": 0}, "lora": {"r": 0}}, ["train.epochs", "lora.r"]),
        ({"trian": {"lr": 1e-4}}, ["trian"]),
        ({"train": {"zero_stage": 5}}, ["train.zero_stage"]),
        ({"hardware": {"accelerator": "tpu"}}, ["hardware.accelerator"]),
        ({"data": {"split_fractions": [0.5, 0.5, 0.5]}}, ["data.split_fractions"]),
        ({"train": {"effective_batch_size": 10, "micro_batch_size": 4}}, ["train.effective_batch_size"]),
        ({"hardware": {"num_nodes": 2}}, ["hardware.hostfile"]),
        ({"train": {"zero_stage": 2, "offload": "optimizer+params"}}, ["train.offload"]),
        ({"data": {"source": "/no/such/file.jsonl"}}, ["data.source"]),
        ({"model": {"ref": "/no/such/model"}}, ["model.ref"]),
        ({"name": "bad name!"}, ["name"]),
    ],
)
def test_bad_config_names_every_field(raw: dict, fields: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(raw, "bad.yaml")
    message = str(info.value)
    assert "bad.yaml" in message
    for field in fields:
        assert field in message, message
    assert len(info.value.problems) == len(fields)


def test_overrides_parse_yaml_scalars_and_nested_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "train": {"lr": 1e-5}}))
    cfg = load_config(path, ["train.lr=3e-5", "train.zero_stage=3", "gate.dry_run=true"])
    assert (cfg.train.lr, cfg.train.zero_stage, cfg.gate.dry_run) == (3e-5, 3, True)
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["train.lr"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_every_field_is_documented() -> None:
    ref = config_reference()
    for section, field in RunConfig.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        for name, f in (sub or {}).items():
            assert f.description, f"{section}.{name} has no description"
            assert f"`{section}.{name}`" in ref


def test_the_fp32_host_budget_applies_only_where_bf16_is_not_native() -> None:
    path = ROOT / "configs/regulator-cpu.yaml"
    shipped = load_config(path)
    assert shipped.fp32_host, "the CPU demo config carries a budget for CPUs without native bf16"
    fp32 = load_config(path, native_bf16=False)
    for key, value in shipped.fp32_host.items():
        assert dotted(fp32.model_dump(mode="json"), key) == value
    assert fp32.train.max_steps < shipped.train.max_steps and fp32.lora.sweep_lrs == []
    # a bf16 host, a config read away from its host, and an explicit precision: the config as written
    for cfg in (load_config(path, native_bf16=True), load_config(path),
                load_config(path, ["train.precision=fp32"], native_bf16=False)):
        assert cfg.train.max_steps == shipped.train.max_steps and cfg.data.train_drills == shipped.data.train_drills
    # the user's --set wins over the budget, the budget's other keys still apply
    mine = load_config(path, ["train.max_steps=70"], native_bf16=False)
    assert (mine.train.max_steps, mine.data.train_drills) == (70, fp32.data.train_drills)


@pytest.mark.parametrize(("budget", "problem"), [
    ({"train.max_stepz": 3}, "fp32_host.train.max_stepz: not a config field"),
    ({"max_steps": 3}, "fp32_host.max_steps: not a config field"),
    ({"train.max_steps": -3}, "fp32_host: train.max_steps: Input should be greater than or equal to 1"),
])
def test_a_bad_fp32_host_budget_is_named(budget: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/regulator-cpu.yaml", {"fp32_host": budget})
    assert any(line.startswith(problem) for line in err.value.problems), err.value.problems


def test_the_fp32_host_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINETUNE_FP32_HOST", raising=False)
    assert fp32_budget_enabled()
    monkeypatch.setenv("FINETUNE_FP32_HOST", "0")
    assert not fp32_budget_enabled()
