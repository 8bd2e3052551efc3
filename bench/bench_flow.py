"""Orchestration: a fully cached flow re-run vs the cold run, and Prefect's overhead per task.

Runs the whole ``finetune`` flow twice in one process on a tiny model and small data, in a temporary project home
(so nothing is cached before the cold run), against a temporary local Prefect server.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {
    "model.max_seq_len": 1024, "data.n_examples": 120, "data.train_balanced": 16, "train.max_steps": 4,
    "train.curve_points": 1, "train.curve_examples": 4, "lora.sweep_lrs": [1e-3, 2e-3], "lora.sweep_steps": 1,
    "eval.max_examples": 4, "eval.base_max_new_tokens": 8,
    "eval.max_new_tokens": 24, "eval.bootstrap_samples": 200, "gate.f1_floor": 0.0, "gate.rouge_floor": 0.0,
    "gate.forgetting_ceiling": 100.0, "gate.real_max_false_violations": None, "gate.real_max_invented_figures": None,
    "gate.real_max_unreadable_answers": None,
    "audit.min_examples_for_full_ft": 10,
}
STAGES = 7


def run() -> dict:
    """Cold vs cached wall time of the whole flow; returns figures and the ratio."""
    from finetune.models import base_model_dir, build_tiny_model
    from foundation.paths import models_dir

    os.environ.setdefault("FINETUNE_MODEL_CACHE", str(models_dir()))
    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    os.environ["FINETUNE_HOME"] = str(tmp / "home")
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp / "prefect" / "storage"))
    tiny = build_tiny_model(tmp / "tiny", base_model_dir())
    from flows.finetune import finetune

    overrides = {**OVERRIDES, "model.ref": str(tiny)}
    times = []
    for _ in range(2):
        start = time.perf_counter()
        finetune(config_path=str(ROOT / "configs" / "regulator-cpu.yaml"), overrides=overrides)
        times.append(time.perf_counter() - start)
    cold, cached = times
    result = {"cold_s": round(cold, 2), "cached_s": round(cached, 2), "cached_over_cold": round(cached / cold, 4),
              "prefect_overhead_per_cached_task_s": round(cached / STAGES, 3), "target_cached_over_cold": 0.03}
    print(f"flow cold {cold:.1f} s, fully cached {cached:.1f} s: ratio {cached / cold:.3f} (target <= 0.03); "
          f"{cached / STAGES:.2f} s per cached task")
    return result


if __name__ == "__main__":
    run()
