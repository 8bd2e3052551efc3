"""Create or update the project's Prefect automations (``deploy/automations.yaml``) on the server at PREFECT_API_URL.

Idempotent by name: a missing automation is created, one whose definition differs from the file is updated in
place, an identical one is left alone. Leaving identical ones alone matters: a proactive trigger keeps its state
(which runs sent a heartbeat) only while the automation is not re-created, so ``scripts/stack.sh up`` run again
while a run is in flight must not reset it.

    python -m flows.automations [deploy/automations.yaml]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "deploy" / "automations.yaml"


def load_automations(path: Path) -> list[AutomationCore]:
    """The automations of a YAML file (``automations:`` list), validated by Prefect's own schema."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("automations"), list):
        raise ValueError(f"{path}: expected a mapping with an 'automations' list")
    return [AutomationCore.model_validate(item) for item in data["automations"]]


def _definition(automation: AutomationCore) -> dict[str, Any]:
    """What makes two automations the same, as JSON (the server adds ids and timestamps). A trigger's ``after``,
    ``expect`` and ``for_each`` are sets: their JSON order follows string hashing, which differs per process, so
    they are sorted (unsorted, an unchanged automation would look changed and be updated, losing its trigger's
    state for the runs in flight)."""
    data = AutomationCore.model_validate(automation.model_dump()).model_dump(
        mode="json", include={"name", "description", "enabled", "trigger", "actions"})
    trigger = data.get("trigger", {})
    for key in ("after", "expect", "for_each"):
        if isinstance(trigger.get(key), list):
            trigger[key] = sorted(trigger[key])
    return data


async def apply(automations: list[AutomationCore]) -> dict[str, str]:
    """Create or update each automation by name; returns name -> 'created' | 'updated' | 'unchanged'."""
    done: dict[str, str] = {}
    async with get_client() as client:
        for automation in automations:
            existing = await client.read_automations_by_name(automation.name)
            if not existing:
                await client.create_automation(automation)
                done[automation.name] = "created"
                continue
            first, *extra = existing
            for duplicate in extra:  # left by hand or by an older version of this script
                await client.delete_automation(duplicate.id)
            if _definition(first) == _definition(automation):
                done[automation.name] = "unchanged"
            else:
                await client.update_automation(first.id, automation)
                done[automation.name] = "updated"
    return done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_FILE
    for name, what in asyncio.run(apply(load_automations(path))).items():
        print(f"automation {name}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
