"""Bounds the automatic re-runs of crashed flow runs outside the flow's own code: a deployment pull step.

The re-run automation (``finetune-rerun-crashed`` in ``deploy/automations.yaml``) starts a crashed run again with
``attempt + 1``. The flow refuses an ``attempt`` above ``max_attempts``, but a flow that cannot even be imported
(a bad commit, a missing dependency) never gets to refuse: every run crashes at load, and each crash would start
the next one. So the limit is enforced before the flow is loaded, by this step, which runs in the flow run's
process right after ``set_working_directory`` and imports nothing but Prefect:

- it reads the run's ``attempt`` and ``max_attempts`` parameters and renames the run to say where it stands in
  its chain, e.g. ``re-run on crash · attempt 2 of 3 · sturdy-otter`` or ``last attempt · attempt 3 of 3 · …``;
- the re-run automation's trigger matches only names starting with :data:`RERUN_MARK` (a prefix: the one
  wildcard both Prefect's client and server match alike), so the crash of a last
  attempt, or of a run whose process died before this step ran, starts nothing: at most ``max_attempts`` runs;
- its log line (in the run's logs in the UI) says why a chain stops there.

Used in ``prefect.yaml`` as ``flows.rerun_guard.admit``; the state-change event carries the run's current name,
so the trigger sees the attempt count without reading the flow run's parameters.
"""

from __future__ import annotations

import os
import re
from uuid import UUID

RERUN_MARK = "re-run on crash"
LAST_MARK = "last attempt"
_PREFIX = re.compile(rf"^(?:{RERUN_MARK}|{LAST_MARK}) · attempt \d+ of \d+ · ")


def chain_name(base: str, attempt: int, max_attempts: int) -> str:
    """The run's name with its place in the re-run chain (a name already marked is marked again, not twice)."""
    base = _PREFIX.sub("", base)
    mark = RERUN_MARK if attempt < max_attempts else LAST_MARK
    return f"{mark} · attempt {attempt} of {max_attempts} · {base}"


def chain_message(attempt: int, max_attempts: int) -> str:
    """What the guard logs for an attempt: whether a crash of this run will start another."""
    if attempt < max_attempts:
        return (f"attempt {attempt} of {max_attempts}: if this run crashes, the re-run automation starts attempt "
                f"{attempt + 1}")
    return (f"attempt {attempt} of {max_attempts}: the last automatic attempt; if this run crashes the chain of "
            f"re-runs stops here (max_attempts {max_attempts}): read the crashed runs' logs, fix the cause, then "
            "start the deployment by hand")


def _int_param(parameters: dict, name: str, default: int) -> int:
    """An integer parameter of the run; a missing or malformed one counts as ``default``."""
    try:
        return int(parameters.get(name, default))
    except (TypeError, ValueError):
        return default


def admit(default_max_attempts: int = 3) -> dict[str, str]:
    """Pull step: mark the flow run with its attempt (see the module's docstring); returns the name given.

    Outside a flow run's process (no ``PREFECT__FLOW_RUN_ID``, e.g. ``prefect deploy`` checking its steps) it
    does nothing.
    """
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return {}
    from prefect.client.orchestration import get_client
    from prefect.logging.loggers import flow_run_logger

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        params = run.parameters or {}
        max_attempts = _int_param(params, "max_attempts", default_max_attempts)
        attempt = _int_param(params, "attempt", 1)
        name = chain_name(run.name, attempt, max_attempts)
        if name != run.name:
            client.update_flow_run(run.id, name=name)
    flow_run_logger(run).info(chain_message(attempt, max_attempts))
    return {"flow_run_name": name}
