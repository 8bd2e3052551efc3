"""Run benchmarks and print a table of their figures: ``python -m bench [flow] [data] [generate] [train] [memory]
[backends]`` (all of these by default); ``python -m bench gpu`` on a machine with a CUDA device."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

BENCHES = ("flow", "data", "generate", "train", "memory", "backends")
GPU_ONLY = ("gpu",)  # run by name on a machine with a CUDA device
RESULTS = Path(__file__).resolve().parent / "results"


def _run_one(name: str) -> dict:
    module = importlib.import_module(f"bench.bench_{name}")
    if name in ("train", "memory", "backends"):
        from finetune.models import provision_base_model

        return module.run(model=provision_base_model())
    return module.run()


def _flat(prefix: str, value: object, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all by default), print every figure, write bench/results/<name>.json."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {BENCHES} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHES) - set(GPU_ONLY))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHES + GPU_ONLY}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.names or BENCHES:
        start = time.perf_counter()
        result = _run_one(name)
        result["bench_wall_s"] = round(time.perf_counter() - start, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        flat: dict = {}
        _flat("", result, flat)
        rows += [(name, k, v) for k, v in flat.items()]
    width = max(len(k) for _, k, _ in rows)
    print(f"\n{'bench':<9} {'figure':<{width}}  value")
    for name, key, value in rows:
        print(f"{name:<9} {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
