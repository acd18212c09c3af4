"""jaxft against Hugging Face PyTorch: the same model, split and hyperparameters, side by side.

Fine-tunes all-MiniLM-L6-v2 on Rotten Tomatoes twice in one process, first with jaxft
(`experiments/rotten_tomatoes.py`), then with `transformers.BertForSequenceClassification` in a
plain PyTorch loop (AdamW, no decay on biases/LayerNorm, 6% linear warmup then linear decay,
grad-norm clip 1.0, dynamic padding, shuffled batches), and prints both test accuracies and both
training throughputs. Writes `benchmarks/results/hf_parity.{md,json}`.

    python benchmarks/hf_parity.py                 # 3 epochs each: ~20 minutes on 2 CPU cores
    python benchmarks/hf_parity.py --epochs 1      # quicker

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


def run_jaxft(args, workdir):
    from jaxft import config as config_lib
    from jaxft.train import loop

    config = config_lib.load_experiment(str(ROOT / "experiments/rotten_tomatoes.py"))
    config.seed = args.seed
    config.train.epochs = args.epochs
    config.train.progress = False
    config.train.eval_every_epoch = False
    start = time.perf_counter()
    results = loop.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    return {
        "test_accuracy": results["test"]["accuracy"],
        "train_samples_per_s": steady_samples_per_s(workdir),
        "wall_s": wall,
    }


def run_hf(args):
    import torch
    import transformers

    from jaxft import assets
    from jaxft.data import sources, tasks

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = assets.model_dir("all-MiniLM-L6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    splits, names = sources.rotten_tomatoes()

    def encode(split):
        enc = tokenizer(splits[split].text, truncation=True, max_length=args.max_length)
        labels = tasks.encode_labels("classification", split, splits[split], names)
        return enc["input_ids"], labels

    def collate(ids_list):
        width = max(len(x) for x in ids_list)
        ids = torch.zeros((len(ids_list), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, x in enumerate(ids_list):
            ids[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
        return ids, mask

    train_ids, train_labels = encode("train")
    test_ids, test_labels = encode("test")
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total = steps_per_epoch * args.epochs
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, math.ceil(0.06 * total), total
    )
    rng = np.random.default_rng(args.seed)
    model.train()
    seen, train_time, start = 0, 0.0, time.perf_counter()
    for _ in range(args.epochs):
        order = rng.permutation(len(train_ids))
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            t0 = time.perf_counter()
            ids, mask = collate([train_ids[i] for i in idx])
            labels = torch.tensor(train_labels[idx], dtype=torch.long)
            torch_train_step(
                model, optimizer, scheduler, input_ids=ids, attention_mask=mask, labels=labels
            )
            train_time += time.perf_counter() - t0
            seen += len(idx)
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(test_ids), 128):
            ids, mask = collate(test_ids[b : b + 128])
            logits = model(input_ids=ids, attention_mask=mask).logits
            correct += int((logits.argmax(-1).numpy() == test_labels[b : b + 128]).sum())
    return {
        "test_accuracy": correct / len(test_ids),
        "train_samples_per_s": seen / train_time,
        "wall_s": time.perf_counter() - start,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/jaxft_hf_parity")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()

    jax_result = run_jaxft(args, args.workdir)
    print(f"jaxft:           {jax_result}", flush=True)
    hf_result = run_hf(args)
    print(f"HF PyTorch:      {hf_result}", flush=True)

    gap = 100 * (hf_result["test_accuracy"] - jax_result["test_accuracy"])
    ratio = jax_result["train_samples_per_s"] / hf_result["train_samples_per_s"]
    meta = run_meta(vars(args))
    table = (
        "| run | test accuracy | train samples/s | wall s |\n|---|---|---|---|\n"
        f"| jaxft (JAX/Flax) | {jax_result['test_accuracy']:.4f} | "
        f"{jax_result['train_samples_per_s']:.1f} | {jax_result['wall_s']:.0f} |\n"
        f"| HF PyTorch (BertForSequenceClassification) | {hf_result['test_accuracy']:.4f} | "
        f"{hf_result['train_samples_per_s']:.1f} | {hf_result['wall_s']:.0f} |\n"
    )
    summary = (
        f"Accuracy gap (HF - jaxft): {gap:+.2f} points; jaxft / HF train throughput: {ratio:.2f}x"
    )
    print(table + summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf_parity.json").write_text(
        json.dumps({"jaxft": jax_result, "hf": hf_result, **meta}, indent=2)
    )
    (out / "hf_parity.md").write_text(
        f"# jaxft vs Hugging Face PyTorch, Rotten Tomatoes, all-MiniLM-L6-v2\n\n"
        f"{meta['date']}, {meta['machine']}; command: `python benchmarks/hf_parity.py "
        f"--epochs {args.epochs}`\n\n{table}\n{summary}\n"
    )


if __name__ == "__main__":
    main()
