"""Probe: what directive ROUGE-L would each behaviour earn on the demo's test split? No model: scored by rendering.

The directive a model writes is the product of choices: which findings carry a measure (one per BREACH or
data-quality line, the rule's remedy) and the closing sentence's house style (the template family, which the report
does not name, so a model cannot know it for a bank it never saw, and one family is held out of training). This
renders the test references' directives as a model would write them had it made a given set of choices, and scores
them against the references with the evaluation's own ROUGE-L. It also prints how often each rule's measure opens
a training directive: a model that has not learned to condition on its check lines writes the most frequent one.

    python -m bench.probe_ceiling configs/regulator-cpu.yaml
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from rouge_score import rouge_scorer

    from data_contracts.prepare import held_out_families, split_by_bank
    from finetune.config import load_config
    from regulator.generator import generate_dataset
    from regulator.packages import read_filing_file
    from regulator.render import due, render_directive
    from regulator.rules import evaluate_rules

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    d = cfg.data
    with tempfile.TemporaryDirectory() as tmp:
        raw = generate_dataset(d.n_examples, d.seed, Path(tmp), d.eu_fraction, n_train_balanced=d.train_balanced,
                               eu_csv_fraction=d.eu_csv_fraction, balanced_compliant=d.train_balanced_compliant,
                               eu_module_fraction=d.eu_module_fraction)
        held = held_out_families(raw, d.seed)
        splits = split_by_bank(raw, d.seed, tuple(d.split_fractions))
        test = splits["test"].head(cfg.eval.max_examples)

        def parsed_of(row) -> tuple:
            (parsed,) = read_filing_file(Path(row.source_file))
            return parsed, evaluate_rules(parsed)

        for name, df in (("train", splits["train"]), ("test", test)):
            first = collections.Counter(next((c.code for c in parsed_of(r)[1].checks if due(c)), "no measure")
                                        for r in df.itertuples())
            print(f"{name}: {len(df)} reports; first measure of the directive: "
                  + ", ".join(f"{k} {v / len(df):.0%}" for k, v in first.most_common()))
        mode = collections.Counter(splits["train"]["template_family"]).most_common(1)[0][0]
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        scores: dict[str, list[float]] = collections.defaultdict(list)
        for row in test.itertuples():
            parsed, result = parsed_of(row)
            known = mode if row.template_family in held else row.template_family
            first = [next(c.code for c in result.checks if c.code != "DATA_QUALITY")]
            for label, family, codes in (
                ("no measure, always; one house style", mode, []),
                ("no measure, always; the bank's house style", known, []),
                (f"the {first[0]} measure, always; one house style", mode, first),
                ("the right measures, one house style", mode, None),
                ("the right measures, the bank's house style", known, None),
            ):
                text = render_directive(parsed, result, family, codes)
                scores[label].append(scorer.score(row.directive, text)["rougeL"].fmeasure)
    print(f"directive ROUGE-L on {len(test)} test reports (one house style: {mode}, the commonest in training; the "
          f"held-out family {held} is written in it)")
    for label, values in scores.items():
        print(f"  {np.mean(values):.3f}  {label}")


if __name__ == "__main__":
    main()
