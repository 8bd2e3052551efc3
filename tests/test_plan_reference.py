"""The reference case at its real size: a 7B hub model planned from its config.json alone (shipped with the project,
no weights, no download), and the seed's infrastructure table reproduced row by row or flagged where our arithmetic
disagrees with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.config import load_config
from foundation.errors import ModelProvisioningError

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
# The parameter counts the model cards publish (and the meta-device count of each shipped config.json gives).
PUBLISHED_PARAMS = {
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "meta-llama/Llama-2-7b-chat-hf": 6_738_415_616,
    "meta-llama/Llama-2-13b-chat-hf": 13_015_864_320,
    "meta-llama/Llama-2-70b-chat-hf": 68_976_648_192,
}


@pytest.fixture()
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline, and an empty model cache: nothing to read weights from."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FINETUNE_MODEL_CACHE", str(tmp_path / "models"))
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def rows_1024():
    from finetune.reference_plan import Assumptions, reference_plans

    return reference_plans(Assumptions(seq_len=1024))


def test_the_shipped_architectures_parse_and_have_their_published_size() -> None:
    from finetune.models import planning_config, shipped_architecture, shipped_architectures
    from training.memory import config_shape

    assert shipped_architectures() == sorted(PUBLISHED_PARAMS)
    for repo, params in PUBLISHED_PARAMS.items():
        raw = json.loads(shipped_architecture(repo).read_text())
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                    "model_type", "torch_dtype"):
            assert key in raw, (repo, key)
        config, origin = planning_config(repo)
        assert "shipped with the project" in origin
        assert config_shape(config).n_params == params, repo


def test_the_gpu_config_names_a_7b_hub_model_and_the_cpu_demo_keeps_the_packaged_one() -> None:
    from finetune.models import hub_id, shipped_architecture
    from finetune.reference_plan import REFERENCE_RUN_MODEL

    gpu, cpu = load_config(ROOT / "configs/regulator.yaml"), load_config(ROOT / "configs/regulator-cpu.yaml")
    assert hub_id(gpu.model.ref) == ("Qwen/Qwen2.5-7B-Instruct", None)
    assert shipped_architecture(gpu.model.ref) is not None and REFERENCE_RUN_MODEL == gpu.model.ref
    assert cpu.model.ref == "packaged"


def test_plan_of_the_gpu_config_needs_no_weights_and_no_download(empty_hub: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(ROOT / "configs/regulator.yaml")]) == 0
    out = capsys.readouterr().out
    assert "7615.6 M parameters" in out and "shipped with the project" in out
    assert "chosen: ZeRO-2, offload none" in out  # the seed's ZeRO-2 on 8 x 80 GB, micro-batch 4, no checkpointing
    assert not empty_hub.exists() and not (empty_hub.parent / "models").exists()


def test_a_cached_config_json_comes_before_the_shipped_one(empty_hub: Path) -> None:
    """A snapshot holding only config.json (no weights) is what `plan` reads when the cache has it."""
    from finetune.models import planning_config
    from training.memory import config_shape

    repo = empty_hub / "models--Qwen--Qwen2.5-7B-Instruct"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    small = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "vocab_size": 1000, "tie_word_embeddings": True, "max_position_embeddings": 512}
    (repo / "snapshots" / COMMIT / "config.json").write_text(json.dumps(small))
    config, origin = planning_config("Qwen/Qwen2.5-7B-Instruct")
    assert "local hub cache" in origin and COMMIT in origin
    assert config_shape(config).n_params < 1_000_000
    _, shipped = planning_config(f"Qwen/Qwen2.5-7B-Instruct@{'0' * 40}")  # another revision: not cached
    assert "shipped with the project" in shipped


def test_a_hub_id_with_neither_cache_nor_shipped_architecture_is_refused(empty_hub: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    from finetune.models import planning_config

    with pytest.raises(ModelProvisioningError, match="no architecture shipped with the project"):
        planning_config("nobody/nothing-13b")
    assert main(["plan", str(ROOT / "configs/regulator.yaml"), "--set", "model.ref=nobody/nothing-13b"]) == 2
    err = capsys.readouterr().err
    for part in ("model.ref", "cannot be planned", "no config.json for it in the Hugging Face cache",
                 "finetune setup --model nobody/nothing-13b", "nobody--nothing-13b.json"):
        assert part in err, part
    assert "Traceback" not in err


# The seed's table as our arithmetic sees it at 1,024 tokens an example: (memory agrees, ZeRO stage and offload of
# the seed's configuration as planned, activation checkpointing, fewest GPUs that fit its column, time agrees).
EXPECTED_1024 = [
    ("7B, 4x A100 40GB, no offload", True, (3, "none"), True, 4, False),  # only ZeRO-3 shards 18N bytes to 28 GiB
    ("7B, 2x A100 40GB, ZeRO-3 + CPU offload", True, (3, "optimizer"), False, 1, False),
    ("13B, 8x A100 40GB, no offload", True, (3, "none"), True, 8, False),
    ("13B, 4x A100 40GB, ZeRO-3 + CPU offload", True, (3, "optimizer"), False, 1, False),
    ("70B, 8x A100 80GB, no offload", False, None, None, 24, False),  # 18N/8 = 145 GiB of states a GPU
    ("70B, 4x A100 80GB, ZeRO-3 + CPU offload", True, (3, "optimizer"), False, 1, False),
    ("70B, 16x H100 80GB, no offload", False, None, None, 24, False),  # 18N/16 = 73 GiB of states: > 74.5 raw
    ("70B, 8x H100 80GB, ZeRO-3 + CPU offload", True, (3, "optimizer"), False, 1, False),
    ("reference run, 8x A100 80GB, ZeRO-2", True, (2, "none"), False, 4, False),
]


def test_each_seed_row_is_reproduced_or_flagged(rows_1024) -> None:
    got = []
    for row in rows_1024:
        fit = row.fit
        got.append((row.setup.label, row.memory_agrees, (fit.plan.zero_stage, fit.plan.offload) if fit else None,
                    fit.checkpointing if fit else None, row.min_gpus, row.time_agrees))
    assert got == EXPECTED_1024
    notes = {row.setup.label: "; ".join(row.notes) for row in rows_1024}
    for label in ("70B, 8x A100 80GB, no offload", "70B, 16x H100 80GB, no offload"):
        assert "does not fit: even ZeRO-3" in notes[label] and "fits from 24 GPUs (3 nodes)" in notes[label]
        assert "with CPU offload it fits these" in notes[label]
    assert "ZeRO-2 does not fit" in notes["7B, 4x A100 40GB, no offload"]
    assert "ZeRO-2 with optimizer offload already fits" in notes["7B, 2x A100 40GB, ZeRO-3 + CPU offload"]
    assert "ZeRO-1 with no offload already fits" in notes["reference run, 8x A100 80GB, ZeRO-2"]
    # every time quote is several times our slowest estimate at 1,024 tokens an example
    assert all(row.hours[1] < row.setup.quoted_hours[0] for row in rows_1024)
    assert all("time: the seed's" in notes[row.setup.label] for row in rows_1024)


def test_at_llama_2s_full_context_the_seeds_hours_hold_for_four_rows() -> None:
    from finetune.reference_plan import Assumptions, reference_plans

    rows = reference_plans(Assumptions(seq_len=4096))
    agree = [row.setup.label for row in rows if row.time_agrees]
    assert agree == ["7B, 4x A100 40GB, no offload", "7B, 2x A100 40GB, ZeRO-3 + CPU offload",
                     "13B, 4x A100 40GB, ZeRO-3 + CPU offload", "70B, 4x A100 80GB, ZeRO-3 + CPU offload"]
    assert [row.memory_agrees for row in rows] == [e[1] for e in EXPECTED_1024]


def test_the_7b_no_offload_row_is_deepspeeds_zero3_arithmetic(rows_1024) -> None:
    """7B on 4 x 40 GB: 18 bytes a parameter sharded 4 ways plus the largest layer gathered (DeepSpeed's ZeRO-3
    estimator), ~28 GiB of model states; ZeRO-2 keeps 2N of weights unsharded and does not fit."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    from finetune.models import planning_config
    from training.memory import GiB, config_shape

    shape = config_shape(planning_config("meta-llama/Llama-2-7b-chat-hf")[0])
    plan = rows_1024[0].fit.plan
    states = plan.device_total - plan.activations_checkpointed
    _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(shape.n_params, shape.largest_layer_params,
                                                         num_gpus_per_node=4, cpu_offload=False)
    assert states == pytest.approx(ds_gpu, rel=1e-6)
    assert 28 < states / GiB < 29 and plan.device_total / GiB <= 40e9 * 0.9 / GiB


def test_time_parts_add_up_and_invert(rows_1024) -> None:
    from finetune.models import planning_config
    from finetune.reference_plan import Assumptions, time_parts
    from training.memory import config_shape, flops_per_token

    a = Assumptions()
    row = rows_1024[0]
    shape = config_shape(planning_config(row.setup.architecture)[0])
    parts = time_parts(shape, row.setup, row.fit, a)
    tokens = 5000 * 3 * 1024
    assert parts.work_at_peak == pytest.approx(tokens * flops_per_token(shape, seq_len=1024, checkpointing=True)
                                               / (4 * 312e12))
    assert parts.offload == 0 and parts.collectives > 0
    assert row.hours == parts.hours(a.mfu)
    for mfu in (0.05, 0.3):
        assert parts.implied_mfu(parts.hours((mfu, mfu))[1]) == pytest.approx(mfu)


def test_plan_prints_the_reference_table(capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", "--reference-table"]) == 0
    out = capsys.readouterr().out
    for label, *_ in EXPECTED_1024:
        assert label in out
    assert out.count("memory: NO") == 2 and "Assumptions: 3 epochs; every example 1024 tokens" in out
    with pytest.raises(SystemExit):
        main(["plan"])  # neither a config nor the table: a usage error


def test_the_audit_compares_with_the_same_seed_table() -> None:
    from finetune.reference_plan import REFERENCE_TABLE

    assert [(r["model"], r["params"], r["gpus"], r["gpu"], r["peak_tflops"], r["quoted_hours"])
            for r in REFERENCE_TABLE] == [
        ("7B", 7e9, 4, "A100 40GB", 312, (4, 8)), ("13B", 13e9, 8, "A100 40GB", 312, (8, 16)),
        ("70B", 70e9, 8, "A100 80GB", 312, (24, 48)), ("70B", 70e9, 16, "H100 80GB", 989, (12, 24))]
