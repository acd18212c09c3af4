"""Padded token slots with length buckets against padding every batch to max_length.

For the train split of each built-in experiment, one shuffled epoch of batches as the training
loop draws them: the share of token slots that are padding, with the experiment's buckets and
with a single bucket of `data.max_length`. Writes `benchmarks/results/padding.{md,json}`.

    python benchmarks/padding.py        # about a minute (tokenization) on 2 CPU cores
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("rotten_tomatoes", "bbc_topic", "wnut_ner")


def measure(name: str) -> dict:
    from jaxft import config as config_lib
    from jaxft.data import batching
    from jaxft.train import experiment

    config = config_lib.load_experiment(str(ROOT / f"experiments/{name}.py"))
    exp = experiment.prepare(config, splits=["train"], load_weights=False)
    train, bs = exp.data["train"], config.train.batch_size
    bucketed = batching.padding_fraction(train, bs, exp.buckets, config.seed)
    fixed = batching.padding_fraction(train, bs, [config.data.max_length], config.seed)
    return {
        "examples": len(train),
        "max_length": config.data.max_length,
        "buckets": exp.buckets,
        "padding_bucketed": bucketed,
        "padding_fixed": fixed,
        # Token slots computed per real token: the cost a step pays for padding.
        "slots_saved": 1 - (1 - fixed) / (1 - bucketed),
    }


def main():
    results = {name: measure(name) for name in EXPERIMENTS}
    table = "| experiment | train examples | buckets | padding (buckets) | padding (fixed max) "
    table += "| token slots saved |\n|---|---|---|---|---|---|\n"
    for name, r in results.items():
        table += (
            f"| {name} | {r['examples']} | {r['buckets']} | {100 * r['padding_bucketed']:.1f}% "
            f"| {100 * r['padding_fixed']:.1f}% | {100 * r['slots_saved']:.0f}% |\n"
        )
    print(table)
    out = ROOT / "benchmarks/results"
    (out / "padding.json").write_text(json.dumps(results, indent=2))
    (out / "padding.md").write_text(
        "# Padding with length buckets vs fixed max_length (train splits, one shuffled epoch)\n\n"
        "Command: `python benchmarks/padding.py`\n\n" + table
    )


if __name__ == "__main__":
    main()
