"""The ``registry-history`` flow: after a switch of production by hand (``finetune registry promote`` /
``rollback``), publish the registry's history as the ``registry-history`` table artifact on the Prefect server the
command line points at. The run is named after the switch (e.g. ``rollback to v0001-1a2b3c4d by a.operator``), so
the UI's Runs page lists the manual switches beside the gate's promotions, each with the table as its artifact.

A flow run rather than a bare artifact: Prefect 3.9 deprecates creating artifacts outside a flow or task run."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.registry_history import publish_registry_history


@flow(name="registry-history", flow_run_name="{switch}", retries=0, log_prints=False)
def registry_history(registry_dir: str, switch: str) -> str:
    """Publish the history of ``registry_dir``; ``switch`` says what was switched (the run's name). Returns the
    artifact's id."""
    return str(publish_registry_history(Path(registry_dir)))
