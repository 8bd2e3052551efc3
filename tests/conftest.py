"""Shared fixtures: an isolated project home and Prefect home per test session, the real tokenizer, a tiny model.

The provisioned base model (built by the setup script) is shared read-only; every other output of the tests goes
to a temporary project home so tests never touch the user's runs, caches or registry.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from finetune.models import base_model_dir, build_tiny_model, provision_base_model
from foundation.paths import models_dir

_SESSION_TMP: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Isolate FINETUNE_HOME and PREFECT_HOME before any test module imports Prefect."""
    global _SESSION_TMP
    import tempfile

    os.environ.setdefault("FINETUNE_MODEL_CACHE", str(models_dir()))
    _SESSION_TMP = Path(tempfile.mkdtemp(prefix="finetune-tests-"))
    os.environ["FINETUNE_HOME"] = str(_SESSION_TMP / "home")
    os.environ["PREFECT_HOME"] = str(_SESSION_TMP / "prefect")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_SESSION_TMP / "prefect" / "storage")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from finetune.cli import prefect_defaults  # the settings the CLI gives Prefect (no Prefect import)

    prefect_defaults()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The tests size their runs themselves: a config's fp32_host budget would change them on a CPU without native
    # bf16 only (tests/test_config.py and test_flow_spine.py exercise it with the switch on).
    os.environ["FINETUNE_FP32_HOST"] = "0"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's project and Prefect homes (~600 MB of models and runs) unless FINETUNE_KEEP_TEST_HOME is
    set.

    Left behind, every test session eats disk that a later session's infra check counts as missing.
    """
    if _SESSION_TMP is not None and not os.environ.get("FINETUNE_KEEP_TEST_HOME"):
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The provisioned SmolLM2-135M-Instruct folder (converted once at setup; provisioned here if missing)."""
    return provision_base_model()


@pytest.fixture(scope="session")
def tokenizer_dir(base_model: Path) -> Path:
    """A folder with the SmolLM2 tokenizer and chat template (the base model folder)."""
    return base_model_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A tiny randomly initialised Llama (2 layers, hidden 64) saved with the SmolLM2 tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), tokenizer_dir)
