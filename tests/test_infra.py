"""Infra detection on this machine and the decisions infra_check makes from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from finetune.config import load_config
from foundation.errors import InfraError
from finetune.setup_plan import choose_training_setup
from training.infra import detect_infra
from training.memory import model_shape

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory):
    return detect_infra(tmp_path_factory.mktemp("disk"))


def test_detects_this_cpu_machine(infra) -> None:
    import torch

    assert infra.accelerator == ("cuda" if torch.cuda.is_available() else "cpu")
    assert infra.cpu_cores >= 1 and infra.cpu_ram_gb > 1 and infra.disk_free_gb > 0
    assert infra.deepspeed_version == "0.19.8"
    assert set(infra.ds_ops) == {"cpu_adam", "fused_adam"}
    if infra.accelerator == "cpu":
        assert infra.comm_backend == "gloo" and infra.gpu_count == 0


def test_cpu_setup_writes_a_gloo_friendly_deepspeed_config(infra, base_model: Path) -> None:
    cfg = load_config(ROOT / "configs/regulator-cpu.yaml")
    setup = choose_training_setup(cfg, replace(infra, accelerator="cpu", gpu_count=0), model_shape(base_model))
    ds = setup.ds_config
    assert setup.world_size == 1
    assert ds["train_batch_size"] == cfg.train.effective_batch_size
    assert ds["optimizer"]["params"].get("torch_adam") is True
    assert ds["zero_optimization"]["stage"] == setup.zero_stage
    assert setup.bf16 == infra.bf16_supported
    uses_bf16 = ds.get("torch_autocast", {}).get("enabled", False) or ds.get("bf16", {}).get("enabled", False)
    assert uses_bf16 == setup.bf16


def test_declared_gpus_missing_is_an_error_unless_fallback(infra, base_model: Path) -> None:
    cpu_only = replace(infra, accelerator="cpu", gpu_count=0, gpu_memory_gb=[], gpu_names=[])
    cfg = load_config(ROOT / "configs/regulator.yaml")
    with pytest.raises(InfraError, match="declared 8 GPU"):
        choose_training_setup(cfg, cpu_only, model_shape(base_model))
    fallback = load_config(ROOT / "configs/regulator.yaml", {"hardware.allow_fallback": True})
    setup = choose_training_setup(fallback, cpu_only, model_shape(base_model))
    assert setup.cfg.hardware.accelerator == "cpu" and setup.world_size == 1
    assert any("fallback" in n for n in setup.notes)
    assert cfg.train.torch_compile and not setup.cfg.train.torch_compile  # compiling is for the GPU run only


def test_not_enough_disk_for_checkpoints(infra, base_model: Path) -> None:
    cfg = load_config(ROOT / "configs/regulator-cpu.yaml")
    with pytest.raises(InfraError, match="checkpoints need"):
        choose_training_setup(cfg, replace(infra, accelerator="cpu", disk_free_gb=0.1), model_shape(base_model))


@pytest.mark.parametrize(("flags", "cap", "native"), [
    (["amx_bf16", "avx512_bf16"], None, True),
    (["amx_bf16", "avx512_bf16"], "avx2", False),          # oneDNN capped below bf16: emulated, as on an AVX2 CPU
    (["amx_bf16", "avx512_bf16"], "AVX512_CORE_AMX", True),
    (["avx512_bf16"], "AVX512_CORE_VNNI", False),
    ([], None, False),
])
def test_native_bf16_follows_the_cpu_and_the_onednn_cap(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                        cap: str | None, native: bool) -> None:
    import torch

    from training import infra as infra_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(infra_module, "cpu_bf16_flags", lambda: flags)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    ok, why = infra_module.native_bf16()
    assert ok is native
    assert ("ONEDNN_MAX_CPU_ISA" in why) == (bool(flags) and not native)
