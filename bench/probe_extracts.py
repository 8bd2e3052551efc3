"""Probe (lever 33): can a trained model learn, from generated reports filed as real extracts are, what the real
FFIEC extracts need — the buffer line that compares nothing ends DATA_QUALITY, and the missing leverage denominator
is a finding? Continues training a model folder (e.g. a demo's full FT) for a few steps, plain PyTorch, on a
rebalanced pool of which a share of US reports leave out ``US_EXTRACT_OMITS``, then scores it on the real filings
and the real-derived cases with constrained heads, as ``bench/probe_real.py`` does.

    python -m bench.probe_extracts --model runs/.../train_full/model --steps 16 --extract-fraction 0.5

Prints the scores before and after and writes ``bench/results/probe_extracts.json``. A probe of the lever, not the
shipped path: the demo trains from the base model with ``data.train_us_extract_fraction`` (bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.probe_decision import train_steps
from bench.probe_real import print_and_write, run as probe_real
from foundation.paths import code_root

RESULTS = Path(__file__).resolve().parent / "results" / "probe_extracts.json"


def continue_training(model_dir: Path, out: Path, *, pool: int, extract_fraction: float, steps: int, lr: float,
                      micro: int, seed: int) -> dict:
    """Train ``model_dir`` further on ``pool`` generated training-only reports (``extract_fraction`` of the US ones
    as extracts) for ``steps`` steps of ``micro`` examples (fp32, answer-only loss); save it to ``out``."""
    from transformers import AutoTokenizer

    from data_contracts.contracts import ContractLimits
    from data_contracts.prepare import prepare_dataset
    from regulator.generator import generate_dataset
    from training.data import load_examples
    from training.full_ft import load_trainable_model
    from training.objective import answer_only_loss

    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        # 120 natural reports fill the validation and test splits the contracts require; training reads the pool
        raw = generate_dataset(120, seed, Path(tmp) / "raw", n_train_balanced=pool, us_extract_fraction=extract_fraction)
        manifest = prepare_dataset(raw=raw, tokenizer=tok, out_dir=Path(tmp), seed=seed, max_seq_len=1024,
                                   limits=ContractLimits(max_tokens=1024), split_fractions=(0.4, 0.3, 0.3))
        examples = load_examples(Path(manifest["dataset_dir"]), "train", ())
    extracts = int(raw["target"].str.contains("leverage assets not reported").sum())
    model = load_trainable_model(str(model_dir), seed=seed, gradient_checkpointing=False)
    params = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    started = time.monotonic()
    train_steps(model, params, examples, steps=steps, lr=lr, micro=micro, accum=1, seed=seed, pad=pad, bf16=False,
                loss_fn=lambda m, batch: answer_only_loss(m, batch),
                after_step=lambda step, loss, tps: (losses.append(round(loss, 4)),
                                                    print(f"step {step} loss {loss:.4f} tok/s {tps:.1f}", flush=True)))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for name in ("card.json",):  # the card says how the model is decoded (constrained heads)
        if (Path(model_dir) / name).is_file():
            (out / name).write_bytes((Path(model_dir) / name).read_bytes())
    return {"pool": pool, "extract_reports": extracts, "steps": steps, "lr": lr, "losses": losses,
            "train_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder to continue from")
    parser.add_argument("--real", type=Path, default=code_root() / "tests" / "fixtures" / "real")
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--extract-fraction", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--seed", type=int, default=4321, help="not the demo's 1234: other banks than it trained on")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trained = continue_training(args.model, Path(tmp) / "model", pool=args.pool,
                                    extract_fraction=args.extract_fraction, steps=args.steps, lr=args.lr,
                                    micro=args.micro, seed=args.seed)
        after = probe_real(str(Path(tmp) / "model"), args.real, "fp32", ("constrained",))
    result = {"model": str(args.model), "training": trained,
              **{f"after/{k}": v for k, v in after.items() if "/" in k}}
    print_and_write(result, RESULTS, width=28)
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    raise SystemExit(main())
