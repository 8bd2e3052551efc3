"""Stage 2 — infra_check: detect the real hardware, choose ZeRO stage/offload, write the DeepSpeed config."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from finetune.config import RunConfig
from foundation.paths import cache_dir
from finetune.setup_plan import choose_training_setup
from tasks.stage import RETRIES, RETRY_DELAY_S, build_stage, maybe_inject_fault, transient_only
from training.infra import detect_infra
from training.memory import model_shape


@task(name="infra_check", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=transient_only,
      persist_result=True)
def infra_check(cfg: dict, model_dir: str, out_dir: str, key: str) -> dict:
    """Detect accelerators, bf16, RAM, disk, DeepSpeed ops; write ``ds_config.json`` for training.

    Returns:
        The stage manifest: detected hardware, chosen precision, ZeRO stage, offload and world size.
    """
    maybe_inject_fault("infra_check")
    run_cfg = RunConfig.model_validate(cfg)
    infra = detect_infra(cache_dir())
    setup = choose_training_setup(run_cfg, infra, model_shape(model_dir))
    ops = ", ".join(f"{k}: {'compatible' if v['compatible'] else 'no'}{' (built)' if v['prebuilt'] else ''}"
                    for k, v in infra.ds_ops.items())
    markdown = "\n".join([
        "# Infrastructure check",
        f"- accelerator: **{infra.accelerator}** ({infra.gpu_count} GPU(s) {infra.gpu_names}), backend {infra.comm_backend}",
        f"- CPU: {infra.cpu_cores} cores, {infra.cpu_ram_gb} GB RAM; disk free {infra.disk_free_gb} GB",
        f"- torch {infra.torch_version}, DeepSpeed {infra.deepspeed_version}; ops: {ops}",
        f"- precision: **{'bf16' if setup.bf16 else 'fp32'}**; ZeRO-{setup.zero_stage}, offload {setup.offload}, "
        f"world size {setup.world_size}",
        *[f"- {n}" for n in setup.notes],
    ])
    create_markdown_artifact(key="infra-check", markdown=markdown, description="Detected hardware and DeepSpeed plan")

    def write(tmp: Path) -> dict:
        (tmp / "ds_config.json").write_text(json.dumps(setup.ds_config, indent=2))
        (tmp / "infra.json").write_text(json.dumps(infra.as_dict(), indent=2))
        (tmp / "effective_config.json").write_text(setup.cfg.model_dump_json(indent=2))
        (tmp / "infra.md").write_text(markdown)
        return {"accelerator": infra.accelerator, "bf16": setup.bf16, "zero_stage": setup.zero_stage,
                "offload": setup.offload, "world_size": setup.world_size, "comm_backend": infra.comm_backend,
                "notes": setup.notes}

    return build_stage(out_dir, write, stage="infra_check", key=key)
