"""Model registry: promotion, the production pointer, and atomicity when a promotion crashes midway."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from finetune import registry
from foundation.errors import RegistryError
from finetune.registry import list_versions, production_version, promote, read_card, resolve_model, set_production

CARD = {"metrics": {"f1_micro": 0.91, "rouge_l": 0.74}, "config": {"lr": 2e-5}, "data_hash": "abc123",
        "decision": {"passed": True}}


def _variant(tiny_model_dir: Path, dest: Path, scale: float) -> Path:
    """A copy of the tiny model with different weights (so its content hash differs)."""
    shutil.copytree(tiny_model_dir, dest)
    weights = load_file(dest / "model.safetensors")
    save_file({k: v * scale for k, v in weights.items()}, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def _visible(registry_dir: Path) -> list[str]:
    return sorted(p.name for p in (registry_dir / "versions").iterdir())


def test_promote_and_resolve(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    assert production_version(reg) is None and list_versions(reg) == []
    report = tmp_path / "report.md"
    report.write_text("# report")
    v1 = promote(reg, tiny_model_dir, card=CARD, files={"report.md": report})
    assert v1.startswith("v0001-") and production_version(reg) == v1
    folder = resolve_model(reg, "production")
    assert folder == resolve_model(reg, v1) == reg / "versions" / v1
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert all(p.numel() > 0 for p in model.parameters())
    assert (folder / "tokenizer.json").is_file() and (folder / "extras" / "report.md").read_text() == "# report"
    card = read_card(reg, v1)
    assert card["metrics"]["f1_micro"] == 0.91 and card["data_hash"] == "abc123" and card["version"] == v1
    assert "git_commit" in card["code_version"] and len(card["model_sha256"]) == 64
    assert "f1_micro | 0.9100" in (folder / "MODEL_CARD.md").read_text()

    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD)
    assert v2.startswith("v0002-") and production_version(reg) == v2 and list_versions(reg) == [v1, v2]
    # Same content again: no new copy, production goes back to the version that holds it.
    assert promote(reg, tiny_model_dir, card=CARD) == v1 and production_version(reg) == v1
    set_production(reg, v2)  # rollback / roll forward
    assert production_version(reg) == v2
    history = [json.loads(line) for line in (reg / "history.jsonl").read_text().splitlines()]
    assert [h["version"] for h in history] == [v1, v2, v1, v2]


def test_crash_mid_copy_leaves_production_intact(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD)
    before = _visible(reg)
    real_copy = registry._copy_file
    calls = {"n": 0}

    def crash_on_second_file(src: Path, dst: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            real_copy(src, dst)
            with open(dst, "r+b") as f:  # half a file on disk, like a copy cut off by a crash
                f.truncate(max(1, dst.stat().st_size // 2))
            raise OSError("simulated crash mid-copy")
        real_copy(src, dst)

    monkeypatch.setattr(registry, "_copy_file", crash_on_second_file)
    with pytest.raises(OSError, match="simulated crash"):
        promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 2.0), card=CARD)
    assert calls["n"] == 2
    assert production_version(reg) == v1 and list_versions(reg) == [v1]
    assert _visible(reg) == before  # the staging folder was removed
    assert AutoModelForCausalLM.from_pretrained(resolve_model(reg, "production")) is not None


def test_killed_promotion_leftovers_are_ignored_then_cleaned(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD)
    # A process killed with SIGKILL runs no cleanup: its staging folder stays behind.
    stale = reg / "versions" / ".tmp-v0002-deadbeef-xyz"
    stale.mkdir()
    (stale / "config.json").write_text("{")
    assert list_versions(reg) == [v1] and production_version(reg) == v1
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD)
    assert not stale.exists() and list_versions(reg) == [v1, v2]


def test_crash_while_switching_pointer(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD)
    real_replace = registry.os.replace

    def failing_replace(src, dst) -> None:
        if Path(dst).name == "production":
            raise OSError("simulated crash before the pointer switch")
        real_replace(src, dst)

    monkeypatch.setattr(registry.os, "replace", failing_replace)
    model2 = _variant(tiny_model_dir, tmp_path / "m2", 0.5)
    with pytest.raises(OSError, match="pointer switch"):
        promote(reg, model2, card=CARD)
    assert production_version(reg) == v1
    assert len(list_versions(reg)) == 2  # the new version is complete, just not production yet
    assert not [p for p in reg.iterdir() if p.name.startswith(".production")]  # no temp pointer left
    monkeypatch.setattr(registry.os, "replace", real_replace)
    # The retry reuses the complete version the crashed attempt registered instead of copying it again.
    v2 = promote(reg, model2, card=CARD)
    assert list_versions(reg) == [v1, v2] and v2.startswith("v0002-")
    assert production_version(reg) == v2


def test_bad_models_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    with pytest.raises(RegistryError, match="config.json"):
        promote(reg, tmp_path, card=CARD)
    # A ZeRO-3 style failed save: tensors with no elements.
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    save_file({k: torch.empty(0) for k in weights}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RegistryError, match="nothing was promoted"):
        promote(reg, broken, card=CARD)
    assert list_versions(reg) == [] and production_version(reg) is None
    assert not [p for p in (reg / "versions").iterdir()]
    with pytest.raises(RegistryError, match="does not exist"):
        promote(reg, tiny_model_dir, card=CARD, files={"x.md": tmp_path / "missing.md"})


def test_inconsistencies_raise(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    with pytest.raises(RegistryError, match="nothing has been promoted"):
        resolve_model(reg, "production")
    v1 = promote(reg, tiny_model_dir, card=CARD)
    with pytest.raises(RegistryError, match="known versions"):
        resolve_model(reg, "v0009-00000000")
    (reg / "production").write_text(json.dumps({"version": "v0007-aaaaaaaa"}))
    with pytest.raises(RegistryError, match="v0007-aaaaaaaa"):
        production_version(reg)
    (reg / "production").write_text("not json")
    with pytest.raises(RegistryError, match="not a valid production pointer"):
        production_version(reg)
    set_production(reg, v1)  # repairs a broken pointer
    assert production_version(reg) == v1


def test_registry_command_line(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """list / show / history / promote / rollback: every switch recorded with time, user and reason; switching to a
    missing, damaged or current version is refused with the reason and switches nothing."""
    from finetune.cli import main

    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD, reason="gate passed")
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD, reason="gate passed")
    cli = ["registry", "--registry", str(reg)]
    capsys.readouterr()
    assert main([*cli, "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["version", "production"] and len(out) == 3
    assert out[1].startswith(v1) and "since" not in out[1] and "0.910" in out[1] and "abc123" in out[1]
    assert out[2].startswith(v2) and "since" in out[2]
    assert main([*cli, "show", "production"]) == 0 and f"Model card: {v2}" in capsys.readouterr().out

    assert main([*cli, "rollback", "--reason", "v2 misreads CBLR electors"]) == 0
    assert f"production: {v1} (rolled back from {v2})" in capsys.readouterr().out
    assert production_version(reg) == v1
    last = registry.read_history(reg)[-1]
    assert last["version"] == v1 and last["previous"] == v2 and last["reason"] == "rollback: v2 misreads CBLR electors"
    assert last["user"] and last["at"]

    # Refusals: nothing switches, the reason is named, exit 2.
    assert main([*cli, "promote", v1, "--reason", "again"]) == 2
    assert "already production" in capsys.readouterr().err
    assert main([*cli, "promote", "v0009-00000000", "--reason", "x"]) == 2
    assert "known versions" in capsys.readouterr().err
    weights = reg / "versions" / v2 / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged after promotion
    assert main([*cli, "promote", v2, "--reason", "roll forward"]) == 2
    assert f"version {v2} is damaged" in capsys.readouterr().err
    assert main([*cli, "promote", v2, "--reason", "  "]) == 2 and "give a reason" in capsys.readouterr().err
    assert production_version(reg) == v1 and len(registry.read_history(reg)) == 3

    assert main([*cli, "history"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert len(history) == 4 and "rollback: v2 misreads CBLR electors" in history[-1]
    assert main(["registry", "--registry", str(tmp_path / "none"), "list"]) == 2


def test_a_switch_by_hand_stands_when_the_prefect_server_does_not_answer(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``finetune registry rollback`` pointed at a Prefect server (PREFECT_API_URL) publishes the registry-history
    artifact there (tests/test_ui.py shows it in the UI); a server that does not answer is a warning, the switch
    stands and the command succeeds."""
    import os
    import socket
    import subprocess

    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD, reason="gate passed")
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD, reason="gate passed")
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    done = subprocess.run([str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "finetune"), "registry",
                           "--registry", str(reg), "rollback", "--reason", "server down"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"production: {v1} (rolled back from {v2})" in done.stdout
    assert "warning: the registry-history artifact" in done.stderr and "was not updated" in done.stderr
    assert production_version(reg) == v1 and registry.read_history(reg)[-1]["reason"] == "rollback: server down"


def test_a_shadow_runs_beside_production_until_its_rule_or_a_hand_promotes_it(tiny_model_dir: Path,
                                                                            tmp_path: Path) -> None:
    """gate.shadow: a candidate promoted while a model is in production becomes its shadow (production unchanged, no
    history line); its standing counts the filings both answered and each one's agreement with the rule engine; it
    is ready after min_filings when not worse than production, never when worse or without a rule; promoting it
    (by hand or by the rule) ends the shadow."""
    from finetune.shadow import record_filings, shadow_pointer, standing

    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD, shadow=True, shadow_min_filings=2)
    assert production_version(reg) == v1 and shadow_pointer(reg) is None  # nothing to shadow: direct
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD, shadow=True, shadow_min_filings=2)
    assert production_version(reg) == v1 and shadow_pointer(reg)["version"] == v2
    assert len(registry.read_history(reg)) == 1
    rows = {r["version"]: r["production"] for r in registry.version_rows(reg)}
    assert rows[v1].startswith("since") and rows[v2].startswith("shadow since")

    record_filings(reg, [{"file": "a.xml", "production_agrees": True, "shadow_agrees": True}])
    now = standing(reg)
    assert (now["filings"], now["ready"]) == (1, False) and "1 of 2 filings" in now["why"]
    record_filings(reg, [{"file": "b.xml", "production_agrees": True, "shadow_agrees": False}])
    now = standing(reg)
    assert not now["ready"] and "50% < production's 100%" in now["why"]
    record_filings(reg, [{"file": "c.xml", "production_agrees": False, "shadow_agrees": True},
                         {"file": "d.xml", "production_agrees": False, "shadow_agrees": True}])
    now = standing(reg)
    assert now["ready"] and now["filings"] == 4 and now["shadow_agreement"] == 0.75

    registry.switch_production(reg, v2, reason="shadow A/B: " + now["why"], user="test")
    assert production_version(reg) == v2 and shadow_pointer(reg) is None and standing(reg) is None
    v3 = promote(reg, _variant(tiny_model_dir, tmp_path / "m3", 0.25), card=CARD, shadow=True,
                 shadow_min_filings=None)
    record_filings(reg, [{"file": f"{i}.xml", "production_agrees": False, "shadow_agrees": True} for i in range(5)])
    assert shadow_pointer(reg)["version"] == v3 and not standing(reg)["ready"]  # no rule: by hand only
    assert "promote it by hand" in standing(reg)["why"]


def test_analyze_answers_with_the_shadow_beside_production(tiny_model_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """`finetune analyze` with the production model also runs the registry's shadow on the same filings: its
    standing is printed; production's answers are the ones shown; unreadable answers (a random tiny model's) are
    not counted as agreement either way."""
    from finetune.cli import main
    from finetune.shadow import standing

    reg = tmp_path / "registry"
    promote(reg, tiny_model_dir, card=CARD)
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD, shadow=True, shadow_min_filings=2)
    real = Path(__file__).parent / "fixtures" / "real" / "ffiec"
    files = [str(real / "bank-493741-2026-06-30.xml"), str(real / "bank-946274-2026-06-30.xml")]
    capsys.readouterr()
    assert main(["analyze", *files, "--registry", str(reg), "--max-new-tokens", "8", "--precision", "fp32"]) == 0
    out = capsys.readouterr()
    assert "bank-493741" in out.out and f"shadow {v2} beside production:" in out.err, out.err
    now = standing(reg)
    assert now["version"] == v2 and not now["ready"] and now["filings"] <= 2
