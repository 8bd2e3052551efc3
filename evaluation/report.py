"""The comparison report: table rows (base / LoRA / full FT), markdown, example predictions and PNG plots.

Inputs are plain dicts so the report can be rebuilt from saved JSON without any model:

- ``scores``: the output of :func:`evaluation.metrics.score_predictions` for one system;
- ``forgetting``: the system's relative general-domain NLL increase (None for the base model);
- ``training``: ``{"trainable_params", "train_seconds", "tokens_per_second"}`` from the training manifest
  (None for the base model).

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas, never through pyplot, so no global backend
is switched and no display is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from regulator.answers import RULE_CODES, parse_answer
from foundation.errors import EvaluationError
from foundation.paths import read_jsonl

HEADLINE = [
    ("f1_micro", "violation F1 (micro)"),
    ("f1_micro_ci", "F1 95% CI"),
    ("f1_macro", "F1 (macro)"),
    ("rouge_l", "directive ROUGE-L"),
    ("exact_match", "exact match"),
    ("check_accuracy", "check-line accuracy"),
    ("parse_rate", "parseable"),
    ("forgetting_increase", "forgetting (NLL increase)"),
    ("trainable_params", "trainable params"),
    ("train_seconds", "training time"),
    ("tokens_per_second", "training tokens/s"),
]


def comparison_rows(
    systems: Mapping[str, Mapping[str, Any]], *, codes: Sequence[str] = RULE_CODES
) -> list[dict[str, Any]]:
    """Return one JSON-able row per system (in the mapping's order), for a table artifact or the markdown report.

    Args:
        systems: system name -> ``{"scores": ..., "forgetting": ..., "training": ...}`` (see the module doc).
    """
    rows = []
    for name, system in systems.items():
        scores = system.get("scores") or {}
        training = system.get("training") or {}
        lo, hi = scores.get("f1_micro_ci_low"), scores.get("f1_micro_ci_high")
        row: dict[str, Any] = {"system": name}
        row.update({key: scores.get(key) for key in ("f1_micro", "f1_macro", "rouge_l", "exact_match",
                                                       "check_accuracy", "parse_rate")})
        row["f1_micro_ci"] = f"{lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else None
        row["forgetting_increase"] = system.get("forgetting")
        row.update({key: training.get(key) for key in ("trainable_params", "train_seconds", "tokens_per_second")})
        per_code = scores.get("per_code") or {}
        row.update({f"f1_{code}": (per_code.get(code) or {}).get("f1") for code in codes})
        rows.append(row)
    return rows


def format_figure(key: str, value: Any) -> str:
    """One figure as the tables show it: counts with separators, times as minutes, forgetting as a signed percent,
    other floats to three decimals, and ``—`` for a missing or undefined value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if key == "trainable_params":
        return f"{int(value):,}"
    if key == "train_seconds":
        minutes, seconds = divmod(int(round(value)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"
    if key == "tokens_per_second":
        return f"{value:,.0f}"
    if key == "forgetting_increase":
        return f"{value:+.1%}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def render_comparison_markdown(rows: list[dict[str, Any]], *, codes: Sequence[str] = RULE_CODES) -> str:
    """Render the headline table (metrics in rows, systems in columns) and the per-code F1 table."""
    systems = [r["system"] for r in rows]
    headline = _table(
        ["metric", *systems], [[label, *(format_figure(key, r.get(key)) for r in rows)] for key, label in HEADLINE]
    )
    per_code = _table(
        ["rule code", *systems], [[code, *(format_figure("f1", r.get(f"f1_{code}")) for r in rows)] for code in codes]
    )
    return f"## Comparison\n\n{headline}\n\n## Violation F1 per rule code\n\n{per_code}\n"


def select_examples(
    references: Sequence[str], predictions: Mapping[str, Sequence[str]], *, n: int = 3
) -> list[int]:
    """Pick ``n`` example indexes, those where the systems' violation verdicts differ first (most telling)."""
    def differ(i: int) -> bool:
        verdicts = {parse_answer(p[i]).violations for p in predictions.values()}
        return len(verdicts | {parse_answer(references[i]).violations}) > 1

    disagreeing = [i for i in range(len(references)) if differ(i)]
    rest = [i for i in range(len(references)) if i not in set(disagreeing)]
    return (disagreeing + rest)[:n]


def _cell(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return escaped.strip().replace("\n", "<br>") or "*(empty)*"


def render_examples_markdown(
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    indexes: Sequence[int],
    *,
    ids: Sequence[str] | None = None,
) -> str:
    """Render the chosen examples as a table: one row per example, reference and each system side by side."""
    systems = list(predictions)
    body = [
        [ids[i] if ids is not None else str(i), _cell(references[i]), *(_cell(predictions[s][i]) for s in systems)]
        for i in indexes
    ]
    return "## Example predictions\n\n" + _table(["example", "reference", *systems], body) + "\n"


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a training metrics log (one JSON object per line); return the records that carry a ``step``."""
    return [r for r in read_jsonl(path, error=EvaluationError, hint="the training metrics log is damaged")
            if isinstance(r, dict) and "step" in r]


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_per_code_f1(
    scores: Mapping[str, Mapping[str, Any]], path: Path, *, codes: Sequence[str] = RULE_CODES
) -> Path:
    """Grouped bars of per-code violation F1, one colour per system; undefined F1 is left blank. Returns ``path``."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(codes)), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(scores))
    for k, (system, system_scores) in enumerate(scores.items()):
        per_code = system_scores.get("per_code") or {}
        heights = [(per_code.get(c) or {}).get("f1") for c in codes]
        xs = [j + (k - (len(scores) - 1) / 2) * width for j in range(len(codes))]
        bars = ax.bar(xs, [math.nan if h is None else h for h in heights], width=width, label=system)
        for x, h in zip(xs, heights):
            if h == 0:  # a zero bar is invisible; label it so it is not read as "undefined"
                ax.text(x, 0.01, "0", ha="center", va="bottom", fontsize=7, color=bars.patches[0].get_facecolor())
    ax.set_xticks(range(len(codes)), list(codes), rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title("Violation F1 per rule code (blank: code neither in references nor predicted)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_loss_curves(logs: Mapping[str, Path], path: Path) -> Path:
    """Training loss against step for each run (``eval_loss`` records, when present, as markers). Returns ``path``."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    for system, log in logs.items():
        all_records = read_metrics_jsonl(log)
        records = [r for r in all_records if r.get("loss") is not None]
        if not records:
            raise EvaluationError(f"{log} has no records with 'step' and 'loss': cannot plot {system}'s training")
        line = ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=f"{system} train")[0]
        evals = [r for r in all_records if r.get("eval_loss") is not None]
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o--", color=line.get_color(),
                    label=f"{system} eval")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Teacher-forced violation F1 (solid) and check-line accuracy (dotted) on the validation split against
    examples seen, one colour per system. Returns ``path``."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    for system, records in curves.items():
        points = [r for r in records if r.get("tf_f1_micro") is not None]
        if not points:
            continue
        line = ax.plot([r["examples_seen"] for r in points], [r["tf_f1_micro"] for r in points], "o-",
                       label=f"{system} violation F1")[0]
        ax.plot([r["examples_seen"] for r in points], [r["tf_check_accuracy"] for r in points], ":",
                color=line.get_color(), label=f"{system} check-line accuracy")
    ax.set_xlabel("training examples seen")
    ax.set_ylim(0, 1.05)
    ax.set_title("Learning curve on the validation split (teacher-forced outcome of each check line)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def render_curve_markdown(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The learning-curve points as a table: system, examples seen, teacher-forced F1 and check-line accuracy."""
    body = [[system, str(r["examples_seen"]), format_figure("f1", r.get("tf_f1_micro")),
             format_figure("check_accuracy", r.get("tf_check_accuracy"))]
            for system, records in curves.items() for r in records]
    if not body:
        return "No learning curve was recorded (train.curve_points is 0)."
    return _table(["system", "examples seen", "violation F1 (teacher-forced)", "check-line accuracy"], body)


def render_paired_markdown(paired: Mapping[str, Any]) -> str:
    """The paired bootstrap of full FT minus LoRA on the same test examples, as sentences a reader can act on."""
    if not paired:
        return "No LoRA baseline was trained, so there is no paired comparison."
    lines = []
    for key, label in (("f1_micro", "violation F1 (micro)"), ("rouge_l", "directive ROUGE-L")):
        p = paired.get(key) or {}
        if p.get("difference") is None:
            lines.append(f"- {label}: undefined")
            continue
        ci = f"{p['ci_low']:+.3f} to {p['ci_high']:+.3f}" if p.get("ci_low") is not None else "undefined"
        lines.append(f"- {label}: full FT {p['a']:.3f} vs LoRA {p['b']:.3f}, difference **{p['difference']:+.3f}** "
                     f"(95% CI {ci}; share of resamples where full FT is not better: {p['p_not_better']:.3f})")
    lines.append(f"\nPaired bootstrap over the same {paired.get('n_examples')} test examples, "
                 f"{paired.get('n_bootstrap')} resamples.")
    return "\n".join(lines)


def render_sweep_markdown(sweep: Mapping[str, Any] | None, lora_training: Mapping[str, Any] | None) -> str:
    """How LoRA's learning rate was chosen: the sweep's trials, or the configured value."""
    if not sweep:
        lr = (lora_training or {}).get("lr")
        return f"LoRA trained at the configured learning rate {lr} (no sweep: lora.sweep_lrs is empty)."
    body = [[f"{t['lr']:g}", format_figure("f1", t.get("tf_f1_micro")), format_figure("check_accuracy", t.get("tf_check_accuracy")),
             format_figure("loss", t.get("final_loss")), f"{t.get('seconds', 0):.0f} s"] for t in sweep["trials"]]
    head = (f"Each candidate trained {sweep['steps']} steps on the training split from the base model and was scored "
            f"teacher-forced on the validation split; chosen: **{sweep['chosen_lr']:g}**.")
    return head + "\n\n" + _table(["lr", "violation F1", "check-line accuracy", "final loss", "time"], body)
