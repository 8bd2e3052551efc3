"""The project code a module really runs: its transitive imports among the project's own packages, read from the
source (as Bazel and Nix derive keys from the dependency graph), and a content hash of them.

Every ``import`` statement of a module counts, including those inside functions (lazy imports), so a stage's
key covers the helpers its task calls wherever they live. Third-party and standard-library imports are outside
the project and are left to the environment's fingerprint. Package data a module may read (``*.json`` beside it,
e.g. ``regulator/dpm_cells.json``) is hashed with it.

Hash policy: each file is hashed by its syntax tree without docstrings (``ast.dump``), so a comment, docstring or
formatting change leaves keys unchanged, and any change to what the code does changes them. Standard library only.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("foundation", "finetune", "flows", "tasks", "training", "evaluation", "data_contracts", "regulator")


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module ``name`` (a module file or a package's ``__init__.py``), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` anywhere in the file may refer to (``from a import
    b`` yields both ``a`` and ``a.b``: ``b`` may be a sub-module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = _package_of(name, path).split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a sub-module runs its packages' ``__init__`` too."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def project_closure(start: str, root: Path = ROOT) -> tuple[str, ...]:
    """The project modules ``start`` imports, transitively (``start`` included), sorted by name."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in _with_parents(todo.pop()):
            path = module_path(name, root)
            if path is None or name in seen:
                continue
            seen.add(name)
            todo.extend(imported_names(name, path))
    return tuple(sorted(seen))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop the docstring of the module and of every class and function."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """Hash of a Python file's code: its syntax tree without docstrings (comments and layout do not count)."""
    tree = _strip_docstrings(ast.parse(path.read_bytes(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def _data_files(paths: list[Path]) -> list[Path]:
    """Package data beside the modules (``*.json`` in their folders)."""
    return sorted({f for p in paths for f in p.parent.glob("*.json")})


def code_digest(start: str, root: Path = ROOT) -> tuple[str, tuple[str, ...]]:
    """Content hash of everything ``start`` runs in the project, and the list of those modules."""
    modules = project_closure(start, root)
    paths = [module_path(m, root) for m in modules]
    parts = {m: source_digest(p) for m, p in zip(modules, paths) if p is not None}
    parts.update({str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
                  for f in _data_files([p for p in paths if p is not None])})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), modules
