"""Probe: a model on a random sample of the US banking system, from the FFIEC's bulk Call Report data.

The fixture (tests/fixtures/real/ffiec-bulk) holds 17 chosen banks; the FFIEC's whole RC-R Part I schedule of a
quarter holds ~4,600. This draws, with a fixed seed, ``--compliant`` banks the rule engine finds compliant and up to
``--breaches`` it finds in breach (every one when there are fewer), leaves out the fixture's banks, writes them as a
trimmed schedule beside the panel of reporters (``regulator.bulk.trim_schedule``, same bytes) and scores the
model's answers as the evaluation scores real filings:

    python -m bench.probe_bulk --schedule "FFIEC CDR Call Schedule RCRI 06302024.txt" \
        --model runs/<run>/train_full/model [--compliant 100] [--breaches 60] [--seed 0]

The panel of reporters (``FFIEC CDR Call Bulk POR MMDDYYYY.txt``) must lie beside the schedule. Prints the scores
and writes ``bench/results/probe_bulk.json`` (with every answer).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.probe_real import print_and_write
from evaluation.real_set import score_real_filings
from finetune.analysis import analyze_filings, resolve_model_ref
from foundation.paths import code_root, default_registry_dir
from regulator.analyze import analyze_report
from regulator.bulk import POR_NAME, SCHEDULE_NAME, read_bulk_schedule, trim_schedule
from regulator.xbrl import ParsedReport

RESULTS = Path(__file__).resolve().parent / "results" / "probe_bulk.json"
FIXTURE = code_root() / "tests" / "fixtures" / "real" / "ffiec-bulk" / "FFIEC CDR Call Schedule RCRI 06302024.txt"


def sample(schedule: Path, n_compliant: int, n_breaches: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """RSSD ids of the drawn banks (the fixture's left out) and the counts they were drawn from."""
    taken = {p.entity_id for p in read_bulk_schedule(FIXTURE) if isinstance(p, ParsedReport)}
    banks = [p for p in read_bulk_schedule(schedule) if isinstance(p, ParsedReport) and p.entity_id not in taken]
    verdicts = {p.entity_id: analyze_report(p) for p in banks}
    compliant = sorted(r for r, v in verdicts.items() if v.status == "ok" and not v.rule_violations)
    breaches = sorted(r for r, v in verdicts.items() if v.status == "ok" and v.rule_violations)
    rng = random.Random(seed)
    drawn = rng.sample(compliant, min(n_compliant, len(compliant))) + rng.sample(breaches,
                                                                                   min(n_breaches, len(breaches)))
    return drawn, {"banks": len(banks), "compliant": len(compliant), "breaches": len(breaches),
                   "other": len(banks) - len(compliant) - len(breaches)}


def run(schedule: Path, model: str, n_compliant: int, n_breaches: int, seed: int, precision: str) -> dict:
    """Draw, write, analyse with the model, score."""
    month_day_year = "".join(SCHEDULE_NAME.match(schedule.name).groups())
    panel = schedule.with_name(POR_NAME.format(mmddyyyy=month_day_year))
    drawn, population = sample(schedule, n_compliant, n_breaches, seed)
    model_dir = resolve_model_ref(model, default_registry_dir())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        trimmed = trim_schedule(schedule, out, drawn, header_lines=2)
        trim_schedule(panel, out, drawn, header_lines=1)
        started = time.monotonic()
        results = analyze_filings([trimmed], model_dir=model_dir, precision=precision, constrain=True)
        seconds = round(time.monotonic() - started, 1)
    readable = [r for r in results if r.status != "error"]
    scores = {**score_real_filings(readable, len(results) - len(readable)), "seconds": seconds,
              "answers": [r.to_dict() for r in readable]}
    return {"model": str(model_dir), "schedule": str(schedule), "seed": seed, "population": population,
            f"sample of {len(drawn)}/constrained": scores}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", type=Path, required=True, help="an FFIEC CDR RC-R Part I bulk schedule")
    parser.add_argument("--model", default="production", help="a model folder, 'production' or a registry version")
    parser.add_argument("--compliant", type=int, default=100)
    parser.add_argument("--breaches", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    args = parser.parse_args(argv)
    result = run(args.schedule, args.model, args.compliant, args.breaches, args.seed, args.precision)
    print(f"population: {result['population']}")
    print_and_write(result, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
