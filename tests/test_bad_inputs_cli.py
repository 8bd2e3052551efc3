"""Bad inputs to the command line, each refused with a message naming the problem and where, the documented exit
status and no traceback, and nothing written where it must not be: an ``--out`` that would destroy a filing, a
device, a pipe or a file outside its folder; folders the search cannot enter; file names that would forge table
rows; model folders that are not a decoder-only causal LM or whose weights are cut short; data sources with no usable
filing; contract bounds that contradict each other."""

from __future__ import annotations

import errno
import json
import os
import random
import stat
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from finetune.cli import main
from finetune.config import load_config
from foundation.errors import ConfigError
from regulator.generator import us_instance
from tests.test_xbrl import US_FIGURES

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = str(ROOT / "configs/regulator-cpu.yaml")
BROKEN = "<xbrli:xbrl"


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.xml"
    path.write_text(us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES, random.Random(1)))
    return path


def _err(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _deny(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` unreadable for the folder search, also as root (where chmod 000 blocks nothing)."""
    real = os.scandir

    def scandir(path: str = ".") -> os.ScandirIterator:
        if os.fspath(path) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


# ---------------------------------------------------------------------------------------------------------------
# 1. --out never destroys anything


def test_out_refuses_to_overwrite_an_input_filing(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    victim = tmp_path / "victim.xml"
    victim.write_bytes(good.read_bytes())
    assert main(["analyze", str(good), str(victim), "--rules-only", "--out", str(victim)]) == 2
    assert f"--out {victim} is the input filing {victim}" in _err(capsys)
    assert victim.read_bytes() == good.read_bytes()
    # A filing found in a folder counts too, through a link as well.
    (tmp_path / "alias.xml").symlink_to(good)
    assert main(["analyze", str(tmp_path), "--rules-only", "--out", str(tmp_path / "alias.xml")]) == 2
    assert "is the input filing" in _err(capsys)
    assert good.read_bytes() == victim.read_bytes()


@pytest.mark.parametrize("kind", ["fifo", "folder", "/dev/null"])
def test_out_refuses_what_is_not_a_regular_file(good: Path, tmp_path: Path, kind: str,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "folder":
        out.mkdir()
    else:
        out = Path(kind)
    before = out.stat()
    assert main(["analyze", str(good), "--rules-only", "--out", str(out)]) == 2
    err = _err(capsys)
    expected = {"fifo": "is a named pipe, not a regular file, and is never replaced", "folder": "is a folder;",
                "/dev/null": "is a device, not a regular file, and is never replaced"}[kind]
    assert f"--out {out} {expected}" in err and "give the path of a JSON-lines file" in err
    assert stat.S_IFMT(out.stat().st_mode) == stat.S_IFMT(before.st_mode)  # still a pipe, a folder, a device
    assert "results written" not in err


def test_out_follows_a_link_only_within_its_folder(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    outside = tmp_path / "elsewhere" / "keep.txt"
    outside.parent.mkdir()
    outside.write_text("keep me")
    here = tmp_path / "here"
    here.mkdir()
    (here / "out.jsonl").symlink_to(outside)
    assert main(["analyze", str(good), "--rules-only", "--out", str(here / "out.jsonl")]) == 2
    assert f"is a symbolic link to {outside}, outside {here}" in _err(capsys)
    assert outside.read_text() == "keep me" and (here / "out.jsonl").is_symlink()
    # A link to a file of the same folder is written through, and stays a link.
    (here / "results-2025.jsonl").write_text("old\n")
    (here / "latest.jsonl").symlink_to("results-2025.jsonl")
    assert main(["analyze", str(good), "--rules-only", "--out", str(here / "latest.jsonl")]) == 0
    assert (here / "latest.jsonl").is_symlink()
    assert json.loads((here / "results-2025.jsonl").read_text())["status"] == "ok"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(good: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    assert main(["analyze", str(good), "--rules-only", "--out", str(out)]) == 2
    assert f"{out}: cannot write the results (No space left on device); the file was left as it was" in _err(capsys)
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.xml", "out.jsonl"]


def test_out_in_a_folder_this_user_cannot_write(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked)  # root may write anywhere
    assert main(["analyze", str(good), "--rules-only", "--out", str(locked / "r.jsonl")]) == 2
    assert f"cannot write in {locked} (permission denied)" in _err(capsys)


# ---------------------------------------------------------------------------------------------------------------
# 2-3. Nothing is skipped without a word


def test_a_symlinked_sub_folder_is_reported_not_skipped(good: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    tree, other = tmp_path / "tree", tmp_path / "other"
    (tree / "real").mkdir(parents=True)
    other.mkdir()
    (tree / "real" / "a.xml").write_bytes(good.read_bytes())
    (other / "b.xml").write_bytes(good.read_bytes())
    (tree / "link").symlink_to(other)
    assert main(["analyze", str(tree), "--rules-only"]) == 1
    out = capsys.readouterr().out
    assert f"{tree / 'link'}: a symbolic link to a folder ({other}), not followed" in out
    assert "real/a.xml" in out and "b.xml" not in out


def test_an_unreadable_sub_folder_is_an_error(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "open.xml").write_bytes(good.read_bytes())
    (tree / "locked" / "c.xml").write_bytes(good.read_bytes())
    _deny(monkeypatch, tree / "locked")
    assert main(["analyze", str(tree), "--rules-only", "--json"]) == 1
    captured = capsys.readouterr()
    rows = {Path(r["file"]).name: r for r in map(json.loads, captured.out.splitlines())}
    assert rows["open.xml"]["status"] == "ok"
    assert rows["locked"]["reasons"] == [f"{tree / 'locked'}: cannot read the folder (permission denied)"]
    assert "permission denied" in captured.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder whatever its mode")
def test_a_folder_without_read_permission_is_named(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "c.xml").write_bytes(good.read_bytes())
    locked.chmod(0)
    try:
        assert main(["analyze", str(tmp_path), str(locked), "--rules-only"]) == 1
    finally:
        locked.chmod(0o755)
    assert f"{locked}: cannot read the folder (permission denied)" in capsys.readouterr().out


def test_an_unreadable_folder_given_directly_says_permission_denied(good: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "filings"
    folder.mkdir()
    (folder / "a.xml").write_bytes(good.read_bytes())
    _deny(monkeypatch, folder)
    assert main(["analyze", str(folder), "--rules-only"]) == 1
    out = capsys.readouterr().out
    assert f"{folder}: cannot read the folder (permission denied)" in out and "holds no" not in out


# ---------------------------------------------------------------------------------------------------------------
# 4. File names never forge rows or send escapes


def test_control_characters_in_names_are_escaped(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    forged = "x\nforged.xml    ok      NONE  \x1b[31mred.xml"
    (folder / forged).write_bytes(good.read_bytes())
    (folder / "bad\x1b]0;title\x07.xml").write_text(BROKEN)
    assert main(["analyze", str(folder), "--rules-only"]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out
    assert "x\\nforged.xml    ok      NONE  \\x1b[31mred.xml" in captured.out
    assert not any(line.startswith("forged") for line in captured.out.splitlines())
    assert "bad\\x1b]0;title\\x07.xml" in captured.out  # in the row and in its reason
    # JSON keeps the names exact (JSON escapes them); the error lines on stderr are escaped.
    assert main(["analyze", str(folder), "--rules-only", "--json"]) == 1
    captured = capsys.readouterr()
    assert {Path(json.loads(line)["file"]).name for line in captured.out.splitlines()} == {
        forged, "bad\x1b]0;title\x07.xml"}
    assert "\x1b" not in captured.err and "error: " in captured.err


# ---------------------------------------------------------------------------------------------------------------
# 5. Models that are not causal LMs, weights cut short


def _model_folder(folder: Path, config: dict, *, cut: int = 0) -> Path:
    """A model folder with ``config`` and a small safetensors file, its last ``cut`` bytes removed."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"w": np.zeros((8, 8), dtype=np.float32)}, str(folder / "model.safetensors"))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - cut])
    return folder


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


def test_a_truncated_safetensors_in_a_registry_version_is_a_usage_error(good: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    registry = tmp_path / "registry"
    version = _model_folder(registry / "versions" / "v0001-1a2b3c4d", LLAMA, cut=100)
    (registry / "production").write_text(json.dumps({"version": version.name}))
    assert main(["analyze", str(good), "--registry", str(registry)]) == 2
    err = _err(capsys)
    assert f"{version / 'model.safetensors'}: truncated: 228 bytes where its header declares 328" in err
    (version / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert main(["analyze", str(good), "--registry", str(registry)]) == 2
    assert "its safetensors header is not readable JSON" in _err(capsys)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "vit", "architectures": ["ViTModel"]},
         "names model_type 'vit' (ViTModel): not a causal language model"),
        ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True},
         "names model_type 't5' (T5ForConditionalGeneration): an encoder-decoder model"),
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]},
         "names model_type 'bert' (BertForMaskedLM): not a causal language-model head"),
    ],
)
def test_a_model_that_is_not_a_causal_lm_is_refused_everywhere(good: Path, tmp_path: Path, config: dict,
                                                                expected: str, capsys: pytest.CaptureFixture) -> None:
    model = _model_folder(tmp_path / "model", config)
    assert main(["analyze", str(good), "--model", str(model)]) == 2
    assert f"{model / 'config.json'} {expected}" in _err(capsys)
    for command in ("validate", "plan"):
        assert main([command, CPU_CONFIG, "--set", f"model.ref={model}"]) == 2
        assert f"model.ref: {model / 'config.json'} {expected}" in _err(capsys)


def test_validate_checks_the_weights_of_model_ref(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _model_folder(tmp_path / "model", {**LLAMA, "hidden_size": 64, "num_attention_heads": 4}, cut=7)
    assert main(["validate", CPU_CONFIG, "--set", f"model.ref={model}"]) == 2
    assert f"model.ref: {model / 'model.safetensors'}: truncated" in _err(capsys)


# ---------------------------------------------------------------------------------------------------------------
# 6. Data sources without a usable filing, contract bounds that contradict each other


def test_validate_and_run_refuse_a_data_source_without_a_usable_filing(good: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    empty, broken, mixed = tmp_path / "empty", tmp_path / "broken", tmp_path / "mixed"
    for folder in (empty, broken, mixed):
        folder.mkdir()
    for i in range(25):
        (broken / f"b{i:02d}.xml").write_text(BROKEN)
    (mixed / "a_broken.xml").write_text(BROKEN)
    (mixed / "b_good.xml").write_bytes(good.read_bytes())
    assert main(["validate", CPU_CONFIG, "--set", f"data.source={empty}"]) == 2
    assert f"data.source: {empty}: folder holds no *.xml, *.xbrl or *.zip file" in _err(capsys)
    assert main(["validate", CPU_CONFIG, "--set", f"data.source={broken}"]) == 2
    err = _err(capsys)
    assert f"data.source: {broken}: none of the first 20 of its 25 filings can be read: {broken / 'b00.xml'}: " in err
    assert "b01.xml" in err and "b02.xml" in err and "and 17 more" in err and "b03.xml" not in err
    assert main(["validate", CPU_CONFIG, "--set", f"data.source={mixed}"]) == 0  # one good filing is enough
    capsys.readouterr()
    runs = Path(os.environ["FINETUNE_HOME"]) / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []
    assert main(["run", CPU_CONFIG, "--set", f"data.source={broken}"]) == 2  # before Prefect starts
    assert "none of the first 20 of its 25 filings can be read" in _err(capsys)
    assert (sorted(runs.iterdir()) if runs.exists() else []) == before


def test_min_report_chars_above_max_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CPU_CONFIG, ["data.min_report_chars=5000"])
    expected = "data.min_report_chars (5000) is above data.max_report_chars (4000)"
    assert expected in str(err.value)
    for command in ("validate", "run"):
        assert main([command, CPU_CONFIG, "--set", "data.min_report_chars=5000"]) == 2
        assert expected in _err(capsys)
