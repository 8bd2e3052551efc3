"""Hugging Face Hub ids as model.ref, resolved offline from a cache laid out as the hub's (a tiny model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foundation.errors import ModelProvisioningError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tiny-org/tiny-llama`` at one commit, ``main`` pointing at it, as huggingface_hub lays out its cache."""
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_a_hub_id_resolves_to_its_cached_snapshot(hub_cache: Path) -> None:
    from finetune.config import RunConfig, cross_field_problems
    from finetune.models import hub_id, model_config, resolve_model

    assert hub_id("tiny-org/tiny-llama") == ("tiny-org/tiny-llama", None)
    assert hub_id("tiny-org/tiny-llama@v1.0") == ("tiny-org/tiny-llama", "v1.0")
    assert hub_id("packaged") is None and hub_id("/abs/path") is None
    folder = resolve_model("tiny-org/tiny-llama")
    assert folder.name == COMMIT and (folder / "config.json").is_file()  # the commit is the folder's name
    assert resolve_model(f"tiny-org/tiny-llama@{COMMIT}") == folder
    assert model_config("tiny-org/tiny-llama").model_type == "llama"
    assert cross_field_problems(RunConfig.model_validate({"model": {"ref": "tiny-org/tiny-llama"}})) == []


def test_a_missing_hub_model_is_refused_with_what_to_do(hub_cache: Path) -> None:
    from finetune.cli import main
    from finetune.models import resolve_model

    with pytest.raises(ModelProvisioningError, match=r"finetune setup --model other-org/absent"):
        resolve_model("other-org/absent")
    with pytest.raises(ModelProvisioningError, match="HF_HUB_OFFLINE is set"):
        resolve_model("tiny-org/tiny-llama@v9")
    assert main(["setup", "--model", "other-org/absent"]) == 2  # offline: refused, not a traceback
    assert main(["setup", "--model", "not a hub id"]) == 2


def test_a_run_records_the_hub_commit_it_fine_tunes(hub_cache: Path) -> None:
    """A flow run with model.ref a hub id, offline: the model resolves from the cache and the run folder records
    the snapshot's commit (base_model.json; the gate copies the same record onto the model card)."""
    import json

    from prefect.testing.utilities import prefect_test_harness

    from flows.finetune import finetune

    config = Path(__file__).resolve().parents[1] / "configs" / "regulator-cpu.yaml"
    with prefect_test_harness(server_startup_timeout=120):
        state = finetune(config_path=str(config), overrides={"name": "hub-run", "model.ref": "tiny-org/tiny-llama"},
                         stop_after="audit", return_state=True)
    assert state.is_completed(), state.message
    record = json.loads((Path(state.result()["run_dir"]) / "base_model.json").read_text())
    assert record["ref"] == "tiny-org/tiny-llama" and record["hub_commit"] == COMMIT
    assert Path(record["folder"]).name == COMMIT
