"""Core of the finetune pipeline: run config, run-folder layout, hashing, model provisioning, errors, CLI.

Nothing in this package imports Prefect; the orchestration lives in ``flows/`` and ``tasks/``.
"""

__version__ = "0.1.0"
