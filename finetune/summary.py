"""The run summary: what a finished (or rejected) ``finetune`` run produced, as ``summary.json`` and as the few
lines a user reads on the terminal at the end of ``finetune run`` / ``make demo``.

Plain Python: the flow builds the dict, the CLI prints it.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

SYSTEMS = ("base", "LoRA", "full FT")
# The report's headline figures the terminal shows (labels and formats come from evaluation.report).
_SHOWN = ("f1_micro", "f1_macro", "check_accuracy", "rouge_l", "forgetting_increase", "tokens_per_second",
          "train_seconds")


def evaluation_result(eval_dir: Path) -> dict[str, Any]:
    """The parts of the evaluate stage's ``metrics.json`` a summary shows: rows, paired difference, where plots are."""
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text())
    return {
        "report": str(Path(eval_dir) / "report.md"),
        "plots": [str(p) for p in sorted(Path(eval_dir).glob("*.png"))],
        "rows": metrics.get("rows", []),
        "paired_full_minus_lora": metrics.get("paired_full_minus_lora", {}),
        "n_test": metrics.get("n_test"),
        "real": metrics.get("real") or {},
        "lora_lr": ((metrics.get("lora_lr_sweep") or {}).get("chosen_lr")
                    or (metrics.get("training", {}).get("LoRA") or {}).get("lr")),
    }


def _ui_address() -> str | None:
    """The Prefect UI's address when a server answers there (PREFECT_API_URL, else the stack's default port)."""
    api = os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{os.environ.get('PREFECT_PORT', '4200')}/api"
    try:
        with urllib.request.urlopen(api.rstrip("/") + "/health", timeout=1) as response:  # noqa: S310 (local URL)
            if response.status == 200:
                return api.rstrip("/").removesuffix("/api")
    except OSError:
        return None
    return None


STAGE_ORDER = ("audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "evaluate_production",
               "deployment_gate")


def _real_table(real: dict[str, Any]) -> list[str]:
    """The systems on the real filings, beside the test split's table (``evaluation.real_set``'s counts)."""
    from evaluation.real_set import REAL_COLUMNS

    scores = real.get("scores") or {}
    if not scores:
        return [f"\nReal filings: none scored ({'eval.real_source unset' if not real.get('source') else real['source']})."]
    systems = [s for s in SYSTEMS if s in scores]
    width = max(len(label) for _, label in REAL_COLUMNS)
    first = scores[systems[0]]
    lines = [f"\nOn {first['n_filings']} real filings ({real.get('source')}; never trained on):",
             " " * width + "".join(f"{s:>12}" for s in systems)]
    for key, label in REAL_COLUMNS[1:]:
        lines.append(f"{label:<{width}}" + "".join(f"{scores[s].get(key)!s:>12}" for s in systems))
    return lines


def render_terminal_summary(summary: dict[str, Any]) -> str:
    """A short, plain-text end of run: result table, full FT - LoRA, gate criteria, where things are, what next."""
    from evaluation.report import HEADLINE, format_figure  # matplotlib loads only when a summary is printed

    result = summary.get("result", {})
    lines = ["", "=" * 78, f"finetune run finished: {summary.get('run_dir')}"]
    done = summary.get("stages", {})
    order = [*STAGE_ORDER, *sorted(set(done) - set(STAGE_ORDER))]
    stages = [(name, done[name]) for name in order if isinstance(done.get(name), dict) and "wall_s" in done[name]]
    if stages:
        lines.append("Stages: " + ", ".join(
            f"{name} {m['wall_s']:.0f} s{' (cached)' if m.get('cached') else ''}" for name, m in stages))
    if result.get("no_new_data"):
        lines.append(f"Data: {result['no_new_data']}")
    if summary.get("memory_reuse"):
        lines.append(f"Freed-memory reuse: {summary['memory_reuse']}")
    if summary.get("fp32_host_budget"):
        lines.append(f"Budget: {summary['fp32_host_budget']}")
    rows = {r["system"]: r for r in result.get("rows", [])}
    if rows:
        systems = [s for s in SYSTEMS if s in rows]
        columns = [(key, label) for key, label in HEADLINE if key in _SHOWN]
        width = max(len(label) for _, label in columns)
        lines.append(f"\nResults on {result.get('n_test')} held-out test reports:")
        lines.append(" " * width + "".join(f"{s:>12}" for s in systems))
        for key, label in columns:
            lines.append(f"{label:<{width}}" + "".join(f"{format_figure(key, rows[s].get(key)):>12}" for s in systems))
        paired = (result.get("paired_full_minus_lora") or {}).get("f1_micro") or {}
        if paired.get("difference") is not None:
            ci = (f"{paired['ci_low']:+.3f} to {paired['ci_high']:+.3f}" if paired.get("ci_low") is not None
                  else "undefined")
            lines.append(f"\nFull FT minus LoRA, violation F1: {paired['difference']:+.3f} (95% CI {ci})"
                         + (f"; LoRA lr {result['lora_lr']:g}" if result.get("lora_lr") else ""))
    lines.extend(_real_table(result.get("real") or {}))
    gate = result.get("gate")
    if gate:
        verdict = "PASSED" if gate.get("passed") else "REJECTED"
        shadow = f" as the shadow of production {gate['shadow_of']}" if gate.get("shadow_of") else ""
        lines.append(f"\nDeployment gate: {verdict}" + (f", promoted {gate['version']}{shadow}" if gate.get("version")
                                                          else ""))
        for c in (gate.get("decision") or {}).get("criteria", []):
            lines.append(f"  [{'ok' if c.get('passed') else 'FAIL'}] {c.get('message')}")
    if result.get("report"):
        lines.append(f"\nReport: {result['report']}")
        lines.extend(f"Plot:   {p}" for p in result.get("plots", []))
    lines.append(f"Summary: {Path(summary.get('run_dir', '.')) / 'summary.json'}")
    ui = _ui_address()
    if ui:
        lines.append(f"Prefect UI: {ui}")
    if gate and gate.get("version"):
        lines.append("\nNext: analyse filings with the promoted model, guarded by the rule engine:")
        lines.append("  .venv/bin/finetune analyze PATH/TO/FILINGS --out analysis.jsonl   (PATH: XBRL files or folders)")
    elif gate:
        lines.append("\nNext: read the report, change the config (see README 'Config reference') and run again.")
    lines.append("=" * 78)
    return "\n".join(lines)
