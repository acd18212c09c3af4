"""Every fine-tuning strategy on Rotten Tomatoes (all-MiniLM-L6-v2), side by side, over seeds.

Each (strategy, seed) trains `experiments/rotten_tomatoes.py:<strategy>` in its own process, so
peak host memory is that run's own. Writes `benchmarks/results/strategies.{md,json,png}`: test
accuracy mean ± std, trainable parameters (count and %), train samples/s, peak host memory and
wall time, and a plot of accuracy against trainable parameters on a log axis.

    python benchmarks/strategies.py    # 10 strategies x 3 seeds: hours on 2 CPU cores
    python benchmarks/strategies.py --seeds 1 --strategies full,lora,features
    python benchmarks/strategies.py --epochs 1              # quicker, lower accuracy
    python benchmarks/strategies.py --strategies full=3,lora=3,bitfit=1   # seeds per strategy
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = (
    "full",
    "lora",
    "adapters",
    "bitfit",
    "ia3",
    "frozen",
    "features",
    "unfreeze_top_k",
    "prompt",
    "prefix",
)

# Runs in a fresh interpreter per (strategy, seed); prints one JSON line.
WORKER = r"""
import json, sys, time
from jaxft import config as config_lib
from jaxft.train import loop
from jaxft.train.writer import read_metrics
spec, seed, epochs, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = config_lib.load_experiment(spec)
config.seed, config.train.epochs, config.train.progress = seed, epochs, False
config.train.eval_every_epoch = False
start = time.perf_counter()
results = loop.train_and_evaluate(config, workdir)
wall = time.perf_counter() - start
records = read_metrics(workdir)
setup = next(r for r in records if r["split"] == "setup")
rates = [r["samples_per_s"] for r in records if r["split"] == "train" and "samples_per_s" in r]
steady = sorted(rates[1:] or rates)  # the first window includes compilation
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"test_accuracy": results["test"]["accuracy"], "wall_s": wall,
                  "samples_per_s": steady[len(steady) // 2] if steady else None,
                  "trainable": setup["trainable_params"], "total": setup["total_params"],
                  "peak_host_mb": peak_kb / 1024}))
"""


def run_one(strategy: str, seed: int, epochs: int) -> dict:
    spec = f"{ROOT / 'experiments/rotten_tomatoes.py'}:{strategy}"
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, spec, str(seed), str(epochs), workdir],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{strategy} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(strategy: str, runs: list[dict]) -> dict:
    acc = np.array([r["test_accuracy"] for r in runs])
    rates = [r["samples_per_s"] for r in runs if r["samples_per_s"]]
    return {
        "strategy": strategy,
        "seeds": len(runs),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "trainable": runs[0]["trainable"],
        "trainable_pct": 100.0 * runs[0]["trainable"] / runs[0]["total"],
        "samples_per_s": float(np.mean(rates)) if rates else None,
        "peak_host_mb": float(max(r["peak_host_mb"] for r in runs)),
        "wall_s": float(np.mean([r["wall_s"] for r in runs])),
        "runs": runs,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| strategy | seeds | test accuracy (%) | trainable params | train samples/s | "
        "peak host MB | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = f"{r['samples_per_s']:.0f}" if r["samples_per_s"] else "n/a (cached features)"
        spread = f" ± {100 * r['accuracy_std']:.2f}" if r["seeds"] > 1 else ""
        lines.append(
            f"| {r['strategy']} | {r['seeds']} | {100 * r['accuracy_mean']:.2f}{spread} | "
            f"{r['trainable']:,} ({r['trainable_pct']:.3g}%) | {rate} | {r['peak_host_mb']:.0f} | "
            f"{r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.errorbar(
            r["trainable"],
            100 * r["accuracy_mean"],
            yerr=100 * r["accuracy_std"],
            fmt="o",
            capsize=3,
        )
        ax.annotate(
            r["strategy"],
            (r["trainable"], 100 * r["accuracy_mean"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=9,
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Rotten Tomatoes, all-MiniLM-L6-v2: accuracy vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "strategies": args.strategies,
        "seeds": args.seeds,
        "epochs": args.epochs,
    }
    rows = []
    for item in args.strategies.split(","):
        strategy, _, seeds = item.partition("=")  # "lora=3": this strategy over 3 seeds
        runs = []
        for seed in range(int(seeds or args.seeds)):
            runs.append(run_one(strategy, seed, args.epochs))
            print(f"{strategy} seed {seed}: {runs[-1]}", flush=True)
        rows.append(summarise(strategy, runs))
        write(rows, meta, out)  # after every strategy, so a long run leaves partial results


def write(rows, meta, out: Path) -> None:
    text = table(rows)
    print(text, flush=True)
    (out / "strategies.json").write_text(json.dumps({"rows": rows, **meta}, indent=2))
    has_plot = plot(rows, out / "strategies.png")
    (out / "strategies.md").write_text(
        f"# Strategies on Rotten Tomatoes (all-MiniLM-L6-v2)\n\n{meta['date']}, {meta['machine']}, "
        f"{meta['epochs']} epochs; command: `python benchmarks/strategies.py --strategies "
        f"{meta['strategies']} --seeds {meta['seeds']} --epochs {meta['epochs']}`\n\n{text}\n"
        + ("\n![accuracy vs trainable parameters](strategies.png)\n" if has_plot else "")
    )


if __name__ == "__main__":
    main()
