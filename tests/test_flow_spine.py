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

    overrides = {"name": "spine-cache"}
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
                 "data.train_balanced": 0, "data.train_drills": 16}
    state = finetune(config_path=CONFIG, overrides=overrides, stop_after="prepare_data", return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()["stages"]["prepare_data"]["figures"]["rows"]
    assert sum(rows.values()) == 48 + 160 + 16, rows  # decision drills go with any source, to train only


def test_weekly_runs_from_a_drop_folder_are_judged_against_production(tiny_model_dir: Path,
                                                                       tmp_path: Path) -> None:
    """The weekly run on a drop folder of filings (data.source, topped up by data.mix_synthetic), champion /
    challenger: the first promotion has nothing to compare with and says so; a run with no new filings reuses every
    training and evaluation stage and says "no new data"; after filings arrive it retrains, the production model
    answers the same test split (stage evaluate_production) and the gate compares; a re-run reuses production's
    answers (Cached); a candidate required to beat production by 0.5 F1 is rejected. The card records provenance."""
    import asyncio

    from finetune.registry import read_card, read_history
    from foundation.errors import GateRejected
    from regulator.generator import generate_dataset
    from tests.prefect_stack import small_overrides

    generate_dataset(64, seed=21, out_dir=tmp_path / "received")
    arrived = sorted((tmp_path / "received" / "xbrl").iterdir())
    drop = tmp_path / "drop"
    drop.mkdir()
    for src in arrived[:40]:
        (drop / src.name).write_bytes(src.read_bytes())
    overrides = small_overrides(tiny_model_dir, **{
        "name": "spine-weekly", "gate.registry_dir": str(tmp_path / "registry"), "eval.real_source": None,
        "gate.max_regression_vs_production": 0.0, "data.source": str(drop), "data.mix_synthetic": 100,
        "data.train_balanced": 0})

    def run(**extra):
        state = finetune(config_path=CONFIG, overrides={**overrides, **extra}, return_state=True)
        return state, asyncio.run(_task_states(state.state_details.flow_run_id))

    def criterion(state, name: str) -> dict:
        (found,) = [c for c in state.result()["result"]["gate"]["decision"]["criteria"] if c["name"] == name]
        return found

    first, states = run()
    assert "evaluate_production" not in states and first.result()["result"]["gate_passed"]
    v1 = first.result()["result"]["promoted_version"]
    assert "no model in production yet" in criterion(first, "vs_production")["message"]
    provenance = read_card(tmp_path / "registry", v1)["data_provenance"]
    assert provenance["filings"]["rows"] == 40 and provenance["generated"]["rows"] == 100
    assert sum(n for form, n in provenance["filings"]["forms"].items()) == 40

    same, states = run()  # no new filings
    assert {states[s] for s in ("prepare_data", "train_full", "train_lora", "evaluate")} == {"Cached"}
    assert "evaluate_production" not in states and "no new data" in same.result()["result"]["no_new_data"]
    assert "is production " + v1 + " itself" in criterion(same, "vs_production")["message"]
    assert len(read_history(tmp_path / "registry")) == 1  # nothing switched

    for src in arrived[40:]:  # filings arrive
        (drop / src.name).write_bytes(src.read_bytes())
    demanding, states = run(**{"gate.max_regression_vs_production": -0.5})  # must beat production by 0.5 F1
    assert states["prepare_data"] == states["train_full"] == states["evaluate_production"] == "Completed"
    assert demanding.is_failed()
    with pytest.raises(GateRejected, match=f"not_worse_than_production.*production {v1}"):
        demanding.result()

    second, states = run()  # the same candidate, the usual margin: production's answers are reused
    assert states["train_full"] == states["evaluate_production"] == "Cached"
    compared = criterion(second, "not_worse_than_production")
    assert compared["passed"] and v1 in compared["message"] and compared["figure"] is not None
    v2 = second.result()["result"]["promoted_version"]
    assert v2 != v1 and read_card(tmp_path / "registry", v2)["data_provenance"]["filings"]["rows"] == 64
    gate_dir = Path(second.result()["stages"]["deployment_gate"]["out_dir"])
    assert f"production {v1}" in (gate_dir / "decision.md").read_text()


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
