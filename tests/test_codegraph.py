"""Stage cache keys are derived from the code each stage really runs (its task module's transitive project
imports, hashed by syntax tree), never from a hand-kept list: a change where a stage's code lives invalidates that
stage and the stages that run it, and no other; comments, docstrings and layout do not count."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foundation.codegraph import PACKAGES, ROOT, code_digest, project_closure

STAGES = ("audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "deployment_gate")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages to edit."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _digests(root: Path) -> dict[str, str]:
    return {stage: code_digest(f"tasks.{stage}", root)[0] for stage in STAGES}


def _changed(root: Path, edit) -> set[str]:
    before = _digests(root)
    project_closure.cache_clear()
    edit(root)
    after = _digests(root)
    return {stage for stage in STAGES if before[stage] != after[stage]}


def _append(rel: str, text: str):
    def edit(root: Path) -> None:
        path = root / rel
        path.write_text(path.read_text() + text)
    return edit


def test_the_learning_curve_code_invalidates_training_not_data_preparation(tree: Path) -> None:
    changed = _changed(tree, _append("evaluation/teacher_forced.py", "\nEXTRA_CONSTANT = 1\n"))
    assert {"train_full", "train_lora"} <= changed
    assert not {"prepare_data", "infra_check"} & changed


def test_the_rule_engine_invalidates_data_preparation_and_everything_after_it(tree: Path) -> None:
    changed = _changed(tree, _append("regulator/rules.py", "\nEXTRA_CONSTANT = 1\n"))
    assert changed >= {"prepare_data", "train_full", "train_lora", "evaluate", "deployment_gate"}


def test_helpers_beside_a_task_are_part_of_its_key(tree: Path) -> None:
    """`tasks/train_full.py`'s helpers (not only the decorated function) and lazy imports inside functions."""
    assert "train_full" in _changed(tree, _append("tasks/train_full.py", "\ndef _helper():\n    return 2\n"))
    assert "training.memory" in project_closure("tasks.infra_check")
    assert {"training.curve", "training.infra"} <= set(project_closure("tasks.evaluate"))
    assert {"regulator.rules", "data_contracts.contracts"} <= set(project_closure("tasks.audit"))


def test_comments_docstrings_and_layout_do_not_invalidate(tree: Path) -> None:
    def cosmetic(root: Path) -> None:
        path = root / "regulator" / "rules.py"
        text = path.read_text().replace('"""', '"""Reworded. ', 1)
        path.write_text("# a comment\n" + text + "\n\n# another comment\n")

    assert _changed(tree, cosmetic) == set()


def test_package_data_counts(tree: Path) -> None:
    assert "prepare_data" in _changed(tree, _append("regulator/dpm_cells.json", " "))


def test_a_stage_manifest_lists_its_code_modules() -> None:
    from tasks.stage import stage_code
    from tasks.train_full import train_full

    digest, modules = stage_code(train_full)
    assert digest == code_digest("tasks.train_full")[0]
    assert "evaluation.teacher_forced" in modules and "tasks.train_full" in modules
    assert all(m.split(".")[0] in PACKAGES for m in modules)
