"""Probe: does a model open its answer with the data-quality finding a filing's missing item calls for?

The missing-denominator finding (``DATA_QUALITY leverage assets not reported``) is one decision: the answer's first
line opens ``- DATA_QUALITY`` or the first rule's check line (``- CET1_RATIO``, ``- LEVERAGE``). This teacher-forces
each filing's reference answer (the rule engine's) to that point and prints the model's probability of the first
against the second, for the real filings (``--real``: the FFIEC extracts and bulk banks; EU filings are left out)
and for the extracts completed and scaled (``regulator.derive``). Greedy decoding writes the finding where the
probability is over 0.5; how far it is from 0.5, and how it differs between filings that leave the item out and
those that file it, says whether a lever moved the decision before a whole demo is spent on it (bench/NOTES.md,
levers 46-49; until lever 49 the decision was the line after the last rule's, ``- DATA_QUALITY`` or ``DIRECTIVE``).

    python -m bench.probe_gap --model runs/<run>/train_full/model [--real tests/fixtures/real]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from foundation.paths import code_root
from regulator.analyze import expand_paths, read_filings
from regulator.derive import complete_extract, scale_capital
from regulator.drills import DQ_OPENING, decision_point
from regulator.prompts import render_prompt
from regulator.render import family_for_bank, render_target
from regulator.rules import evaluate_rules
from regulator.xbrl import ParsedReport, parse_xbrl_bytes, render_report

def continuation_logprob(model: Any, tokenizer: Any, prefix_ids: list[int], text: str) -> float:
    """Log-probability of ``text`` (its tokens, no special ones) right after ``prefix_ids``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prefix_ids + ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    start = len(prefix_ids) - 1
    return sum(logprobs[start + i, token].item() for i, token in enumerate(ids))


def p_data_quality(model: Any, tokenizer: Any, parsed: ParsedReport) -> tuple[float, str]:
    """P(``- DATA_QUALITY``) against P(the first rule's ``- CODE``) as the answer's first line, and what the reference
    writes there."""
    prefix, truth, rule_opening = decision_point(
        render_target(parsed, evaluate_rules(parsed), family_for_bank(parsed.entity_id)))
    ids = tokenizer(render_prompt(tokenizer, render_report(parsed)) + prefix, add_special_tokens=False)["input_ids"]
    dq, rule = (continuation_logprob(model, tokenizer, ids, opening) for opening in (DQ_OPENING, rule_opening))
    return 1.0 / (1.0 + math.exp(rule - dq)), truth


def cases(real: Path) -> list[tuple[str, ParsedReport]]:
    """The US real filings of ``real``, then each FFIEC extract completed and scaled to 0.3 of its capital."""
    paths, _ = expand_paths([real])
    out = [(f"{p.entity_name[:28]} ({p.form})", p) for path in paths for p in read_filings(path)
           if isinstance(p, ParsedReport) and p.jurisdiction == "US"]
    for source in sorted((real / "ffiec").glob("*.xml")):
        text = source.read_text()
        for tag, variant in (("completed", complete_extract(text)), ("capital x0.3", scale_capital(text, 0.3))):
            out.append((f"{source.stem} {tag}", parse_xbrl_bytes(variant.encode(), source=f"{source.stem}-{tag}")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (e.g. runs/<run>/train_full/model)")
    parser.add_argument("--real", type=Path, default=code_root() / "tests" / "fixtures" / "real")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    print(f"{'filing':46s} {'reference writes':18s} P(DATA_QUALITY)")
    for name, parsed in cases(args.real):
        p, truth = p_data_quality(model, tokenizer, parsed)
        print(f"{name:46s} {truth[:16]:18s} {p:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
