"""The ``registry-history`` table artifact: the model registry's production switches (time, user, version, previous,
reason) on the Prefect server, so the UI's Artifacts page shows who switched production and why.

Published by the deployment gate after its promotion and by ``finetune registry promote`` / ``rollback`` (switches by
hand) when the command line points at a Prefect server (``PREFECT_API_URL``, e.g. the stack's)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect.artifacts import create_table_artifact

from finetune.registry import read_history

KEY = "registry-history"
ROWS = 50  # the latest switches; `finetune registry history` prints them all


def publish_registry_history(registry_dir: Path) -> UUID:
    """Publish the registry's latest switches, newest first, as the ``registry-history`` table (a new version of the
    artifact): when (UTC, to the second), who, the version switched to, the one it replaced, why."""
    rows = [{"at": str(e.get("at", ""))[:19].replace("T", " ") + " UTC", "user": e.get("user"),
             "version": e.get("version"), "previous": e.get("previous"), "reason": e.get("reason")}
            for e in reversed(read_history(Path(registry_dir))[-ROWS:])]
    return create_table_artifact(key=KEY, table=rows,
                                 description=f"Production switches of {registry_dir}, newest first: who, when, why "
                                             f"(the latest {ROWS}; all: finetune registry history)")


def configured_api_url() -> str | None:
    """The Prefect API the process is pointed at (environment or profile), None when there is none (a flow would
    start a temporary server: no place to publish to)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None
