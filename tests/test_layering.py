"""regulator/ is the pure domain library (parse, rules, render, generate, answer format): it imports no model,
training, registry, orchestration or generation code; using a model on filings lives above it (finetune.analysis).
Prefect lives only in flows/ and tasks/ (and the automations helper in flows/)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_SIDE = {"torch", "transformers", "peft", "deepspeed", "evaluation", "training", "flows", "tasks", "prefect"}


def _imports(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.setdefault(path.name, set()).add(node.module)
            elif isinstance(node, ast.Import):
                out.setdefault(path.name, set()).update(a.name for a in node.names)
    return out


def test_regulator_is_a_pure_domain_library() -> None:
    offending = {(name, mod) for name, mods in _imports("regulator").items() for mod in mods
                 if mod.split(".")[0] in MODEL_SIDE or (mod.startswith("finetune") and mod != "finetune.errors")}
    assert not offending, offending


def test_prefect_only_in_flows_and_tasks() -> None:
    for package in ("finetune", "training", "evaluation", "regulator", "data_contracts"):
        offending = {(name, mod) for name, mods in _imports(package).items() for mod in mods
                     if mod.split(".")[0] == "prefect"}
        assert not offending, (package, offending)
