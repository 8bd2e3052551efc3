"""Typed errors of the pipeline, one class per way a stage can refuse to go on.

Each message is written for a person: what was wrong, where, and what to do. Stages raise these so that a
data-contract failure, a memory-plan failure and a gate rejection are different, catchable errors.
"""

from __future__ import annotations

import unicodedata

# Characters a terminal acts on instead of showing: controls (newline, ESC, ...), format characters (bidirectional
# overrides), line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to print on a terminal: every control or format character escaped as ``repr`` writes it
    (``\\n``, ``\\x1b``, ``\\u202e``), so a crafted file name can neither forge a line nor send an escape sequence.
    ``keep_newlines`` keeps the line breaks of a message written on several lines."""
    return "".join(
        ch if (ch == "\n" and keep_newlines) or unicodedata.category(ch) not in _UNPRINTABLE else repr(ch)[1:-1]
        for ch in text)


class FinetuneError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(FinetuneError):
    """The run config is invalid; ``problems`` lists every problem found (field path and message)."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        # A problem written on several lines (a YAML error's caret) keeps them, indented under it; controls escaped.
        lines = "\n".join("  - " + printable(p, keep_newlines=True).replace("\n", "\n    ") for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


class ModelProvisioningError(FinetuneError):
    """The base model could not be found, converted or verified."""


class AttemptsExhausted(FinetuneError):
    """An automatic re-run of a crashed run was started beyond the run's ``max_attempts``: nothing is run again."""


class MemoryPlanError(FinetuneError):
    """No ZeRO stage / offload choice fits the declared hardware."""


class InfraError(FinetuneError):
    """The declared hardware or software is not what is really present."""


class DataError(FinetuneError):
    """Input data could not be read (a file that is not what it claims to be, a missing column, ...)."""


class XBRLError(DataError):
    """An XBRL instance is malformed, hostile or of an unsupported taxonomy."""


class DataContractError(DataError):
    """The data failed its Great Expectations contract; ``failures`` names each failed expectation."""

    def __init__(self, message: str, failures: list[dict] | None = None, report_markdown: str = "") -> None:
        self.failures = list(failures or [])
        self.report_markdown = report_markdown
        super().__init__(message)


class TrainingError(FinetuneError):
    """Training failed: the launcher exited non-zero, the loss went NaN, or the saved model does not load."""


class CheckpointError(TrainingError):
    """A checkpoint is incomplete or corrupt."""


class EvaluationError(FinetuneError):
    """Evaluation could not produce the metrics it promised."""


class GateRejected(FinetuneError):
    """The deployment gate rejected the model; ``failures`` lists every failed criterion with its figure."""

    def __init__(self, failures: list[str], decision: dict | None = None) -> None:
        self.failures = list(failures)
        self.decision = decision  # the whole decision (every criterion), for the run summary
        self.run_dir: str | None = None  # set by the flow once the run summary is written
        lines = "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(f"deployment gate rejected the model ({len(self.failures)} failed criteria):\n{lines}")

    def __reduce__(self) -> tuple:
        # Prefect stores a failed state's exception with cloudpickle: rebuild it from the same arguments.
        return (GateRejected, (self.failures, self.decision))


class RegistryError(FinetuneError):
    """The model registry is inconsistent or a promotion could not be completed."""
