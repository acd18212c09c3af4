"""WNUT-16 NER: jaxft against Hugging Face PyTorch token classification, side by side.

Fine-tunes all-MiniLM-L6-v2 on the built-in WNUT-16 split twice in one process: with jaxft
(`experiments/wnut_ner.py`), then with `transformers.BertForTokenClassification` in a plain
PyTorch loop with the same settings (first sub-token of each word labelled, the others -100;
max length 128, batch 32, AdamW lr 5e-5 with no weight decay, no warmup, linear decay, grad-norm
clip 1.0, 5 epochs, shuffled batches). Both are scored on the test split with entity-level micro
F1 (the `seqeval` package for the HF run when it is installed, else jaxft's scorer, which
matches it). Writes `benchmarks/results/ner_hf.{md,json}`.

    python benchmarks/ner_hf.py                  # seeds 0,1,2: ~25 minutes on 2 CPU cores
    python benchmarks/ner_hf.py --seeds 0        # one seed each: ~8 minutes
    python benchmarks/ner_hf.py --paired --seeds 0,1,2,3,4,5,6,7,8,9,10,11,12
    python benchmarks/ner_hf.py --report benchmarks/results/ner_hf_paired.json  # a stopped run

With 240 test tweets (~140 entities) and F1 still climbing after 5 epochs of a small model, one
seed's F1 moves by several points: compare the means over seeds. `--paired` gives the HF run
jaxft's initial classifier and batches (common random numbers), so the two differ only in their
dropout masks and the per-seed differences measure the trainers, not the draws.

Result with `--paired` (2026-11-26, 2-core CPU, seeds 0-12): jaxft 0.2655 +- 0.0433, HF 0.2610
+- 0.0418; gap HF - jaxft -0.45 points, standard error 0.35 (`results/ner_hf_paired.md`).

Needs torch (`pip install -e .[test]`).
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from side_by_side import run_meta, steady_samples_per_s, torch_train_step

ROOT = Path(__file__).resolve().parents[1]


def jaxft_config(args):
    """`experiments/wnut_ner.py` with this run's settings."""
    from jaxft import config as config_lib

    config = config_lib.load_experiment(str(ROOT / "experiments/wnut_ner.py"))
    config.seed = args.seed
    config.train.epochs = args.epochs
    config.train.batch_size = args.batch_size
    config.optim.lr = args.lr
    config.data.max_length = args.max_length
    if args.sort_window:
        config.data.sort_window = args.sort_window
    config.train.progress = False
    config.train.eval_every_epoch = False
    config.train.eval_splits = ("test",)
    return config


def jaxft_draws(config) -> dict:
    """What jaxft's run with `config` draws besides dropout: its new classifier (kernel [hidden,
    labels], bias) and the example indices of each step's batch, in order. `--paired` gives
    them to the HF run so the two differ in their dropout masks alone."""
    import jax

    from jaxft.train import experiment, loop

    exp = experiment.prepare(config)
    cfg = experiment.resolved_config(exp)
    assert cfg.strategy.name == "full", "paired runs assume full fine-tuning"
    head = jax.device_get(exp.params["head"]["classifier"])
    batches = [
        indices
        for epoch in range(cfg.train.epochs)
        for indices, _ in loop.train_batches(exp, cfg, epoch)
    ]
    return {
        "kernel": np.asarray(head["kernel"]),
        "bias": np.asarray(head["bias"]),
        "batches": batches,
        "lengths": np.asarray(exp.data["train"].lengths),
    }


def run_jaxft(config, workdir):
    from jaxft.train import loop

    start = time.perf_counter()
    results = loop.train_and_evaluate(config, workdir)
    return {
        **{f"test_{k}": v for k, v in results["test"].items()},
        "train_samples_per_s": steady_samples_per_s(workdir),
        "wall_s": time.perf_counter() - start,
    }


def _entity_scores(gold, predicted) -> dict:
    try:
        from seqeval import metrics
    except ImportError:  # jaxft's scorer has the same semantics (tests/test_ner_metric.py)
        from jaxft.metrics import ner

        return ner.scores(gold, predicted)
    return {
        "f1": float(metrics.f1_score(gold, predicted)),
        "precision": float(metrics.precision_score(gold, predicted)),
        "recall": float(metrics.recall_score(gold, predicted)),
        "accuracy": float(metrics.accuracy_score(gold, predicted)),
    }


def hf_encode(tokenizer, split, index) -> list:
    """HF's recipe: (token ids, labels) per sentence, a word's tag on its first sub-token, -100
    on the rest and on the special tokens."""
    enc = tokenizer(split.words, is_split_into_words=True, truncation=True, max_length=128)
    rows = []
    for i, ids in enumerate(enc["input_ids"]):
        labels, previous = [], None
        for w in enc.word_ids(i):
            first = w is not None and w != previous
            labels.append(index[split.label[i][w]] if first else -100)
            previous = w
        rows.append((ids, labels))
    return rows


def collate(rows):
    """(input ids, attention mask, labels) tensors padded to the longest row, labels -100
    there: what `DataCollatorForTokenClassification` builds."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (x, y) in enumerate(rows):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
        labels[r, : len(y)] = torch.tensor(y)
    return ids, mask, labels


def hf_tags(model, rows, names) -> tuple[list, list]:
    """(gold, predicted) tag names per sentence, read at the labelled (first) sub-tokens, with
    the model in eval mode."""
    import torch

    model.eval()
    gold, predicted = [], []
    with torch.no_grad():
        for b in range(0, len(rows), 64):
            ids, mask, labels = collate(rows[b : b + 64])
            tags = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()
            for r in range(len(ids)):
                keep = labels[r].numpy() != -100
                predicted.append([names[t] for t in tags[r][keep]])
                gold.append([names[t] for t in labels[r].numpy()[keep]])
    return gold, predicted


def set_classifier(model, kernel, bias) -> None:
    """Give an HF token classifier jaxft's classifier (kernel [hidden, labels], bias)."""
    import torch

    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(np.asarray(kernel).T))
        model.classifier.bias.copy_(torch.tensor(np.asarray(bias)))


def run_hf(args, draws=None):
    """HF's run; with `draws` (from `jaxft_draws`) it starts from jaxft's classifier and takes
    jaxft's batches, else it draws both itself."""
    import torch
    import transformers

    from jaxft import assets
    from jaxft.data import sources

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = assets.model_dir("all-MiniLM-L6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    splits, names = sources.wnut16()
    index = {n: i for i, n in enumerate(names)}

    train, test = (hf_encode(tokenizer, splits[s], index) for s in ("train", "test"))
    model = transformers.BertForTokenClassification.from_pretrained(
        model_dir, num_labels=len(names)
    )
    if draws is not None:
        set_classifier(model, draws["kernel"], draws["bias"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, eps=1e-8)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, 0, steps_per_epoch * args.epochs
    )
    if draws is None:
        rng = np.random.default_rng(args.seed)
        batches = [
            order[b * args.batch_size : (b + 1) * args.batch_size]
            for order in (rng.permutation(len(train)) for _ in range(args.epochs))
            for b in range(steps_per_epoch)
        ]
    else:
        batches = draws["batches"]
        assert len(batches) == steps_per_epoch * args.epochs, len(batches)
        # The same example at each index on both sides (jaxft's lengths count the same tokens).
        assert [len(ids) for ids, _ in train] == list(draws["lengths"]), "example order differs"
    model.train()
    seen, train_time, start = 0, 0.0, time.perf_counter()
    for idx in batches:
        t0 = time.perf_counter()
        ids, mask, labels = collate([train[i] for i in idx])
        torch_train_step(
            model, optimizer, scheduler, input_ids=ids, attention_mask=mask, labels=labels
        )
        train_time += time.perf_counter() - t0
        seen += len(idx)
    gold, predicted = hf_tags(model, test, names)
    # Words cut by truncation have no label here; no WNUT test tweet reaches 128 tokens.
    assert sum(map(len, gold)) == sum(map(len, splits["test"].words)), "truncated test words"
    return {
        **{f"test_{k}": v for k, v in _entity_scores(gold, predicted).items()},
        "train_samples_per_s": seen / train_time,
        "wall_s": time.perf_counter() - start,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each run twice")
    parser.add_argument(
        "--sort_window", type=int, default=0, help="jaxft data.sort_window (0: the experiment's)"
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="HF starts from jaxft's new head and takes its batches: only dropout differs",
    )
    parser.add_argument("--workdir", default="/tmp/jaxft_ner_hf")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    parser.add_argument("--name", default="", help="output files' name (default ner_hf[_paired])")
    parser.add_argument(
        "--report", default="", help="only rewrite the table of this saved .json (a stopped run)"
    )
    args = parser.parse_args()
    if args.report:
        saved = Path(args.report)
        report(json.loads(saved.read_text()), saved.with_suffix(".md"))
        return
    name = args.name or ("ner_hf_paired" if args.paired else "ner_hf")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = {"jaxft": [], "hf": []}
    seeds = [int(s) for s in args.seeds.split(",")]
    meta = run_meta({k: v for k, v in vars(args).items() if k != "seed"})
    for seed in seeds:
        args.seed = seed
        config = jaxft_config(args)
        draws = jaxft_draws(config) if args.paired else None
        runs["jaxft"].append(run_jaxft(config, f"{args.workdir}/seed{seed}"))
        print(f"seed {seed} jaxft:      {runs['jaxft'][-1]}", flush=True)
        runs["hf"].append(run_hf(args, draws))
        print(f"seed {seed} HF PyTorch: {runs['hf'][-1]}", flush=True)
        # After every seed, so a stopped run keeps what it measured.
        done = {**runs, "seeds": seeds[: len(runs["hf"])], **meta}
        (out / f"{name}.json").write_text(json.dumps(done, indent=2, default=float))

    report(json.loads((out / f"{name}.json").read_text()), out / f"{name}.md")


def report(done: dict, path: Path) -> None:
    """Print and write the Markdown table of a saved run (`done`: its JSON), complete or not."""
    runs, seeds, settings = {k: done[k] for k in ("jaxft", "hf")}, done["seeds"], done["settings"]
    f1 = {k: np.array([r["test_f1"] for r in runs[k]]) for k in runs}
    gap = 100 * (f1["hf"] - f1["jaxft"])
    se = float(np.std(gap, ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("nan")

    def mean(name, key):
        return float(np.mean([r[key] for r in runs[name]]))

    def std(name, key):
        return float(np.std([r[key] for r in runs[name]], ddof=1 if len(seeds) > 1 else 0))

    ratio = mean("jaxft", "train_samples_per_s") / mean("hf", "train_samples_per_s")
    names = {"jaxft": "jaxft (JAX/Flax)", "hf": "HF PyTorch (BertForTokenClassification)"}
    table = "| run | seed | test entity F1 | precision | recall | train samples/s | wall s |\n"
    table += "|---|---|---|---|---|---|---|\n"
    for key in ("jaxft", "hf"):
        for seed, r in zip(seeds, runs[key], strict=True):
            table += (
                f"| {names[key]} | {seed} | {r['test_f1']:.4f} | {r['test_precision']:.4f} | "
                f"{r['test_recall']:.4f} | {r['train_samples_per_s']:.1f} | {r['wall_s']:.0f} |\n"
            )
        table += (
            f"| **{names[key]}, mean ± sample std** | | **{mean(key, 'test_f1'):.4f} ± "
            f"{std(key, 'test_f1'):.4f}** | | | {mean(key, 'train_samples_per_s'):.1f} | |\n"
        )
    summary = (
        f"Mean F1 gap (HF - jaxft): {gap.mean():+.2f} points over {len(seeds)} seed(s), "
        f"standard error {se:.2f}; jaxft lower in {int((gap > 0).sum())} of {len(gap)}; "
        f"jaxft / HF train throughput: {ratio:.2f}x"
    )
    print(table + summary)
    flags = " --paired" if settings.get("paired") else ""
    if settings.get("sort_window"):
        flags += f" --sort_window {settings['sort_window']}"
    path.write_text(
        f"# WNUT-16 NER: jaxft vs Hugging Face PyTorch, all-MiniLM-L6-v2\n\n"
        f"{done['date']}, {done['machine']}; command: `python benchmarks/ner_hf.py "
        f"--seeds {','.join(map(str, seeds))}{flags}` (max length {settings['max_length']}, "
        f"batch {settings['batch_size']}, lr {settings['lr']}, {settings['epochs']} epochs)\n\n"
        f"{table}\n{summary}\n"
    )


if __name__ == "__main__":
    main()
