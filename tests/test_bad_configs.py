"""Careless or hostile configs are refused before anything starts, with a message naming the problem (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import flows.finetune  # noqa: F401  Prefect sets up its log handlers on import: at collection, not inside capsys
from finetune.cli import main
from finetune.config import load_config
from foundation.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CPU = (ROOT / "configs/regulator-cpu.yaml").read_text()


def _refused(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    return str(err.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the config is empty"),
        (b"# only a comment\n\n", "the config is empty"),
        (b"\x00\xff\xfe binary \x80\x81", "not UTF-8 text"),
        (b"name: x\ntrain:\n  lr: 1.0e-4\ndata:\n  n_examples: 40\ntrain:\n  epochs: 2\n",
         "'train' is given twice (first on line 2)"),
        (b"name: x\ntrain:\n  lr: 1.0e-4\n  lr: 2.0e-4\n", "'lr' is given twice"),
        (b"name: x\ntrain:\n  weight_decay: .inf\n", "train.weight_decay"),
        (b"name: x\naudit:\n  known_lora_gap: .nan\n", "audit.known_lora_gap"),
        (b"name: x\nhardware:\n  hostfile: /no/such/hostfile\n", "hardware.hostfile: /no/such/hostfile does not exist"),
        (b"- a list\n- not sections\n", "top level must be a mapping"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: bytes, expected: str, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert expected in _refused(path)
    assert main(["validate", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "cpu.yaml"
    path.write_text(CPU)
    assert "override 'train.lr=[1': the value is not valid YAML" in _refused(path, "train.lr=[1")
    assert "train.lr" in _refused(path, "train.lr=.nan")
    assert main(["validate", str(path), "--set", "train.lr=[1"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    assert "is a folder, not a config file" in _refused(tmp_path)


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "cpu.yaml"
    path.write_text(CPU)
    runs = Path(os.environ["FINETUNE_HOME"]) / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []
    assert main(["run", str(path), "--set", "nosuch.key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nosuch: unknown field" in err and "Traceback" not in err
    assert (sorted(runs.iterdir()) if runs.exists() else []) == before  # no flow run, no run folder


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "model.ref: "),
        ({"config.json": "{garbage"}, "config.json is not readable JSON"),
        ({"config.json": '{"model_type": "no_such_arch"}'}, "names model_type 'no_such_arch'"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_damaged_model_folder_is_refused_by_validate_and_plan(
    tmp_path: Path, files: dict[str, str], expected: str, command: str, capsys: pytest.CaptureFixture
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    assert main([command, str(ROOT / "configs/regulator-cpu.yaml"), "--set", f"model.ref={model}"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_plan_on_a_fresh_home_converts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    """`plan` runs nothing: on a home where the packaged model was never provisioned it reads the model's shape
    from the GGUF header and leaves the model cache empty."""
    from finetune.models import base_model_dir

    monkeypatch.setenv("FINETUNE_MODEL_CACHE", str(tmp_path / "models"))
    assert main(["plan", str(ROOT / "configs/regulator.yaml"), "--set", "model.ref=packaged"]) == 0
    out = capsys.readouterr().out
    assert "134.5 M parameters" in out and "chosen: ZeRO-" in out
    assert not base_model_dir().exists() and not (tmp_path / "models").exists()


def test_the_cli_gives_prefects_ephemeral_server_time_to_start() -> None:
    """On a busy machine Prefect's default 20 s for its ephemeral API server is too short (a demo failed so): the CLI
    sets 90 s before Prefect reads its settings, and a value the user set wins."""
    code = ("from finetune.cli import prefect_defaults; prefect_defaults()\n"
            "from prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()[-1] == "90"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "33"
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()[-1] == "33"
