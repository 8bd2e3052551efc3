"""The flow spine on a real (temporary) Prefect server: caching across runs, rebuilds, retries, run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.finetune import finetune
from foundation.paths import COMPLETE_MARKER

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "regulator-cpu.yaml")


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


async def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def _run(**kwargs):
    state = finetune(config_path=CONFIG, stop_after="infra_check", return_state=True, **kwargs)
    return state, state.result()


def test_second_run_is_cached_and_a_deleted_output_rebuilds(tmp_path: Path) -> None:
    import asyncio

    # a seed of its own: infra_check's key leaves the data out, so another test's run of this config (test_reviews)
    # would otherwise have cached it already
    overrides = {"name": "spine-cache", "train.seed": 5}
    first_state, first = _run(overrides=overrides)
    assert set(first["stages"]) == {"audit", "infra_check"}
    assert asyncio.run(_task_states(first_state.state_details.flow_run_id)) == {"audit": "Completed", "infra_check": "Completed"}

    second_state, second = _run(overrides=overrides)
    assert asyncio.run(_task_states(second_state.state_details.flow_run_id)) == {"audit": "Cached", "infra_check": "Cached"}
    assert second["run_dir"] != first["run_dir"]
    for stage in ("audit", "infra_check"):
        assert second["stages"][stage]["out_dir"] == first["stages"][stage]["out_dir"]
        assert (Path(second["run_dir"]) / stage / COMPLETE_MARKER).is_file()

    shutil.rmtree(first["stages"]["infra_check"]["out_dir"])
    (Path(first["stages"]["audit"]["out_dir"]) / "audit.md").write_text("corrupted")
    third_state, third = _run(overrides=overrides)
    assert asyncio.run(_task_states(third_state.state_details.flow_run_id)) == {"audit": "Completed", "infra_check": "Completed"}
    ds_config = Path(third["stages"]["infra_check"]["out_dir"]) / "ds_config.json"
    assert json.loads(ds_config.read_text())["train_batch_size"] == 4
    assert "Audit" in (Path(third["stages"]["audit"]["out_dir"]) / "audit.md").read_text()


def test_a_stage_that_fails_once_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINETUNE_INJECT_FAULTS", "audit,infra_check")
    monkeypatch.setenv("FINETUNE_FAULT_DIR", str(tmp_path))
    monkeypatch.setattr("tasks.stage.RETRY_DELAY_S", 0)
    state, result = _run(overrides={"name": "spine-retry", "train.seed": 7})
    assert state.is_completed()
    assert (tmp_path / "fault-audit").is_file() and (tmp_path / "fault-infra_check").is_file()
    assert set(result["stages"]) == {"audit", "infra_check"}


def test_bad_config_fails_the_flow_with_the_field_named() -> None:
    state = finetune(config_path=CONFIG, overrides={"train.lr": -1}, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="train.lr"):
        state.result()


def test_a_cpu_without_native_bf16_runs_the_configs_fp32_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    import flows.finetune as flow_module

    monkeypatch.setenv("FINETUNE_FP32_HOST", "1")  # the suite keeps it off (conftest); on here, on a faked host
    monkeypatch.setattr(flow_module, "native_bf16", lambda: (False, "no amx_bf16/avx512_bf16 CPU flag (test)"))
    summary = finetune(config_path=CONFIG, overrides={"name": "spine-fp32", "train.max_steps": 77},
                       stop_after="audit")
    written = yaml.safe_load((Path(summary["run_dir"]) / "config.yaml").read_text())
    budget = written["fp32_host"]
    assert budget["train.max_steps"] != 77 and written["train"]["max_steps"] == 77  # the caller's override wins
    assert written["data"]["train_drills"] == budget["data.train_drills"]
    assert written["lora"]["sweep_lrs"] == budget["lora.sweep_lrs"]
    assert "fp32_host budget applies" in summary["fp32_host_budget"] and "train.max_steps=77" in summary["fp32_host_budget"]


async def _task_runs(flow_run_id) -> dict[str, tuple[str, int]]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: (r.state.name, r.run_count) for r in runs}


def test_the_stage_folder_is_the_cache_whatever_prefect_holds() -> None:
    import asyncio
    import os

    first_state, first = _run(overrides={"name": "spine-store", "train.seed": 3})
    # What another server (or a wiped PREFECT_HOME) would see: no Prefect result or cache record at all.
    store = Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    shutil.rmtree(store, ignore_errors=True)
    second_state, second = _run(overrides={"name": "spine-store", "train.seed": 3})
    runs = asyncio.run(_task_runs(second_state.state_details.flow_run_id))
    assert runs == {"audit": ("Cached", 1), "infra_check": ("Cached", 1)}
    for stage in ("audit", "infra_check"):
        assert second["stages"][stage]["content_hash"] == first["stages"][stage]["content_hash"]


def test_a_permanent_error_is_not_retried() -> None:
    import asyncio

    from foundation.errors import InfraError

    overrides = {"name": "spine-nogpu", "hardware.accelerator": "cuda", "hardware.gpus_per_node": 8,
                 "hardware.gpu_memory_gb": 80, "hardware.allow_fallback": False, "train.zero_stage": 2,
                 "train.offload": "none", "train.effective_batch_size": 32}
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="infra_check", return_state=True)
    assert state.is_failed()
    with pytest.raises(InfraError, match="declared hardware is not present"):
        state.result()
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    assert runs["infra_check"] == ("Failed", 1)  # one attempt: a missing GPU does not appear on a retry


def test_a_folder_of_filings_mixed_with_generated_reports_is_prepared(tmp_path: Path) -> None:
    """data.source = a folder as a supervisor receives filings (a bulk zip of instances plus loose ones), topped up
    with generated reports (data.mix_synthetic): labelled by the rule engine, through the same contracts, split."""
    import zipfile

    from regulator.generator import generate_dataset

    generate_dataset(48, seed=8, out_dir=tmp_path / "received")
    files = sorted((tmp_path / "received" / "xbrl").iterdir())
    folder = tmp_path / "filings"
    folder.mkdir()
    with zipfile.ZipFile(folder / "bulk.zip", "w") as zf:
        for src in files[:32]:
            zf.write(src, src.name)
    for src in files[32:]:
        (folder / src.name).write_bytes(src.read_bytes())
    overrides = {"name": "spine-filings", "data.source": str(folder), "data.mix_synthetic": 160,
                 "data.train_balanced": 0, "data.train_drills": 16, "data.train_gap_drills": 4}
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="prepare_data", return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()["stages"]["prepare_data"]["figures"]["rows"]
    # decision drills and gap drill pairs go with any source, to train only
    assert sum(rows.values()) == 48 + 160 + 16 + 2 * 4, rows
    assert set(state.result()["stages"]["prepare_data"]["figures"]["provenance"]) == {
        "filings", "generated", "drills", "gap_drills"}


def test_an_empty_drop_folder_trains_on_the_generated_and_real_set_banks_are_left_out(tmp_path: Path) -> None:
    """The weekly deployment's drop folder before its first delivery: the generated reports alone (not an error);
    a delivery that holds a filing of a bank of the real evaluation set (eval.real_source) is trained on without
    it, and data.md says so (what is evaluated on is never trained on, by bank)."""
    from regulator.generator import generate_dataset

    drop = tmp_path / "incoming"
    drop.mkdir()
    (drop / "README.md").write_text("not a filing")
    overrides = {"name": "spine-drop", "data.source": str(drop), "data.mix_synthetic": 160, "data.train_balanced": 0,
                 "data.train_drills": 0, "data.train_gap_drills": 0}
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="prepare_data", return_state=True)
    assert state.is_completed(), state.message
    figures = state.result()["stages"]["prepare_data"]["figures"]
    assert sum(figures["rows"].values()) == 160 and set(figures["provenance"]) == {"generated"}

    real = ROOT / "tests" / "fixtures" / "real" / "ffiec"
    for name in ("bank-2758613-2026-06-30.xml", "bank-493741-2026-06-30.xml"):
        (drop / name).write_bytes((real / name).read_bytes())
    generate_dataset(16, seed=3, out_dir=tmp_path / "arrived", eu_fraction=0.0)
    for src in (tmp_path / "arrived" / "xbrl").iterdir():
        (drop / src.name).write_bytes(src.read_bytes())
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="prepare_data", return_state=True)
    assert state.is_completed(), state.message
    stage = state.result()["stages"]["prepare_data"]
    assert stage["figures"]["provenance"]["filings"]["rows"] == 16  # the two real-set banks' filings left out
    data_md = (Path(stage["out_dir"]) / "data.md").read_text()
    assert "Filings not trained on" in data_md and "2758613" in data_md and "493741" in data_md


def test_train_full_on_two_nodes_is_one_node_of_two_ranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The flow's train_full with hardware.num_nodes 2: two torch elastic agents of one rank each (two nodes
    rehearsed on 127.0.0.1, c10d rendezvous, the real DeepSpeed engine on gloo) train the same loss curve as one
    node of two ranks on the same data and seed (tests/test_full_ft.py kills a node and resumes)."""
    from tests.prefect_stack import small_overrides

    def train(name: str, **hardware) -> tuple[dict, Path]:
        overrides = small_overrides(tiny_model_dir, **{"name": name, "eval.real_source": None,
                                                       "train.micro_batch_size": 2,  # x 2 ranks = the batch of 4
                                                       **{f"hardware.{k}": v for k, v in hardware.items()}})
        state = finetune(config_path=CONFIG, overrides=overrides, stop_after="train_full", return_state=True)
        assert state.is_completed(), state.message
        stage = state.result()["stages"]["train_full"]
        return stage["figures"], Path(stage["out_dir"])

    one, one_dir = train("spine-one-node", cpu_processes=2)
    two, two_dir = train("spine-two-nodes", cpu_processes=1, num_nodes=2, rendezvous="c10d", local_nodes=True)
    assert one["world_size"] == two["world_size"] == 2 and one["steps"] == two["steps"] == 4
    log = (two_dir / "train.log").read_text()
    assert "--rdzv_backend c10d" in log and "[node 0]" in log and "[node 1]" in log
    curve = {r["step"]: r["loss"] for r in map(json.loads, (two_dir / "metrics.jsonl").read_text().splitlines())}
    reference = {r["step"]: r["loss"] for r in map(json.loads, (one_dir / "metrics.jsonl").read_text().splitlines())}
    assert sorted(curve) == sorted(reference) == [1, 2, 3, 4]
    for step, loss in curve.items():
        assert loss == pytest.approx(reference[step], rel=1e-4), (step, loss, reference[step])
    assert (two_dir / "model" / "config.json").is_file()


def test_train_full_with_the_fsdp_backend(tiny_model_dir: Path) -> None:
    """train.backend fsdp through the flow: the audit plans FSDP2 full sharding, train_full trains two ranks with
    PyTorch FSDP2 (gloo) and seals an exported Hugging Face model (tests/test_fsdp.py compares it with DeepSpeed)."""
    from tests.prefect_stack import small_overrides

    overrides = small_overrides(tiny_model_dir, **{"name": "spine-fsdp", "eval.real_source": None,
                                                   "train.backend": "fsdp", "train.micro_batch_size": 2,
                                                   "hardware.cpu_processes": 2})
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="train_full", return_state=True)
    assert state.is_completed(), state.message
    stages = state.result()["stages"]
    assert stages["audit"]["figures"]["chosen"]["backend"] == "fsdp"
    figures, out = stages["train_full"]["figures"], Path(stages["train_full"]["out_dir"])
    assert figures["backend"] == "fsdp" and figures["world_size"] == 2 and figures["steps"] == 4
    assert (out / "model" / "config.json").is_file()
