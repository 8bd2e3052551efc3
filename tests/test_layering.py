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
                 if mod.split(".")[0] in MODEL_SIDE or mod.startswith("finetune")}
    assert not offending, offending


def test_prefect_only_in_flows_and_tasks() -> None:
    for package in ("finetune", "training", "evaluation", "regulator", "data_contracts"):
        offending = {(name, mod) for name, mods in _imports(package).items() for mod in mods
                     if mod.split(".")[0] == "prefect"}
        assert not offending, (package, offending)


# One floor per layer, lowest first: a module may import its own layer and the layers below, never one above.
LAYERS = (
    ("foundation",),                 # standard-library helpers: errors, paths, hashing, memory reuse, code graph
    ("regulator",),                  # the domain: parsing, rules, rendering, generation
    ("data_contracts", "evaluation"),  # libraries on the domain
    ("training",),                   # the trainers (their learning curves score with evaluation)
    ("finetune",),                   # the application: config, models, registry, audit, analysis, summary
    ("tasks",),                      # one Prefect task per stage
    ("flows",),                      # the Prefect flows
    ("finetune.cli",),               # the roof: the command line starts the flows
)


def _layer(module: str) -> int:
    """The layer of a project module (the most specific entry of LAYERS that names it or its package)."""
    best = (-1, -1)
    for index, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                best = max(best, (len(name), index))
    assert best[1] >= 0, f"{module} belongs to no layer"
    return best[1]


def test_no_import_points_up_a_layer() -> None:
    """Every import of every project module (lazy ones inside functions included), read from the source."""
    from foundation.codegraph import PACKAGES, imported_names, module_path

    upward = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            for imported in imported_names(name, path):
                if module_path(imported) is None:
                    continue  # not a project module (a third-party package, or a name inside a module)
                if _layer(imported) > _layer(name):
                    upward.append(f"{name} -> {imported}")
    assert not upward, upward


def test_the_floor_imports_nothing_of_the_project() -> None:
    from foundation.codegraph import project_closure

    for module in ("foundation.errors", "foundation.paths", "foundation.hashing", "foundation.memory_reuse",
                   "foundation.codegraph"):
        assert set(project_closure(module)) <= {module, "foundation"}, project_closure(module)
