"""Bad filings and bad model/registry paths for `finetune analyze`: a clear refusal naming the problem, the good
filings still analysed, nothing half-written; exit 1 for unreadable filings, 2 for usage and model errors."""

from __future__ import annotations

import json
import os
import random
import re
from datetime import date
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.analysis import analyze_filings
from regulator.generator import us_instance
from tests.test_xbrl import US_FIGURES


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.xml"
    path.write_text(us_instance("123456", "Granite State Bank", date(2023, 3, 31), US_FIGURES, random.Random(1)))
    return path


def _variant(good: Path, name: str, old: str, new: str) -> Path:
    text = good.read_text()
    assert old in text
    path = good.with_name(name)
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("value", ["NaN", "1e400", "-INF"])
def test_non_finite_facts_are_not_figures(good: Path, value: str, capsys: pytest.CaptureFixture) -> None:
    bad = _variant(good, "nan.xml", 'decimals="4">0.0500</cc:RCOA7204>', f'decimals="4">{value}</cc:RCOA7204>')
    [r] = analyze_filings([bad], model_dir=None)
    assert r.status == "cannot_assess"
    assert any("non-finite value" in reason and "RCOA7204" in reason for reason in r.reasons)
    out = good.parent / "out.jsonl"
    assert main(["analyze", str(good), str(bad), "--rules-only", "--json", "--out", str(out)]) == 0
    def strict(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in the results")

    rows = [json.loads(line, parse_constant=strict) for line in out.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok", "cannot_assess"]  # both filings kept, strict JSON
    assert [json.loads(line, parse_constant=strict)["status"] for line in capsys.readouterr().out.splitlines()] == \
        ["ok", "cannot_assess"]


def test_a_date_that_is_not_iso_is_refused(good: Path) -> None:
    bad = _variant(good, "date.xml", "<xbrli:instant>2023-03-31</xbrli:instant>", "<xbrli:instant>31/03/2023</xbrli:instant>")
    [r] = analyze_filings([bad], model_dir=None)
    assert r.status == "error"
    assert re.search(r"context 'CI_123456_2023-03-31' has period date '31/03/2023', not an xs:date", r.reasons[0])


def test_devices_pipes_and_link_loops_are_refused_without_reading(good: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.xml"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.xml"
    loop.symlink_to(loop)
    results = {Path(r.file).name: r for r in analyze_filings([Path("/dev/zero"), fifo, loop, good], model_dir=None)}
    assert "is a device, not a file" in results["zero"].reasons[0]
    assert "is a named pipe, not a file" in results["pipe.xml"].reasons[0]
    assert "symbolic link loop" in results["loop.xml"].reasons[0]
    assert results["good.xml"].status == "ok"


def test_out_must_be_a_file_path(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", str(good), "--rules-only", "--out", str(tmp_path)]) == 2
    assert "is a folder; give the path of a JSON-lines file" in capsys.readouterr().err
    assert main(["analyze", str(good), "--rules-only", "--out", str(tmp_path / "no" / "r.jsonl")]) == 2
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"config.json": "{not json"}, "config.json is not readable JSON"),
        ({"config.json": '{"model_type": "no_such_arch"}'}, "names model_type 'no_such_arch'"),
        ({"config.json": '{"model_type": "llama"}'}, "has no weights"),
    ],
)
def test_a_damaged_model_folder_is_a_usage_error(good: Path, tmp_path: Path, files: dict, expected: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    assert main(["analyze", str(good), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_registry_and_model_paths_say_what_is_wrong(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", str(good), "--registry", str(tmp_path / "nope")]) == 2
    assert "--registry .* does not exist" and "does not exist" in capsys.readouterr().err
    registry = tmp_path / "registry"
    (registry / "versions").mkdir(parents=True)
    (registry / "production").symlink_to(registry / "gone")
    assert main(["analyze", str(good), "--registry", str(registry)]) == 2
    assert "symbolic link to" in capsys.readouterr().err
    assert main(["analyze", str(good), "--model", str(tmp_path / "no" / "model")]) == 2
    assert "no such model folder" in capsys.readouterr().err
