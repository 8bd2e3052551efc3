"""End to end on the real pretrained model: the packaged SmolLM2-135M-Instruct through all seven stages.

Budgets are cut to a few steps and examples so it fits CI; the full CPU demo (`make demo`) is the real run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness
from transformers import AutoModelForCausalLM

from flows.finetune import finetune
from finetune.registry import production_version, read_card, resolve_model

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {
    "data.n_examples": 120, "data.train_balanced": 24, "data.train_drills": 8, "model.max_seq_len": 1024, "train.max_steps": 2,
    "train.checkpoint_every_steps": 1, "train.curve_points": 1, "train.curve_examples": 4,
    "lora.sweep_lrs": [1e-3, 2e-3], "lora.sweep_steps": 1, "eval.base_max_new_tokens": 16,
    "eval.max_examples": 3, "eval.max_new_tokens": 32, "eval.bootstrap_samples": 100, "eval.forgetting_prompts": 4,
    "gate.f1_floor": 0.0, "gate.rouge_floor": 0.0, "gate.forgetting_ceiling": 100.0, "gate.min_margin_over_lora": -1.0,
    "gate.use_ci_lower_bound": False, "gate.real_max_false_violations": None, "gate.real_max_invented_figures": None,
    "gate.real_max_unreadable_answers": None,
    "audit.min_examples_for_full_ft": 10,
}


@pytest.mark.slow
def test_packaged_model_through_every_stage(base_model: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    with prefect_test_harness(server_startup_timeout=120):
        summary = finetune(config_path=str(ROOT / "configs/regulator-cpu.yaml"),
                           overrides={**OVERRIDES, "gate.registry_dir": str(registry)})
    stages = summary["stages"]
    assert list(stages) == ["audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate",
                            "deployment_gate"]
    assert stages["audit"]["figures"]["n_params"] == 134_515_008
    data_stats = json.loads((Path(stages["prepare_data"]["out_dir"]) / "stats.json").read_text())
    assert data_stats["splits"]["train"]["case_kind"]["drill"] == 8  # the decision drills reach training only
    assert "drill" not in data_stats["splits"]["test"]["case_kind"]
    full = json.loads((Path(stages["train_full"]["out_dir"]) / "train_summary.json").read_text())
    assert full["steps"] == 2 and full["trainable_params"] == 134_515_008
    lora = json.loads((Path(stages["train_lora"]["out_dir"]) / "train_summary.json").read_text())
    # r=64 on all 7 linear projections of 30 layers: 30 * 64 * (2*1152 + 2*768 + 3*2112) = 19,537,920 (14.5%)
    assert lora["trainable_params"] == 19_537_920
    metrics = json.loads((Path(stages["evaluate"]["out_dir"]) / "metrics.json").read_text())
    assert set(metrics["scores"]) == {"base", "LoRA", "full FT"}
    # the learning curve (step 0 and the last step, for both trainers) and the LoRA sweep reach the report
    assert [r["step"] for r in metrics["learning_curve"]["full FT"]] == [0, 2]
    assert [r["step"] for r in metrics["learning_curve"]["LoRA"]] == [0, 2]
    assert [t["lr"] for t in metrics["lora_lr_sweep"]["trials"]] == [1e-3, 2e-3]
    assert lora["lr"] == metrics["lora_lr_sweep"]["chosen_lr"]
    assert (Path(stages["evaluate"]["out_dir"]) / "learning_curve.png").stat().st_size > 0
    assert Path(summary["run_dir"], "summary.json").is_file() and summary["result"]["gate"]["passed"]
    assert (Path(stages["evaluate"]["out_dir"]) / "per_code_f1.png").stat().st_size > 0
    version = production_version(registry)
    assert version == summary["result"]["promoted_version"]
    assert read_card(registry, version)["data_hash"] == stages["prepare_data"]["content_hash"]
    model = AutoModelForCausalLM.from_pretrained(resolve_model(registry, "production"))
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
