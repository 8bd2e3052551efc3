"""Probe: how far the generated reports' figures reach, against the real filings': does the training data cover
what real filings look like?

    python -m bench.probe_ranges [--n 200] [--balanced 200] [--seed 1234] [--real tests/fixtures/real]

Generates the demo's reports (natural mix and rebalanced pool), parses every file of both sets with the project's
parser and prints, per figure (CET1 ratio, leverage ratio, total risk exposure, total assets), the generated
minimum, 5th/50th/95th percentile and maximum beside each real filing's value, and the share of generated reports
whose figure lies inside the real filings' span. No model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from foundation.paths import code_root
from regulator.generator import generate_dataset
from regulator.xbrl import parse_xbrl_file

# Figure -> the datapoint codes that carry it (EU COREP cell, FFIEC Call Report item).
FIGURES = {
    "CET1 ratio": ("C 03.00 r0010 c0010", "RCOAP793"),
    "leverage ratio": ("C 47.00 r0330 c0010", "RCOA7204"),
    "risk exposure": ("C 02.00 r0010 c0010", "RCOAA223"),
    "total assets": ("RCON2170",),
}


def figure(facts: dict, codes: tuple[str, ...]) -> float | None:
    """The first of ``codes`` that ``facts`` holds as a number."""
    for code in codes:
        value = facts.get(code)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def values(paths: list[Path]) -> dict[str, list[float]]:
    """Each figure's values over the parsed ``paths`` (files that do not parse or lack the figure are skipped)."""
    out: dict[str, list[float]] = {name: [] for name in FIGURES}
    for path in paths:
        try:
            facts = parse_xbrl_file(path).facts
        except Exception:  # noqa: BLE001 - a packaged CSV or a refused file has no place in a range
            continue
        for name, codes in FIGURES.items():
            value = figure(facts, codes)
            if value is not None:
                out[name].append(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--balanced", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--real", type=Path, default=code_root() / "tests" / "fixtures" / "real")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(args.n, args.seed, Path(tmp), n_train_balanced=args.balanced)
        generated = values(sorted(Path(tmp).rglob("*.xml")))
    real = values(sorted(args.real.rglob("*.xml")) + sorted(args.real.rglob("*.xbrl")))
    for name in FIGURES:
        g = np.array(generated[name])
        r = sorted(real[name])
        if not len(g):
            continue
        q = np.percentile(g, [0, 5, 50, 95, 100])
        inside = float(np.mean((g >= r[0]) & (g <= r[-1]))) if r else float("nan")
        print(f"{name:15s} generated n={len(g):4d} min {q[0]:.4g} p5 {q[1]:.4g} p50 {q[2]:.4g} p95 {q[3]:.4g} "
              f"max {q[4]:.4g} | real {', '.join(f'{v:.4g}' for v in r)} | generated inside the real span "
              f"{inside:.0%}")


if __name__ == "__main__":
    main()
