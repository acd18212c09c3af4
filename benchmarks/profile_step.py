"""Where a jaxft train step spends its device time: a profiler trace of a few steps, summed per
kernel and per kind of kernel.

Builds the same random-init model, strategy and batch as a `throughput.py` row, compiles and
warms the step, traces `--steps` steps with `jax.profiler` (its Perfetto JSON, which needs no
TensorBoard to read), and prints the device time per step of the top kernels and of each kind
(matmul, attention, elementwise/reduction fusions, copies, ...), plus the host time between
steps. Writes into --out: `profile_<row>.json` (every kernel's total) and `hlo_<row>.txt` (the
optimized HLO, to look up what a fusion holds).

    python benchmarks/profile_step.py --preset gpu --strategy full        # on a GPU
    python benchmarks/profile_step.py --preset tiny --steps 2             # seconds, on a CPU
"""

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import throughput  # noqa: E402

# Kernel kinds, by name: the first pattern that matches (case-insensitive) wins.
KINDS = (
    ("attention (cuDNN)", r"cudnn|fmha|flash|sdpa"),
    ("matmul", r"gemm|nvjet|cublas|cutlass|xmma|matmul|dot|triton_gemm|wgmma"),
    ("copy/memset", r"memcpy|memset|copy|transpose"),
    ("reduction fusion", r"reduce|input_fusion|reduction"),
    ("rng", r"rng|random|threefry|philox"),
    ("elementwise fusion", r"fusion|loop|elementwise|convert|add|multiply"),
)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def device_events(trace: dict) -> tuple[list[dict], str]:
    """The kernel events of the accelerator (its "Stream" threads, where the trace has them:
    its "XLA Ops" line repeats the same time per HLO op), and where they came from. On a CPU (no
    device process) the host's XLA events stand in, Python frames left out."""
    meta = [e for e in trace["traceEvents"] if e.get("ph") == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {
        (e["pid"], e.get("tid")): e["args"]["name"] for e in meta if e.get("name") == "thread_name"
    }
    device = [pid for pid, n in processes.items() if re.search(r"GPU|TPU|device", n)]
    pids = set(device) or set(processes)
    events = [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == "X" and e["pid"] in pids and not e["name"].startswith("$")
    ]
    streams = [e for e in events if threads.get((e["pid"], e.get("tid")), "").startswith("Stream")]
    where = ", ".join(processes[p] for p in sorted(pids)) + (" streams" if streams else "")
    return streams or events, where


def summarize(events: list[dict], steps: int) -> dict:
    """Per kernel and per kind of kernel: µs per step. Kernels are keyed by their own name (XLA
    names its kernels after their fusions): the HLO op a trace gives beside them can be a whole
    CUDA graph (`command_buffer_1`), which hides everything inside it."""
    per_kernel = collections.defaultdict(lambda: [0.0, 0, ""])
    for e in events:
        entry = per_kernel[e["name"]]
        entry[0] += float(e.get("dur", 0.0))
        entry[1] += 1
        entry[2] = entry[2] or e.get("args", {}).get("hlo_op", "")
    ops = sorted(
        (
            dict(op=name, us=total / steps, calls=n / steps, hlo_op=hlo_op, kind=kind_of(name))
            for name, (total, n, hlo_op) in per_kernel.items()
        ),
        key=lambda r: -r["us"],
    )
    kinds = collections.Counter()
    for r in ops:
        kinds[r["kind"]] += r["us"]
    return dict(ops=ops, kinds=dict(kinds.most_common()), total_us=sum(kinds.values()))


def trace_steps(compiled, state, batch, steps: int, log_dir: str):
    import jax

    jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    found = sorted(Path(log_dir).rglob("perfetto_trace.json.gz"))
    if not found:
        raise SystemExit(f"jax.profiler wrote no perfetto_trace.json.gz under {log_dir}")
    return json.load(gzip.open(found[-1])), wall / steps


def profile(args) -> dict:
    import jax

    arch = args.arch
    compiled, state, batch, dims, dtype = throughput.warm_step(args, args.variant, args.warmup)
    with tempfile.TemporaryDirectory() as log_dir:
        trace, wall_s = trace_steps(compiled, state, batch, args.steps, log_dir)
    events, process = device_events(trace)
    summary = summarize(events, args.steps)
    name = f"{arch}_{args.strategy}_{args.variant}"
    summary.update(row=name, device=str(jax.devices()[0].device_kind), process=process)
    summary.update(step_ms=wall_s * 1e3, dims=dims, dtype=dtype, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile_{name}.json").write_text(json.dumps(summary, indent=1))
    (out / f"hlo_{name}.txt").write_text(compiled.as_text())
    return summary


def report(summary: dict, top: int) -> str:
    step_us = summary["step_ms"] * 1e3
    lines = [
        f"== {summary['row']} on {summary['device']} ({summary['process']}): "
        f"{summary['step_ms']:.2f} ms/step wall, {summary['total_us'] / 1e3:.2f} ms/step in "
        f"device events ({summary['total_us'] / step_us:.0%})",
        "| kind | ms/step | share |",
        "|---|---|---|",
    ]
    for kind, us in summary["kinds"].items():
        lines.append(f"| {kind} | {us / 1e3:.3f} | {us / summary['total_us']:.1%} |")
    lines += ["", "| kernel | kind | µs/step | calls/step | HLO op |", "|---|---|---|---|---|"]
    for r in summary["ops"][:top]:
        cells = (r["op"][:70], r["kind"], f"{r['us']:.1f}", f"{r['calls']:g}", r["hlo_op"][:30])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    throughput.row_arguments(p, preset="gpu")
    p.add_argument("--variant", default="default", help="an ablations.py variant, or default")
    p.add_argument("--steps", type=int, default=5, help="traced steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=40, help="kernels printed")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    summary = profile(args)
    print(report(summary, args.top), flush=True)
    return summary


if __name__ == "__main__":
    main()
