"""Probe: a model on the real filings and on real-derived cases, with free and with constrained check-line
heads (``eval.constrain_heads``), scored as the evaluation scores real filings (``evaluation.real_set``).

    python -m bench.probe_real --model registry/production [--real tests/fixtures/real] [--precision fp32] \
        [--modes free constrained]

The derived cases are the FFIEC extracts with their capital scaled (``regulator.derive``): 0.3 for every bank (all
capital minimums breached), 0.7 for the CBLR electors (just under the framework's 9%); the completed cases are the
same extracts with the two RC-R items they leave out derived from their own figures (``complete_extract``): every
rule in force assessable, all compliant, so ``analyze`` can clear them (``auto_ok``). Prints one table per set and
writes ``bench/results/probe_real.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evaluation.real_set import REAL_COLUMNS, score_real_filings
from finetune.analysis import analyze_filings, resolve_model_ref
from foundation.paths import code_root, default_registry_dir, write_json_atomic
from regulator.derive import complete_extract, scale_capital
from regulator.xbrl import parse_xbrl_file

RESULTS = Path(__file__).resolve().parent / "results" / "probe_real.json"


def derived_cases(ffiec: Path, out: Path) -> list[Path]:
    """Write the real-derived breach cases of every FFIEC extract into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(ffiec.glob("*.xml")):
        text = source.read_text()
        factors = (0.3, 0.7) if parse_xbrl_file(source).framework == "CBLR" else (0.3,)
        for factor in factors:
            path = out / f"{source.stem}-capital-x{factor}.xml"
            path.write_text(scale_capital(text, factor))
            paths.append(path)
    return paths


def completed_cases(ffiec: Path, out: Path) -> list[Path]:
    """Write every FFIEC extract completed (``regulator.derive.complete_extract``) into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(ffiec.glob("*.xml")):
        path = out / f"{source.stem}-completed.xml"
        path.write_text(complete_extract(source.read_text()))
        paths.append(path)
    return paths


def run(model: str, real: Path, precision: str, modes: tuple[str, ...] = ("free", "constrained")) -> dict:
    """Both sets, each decoding of ``modes``: scores, answers' statuses and seconds."""
    model_dir = resolve_model_ref(model, default_registry_dir())
    out: dict = {"model": str(model_dir), "real": str(real), "precision": precision}
    with tempfile.TemporaryDirectory() as tmp:
        derived = derived_cases(real / "ffiec", Path(tmp) / "derived")
        completed = completed_cases(real / "ffiec", Path(tmp) / "completed")
        for mode in modes:
            constrain = mode == "constrained"
            for name, paths in (("real", [real]), ("derived", derived), ("completed", completed)):
                started = time.monotonic()
                results = analyze_filings(paths, model_dir=model_dir, precision=precision, constrain=constrain)
                readable = [r for r in results if r.status != "error"]
                out[f"{name}/{mode}"] = {**score_real_filings(readable, len(results) - len(readable)),
                                          "seconds": round(time.monotonic() - started, 1),
                                          "answers": [r.to_dict() for r in readable]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="production", help="a model folder, 'production' or a registry version")
    parser.add_argument("--real", type=Path, default=code_root() / "tests" / "fixtures" / "real")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--modes", nargs="+", choices=("free", "constrained"), default=["free", "constrained"])
    args = parser.parse_args(argv)
    print_and_write(run(args.model, args.real, args.precision, tuple(args.modes)), RESULTS)
    return 0


def print_and_write(result: dict, path: Path, width: int = 22) -> None:
    """Print the scores of every ``set/mode`` key of ``result`` side by side, then write ``result`` to ``path``."""
    keys = [k for k in result if "/" in k]
    print(f"{'':40}" + "".join(f"{k:>{width}}" for k in keys))
    for key, label in (*REAL_COLUMNS, ("seconds", "seconds")):
        print(f"{label:40}" + "".join(f"{result[k].get(key)!s:>{width}}" for k in keys))
    for k in keys:
        print(f"{k}: false by rule {result[k]['false_by_rule']}, missed by rule {result[k]['missed_by_rule']}")
    write_json_atomic(path, result)
    print(f"written: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
