"""Variants of one jaxft train step timed side by side in one process: all compiled first, then
their steps run one at a time in turn, so the drift of a noisy machine falls on every variant
alike. Prints each variant's median ms/step and its speed against the first.

On this repository's 2-core CPU, rows of separate `throughput.py` runs vary by 10-15%; measured
so, the weight-gradient barrier of `layers.project` gave 1.09x on the MiniLM full step twice.

    python benchmarks/alternate.py --preset cpu --arch bert --strategy full \\
        --variants default,plain_weight_grads --rounds 8
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablations  # noqa: E402
import throughput  # noqa: E402


def measure(args) -> list[dict]:
    """[{variant, ms (median per step), steps}] in the order of `args.variants`."""
    import jax

    runs = []
    for variant in [v for v in args.variants.split(",") if v]:
        ablations.check(variant, args.arch)
        compiled, state, batch, _, _ = throughput.warm_step(args, variant, args.warmup)
        runs.append(dict(variant=variant, step=compiled, state=state, batch=batch, times=[]))
    for _ in range(args.rounds):
        for run in runs:
            start = time.perf_counter()
            run["state"], _ = run["step"](run["state"], run["batch"])
            jax.block_until_ready(run["state"])
            run["times"].append(time.perf_counter() - start)
    return [
        dict(variant=r["variant"], ms=statistics.median(r["times"]) * 1e3, steps=len(r["times"]))
        for r in runs
    ]


def report(args, results: list[dict]) -> str:
    base = results[0]["ms"]
    lines = [
        f"{args.arch} {args.strategy}, preset {args.preset}, {args.rounds} steps each, "
        "alternating; median ms/step",
        "",
        f"| variant | ms/step | speed against {results[0]['variant']} |",
        "|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['ms']:.1f} | {base / r['ms']:.3f}x |" for r in results]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    throughput.row_arguments(p, preset="cpu")
    p.add_argument("--variants", default="default,plain_weight_grads", help="comma list")
    p.add_argument("--rounds", type=int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    args = p.parse_args(argv)
    if len([v for v in args.variants.split(",") if v]) < 2:
        raise SystemExit("--variants: name two or more, the first being the baseline")
    results = measure(args)
    print(report(args, results), flush=True)
    return results


if __name__ == "__main__":
    main()
