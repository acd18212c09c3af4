"""Compile throughput.py's train steps for an NVIDIA GPU on a machine that has none, and count
what each compiled step moves through device memory: a way to weigh a speed change for a GPU
before a GPU is at hand.

XLA's GPU compiler runs here against a compile-only device described by a target config
(`gpu_targets/h100.txtpb`, or the one `gpu_check.sh` brought back from a real card): the same
fusion, layout and scheduling decisions as on the card, minus GEMM autotuning (XLA's default
GEMM choices instead) and minus running anything. For each variant it prints the compile time
(this machine's cores, no autotuning: compare variants with each other, not with a GPU's compile
column), the kernel count and the bytes moved outside library matmuls (`hlo_bytes.py`), and with
--out it writes each optimized HLO for `hlo_bytes.py --top`.

Needs JAX's CUDA plugin matching the installed jax, and cuDNN for the attention variants that
use it (about 1.6 GB, not in the project's requirements; no GPU or driver needed):

    pip install "jax-cuda12-plugin==$(python -c 'import jax; print(jax.__version__)')" \
        "nvidia-cudnn-cu12>=9.8,<10"
    python benchmarks/gpu_hlo.py --variants default,cudnn_dropout,scan+cudnn_dropout
    python benchmarks/gpu_hlo.py --strategy frozen --variants default,cudnn_dropout --out /tmp/h
"""

import argparse
import contextlib
import gzip
import sys
import time
from pathlib import Path

import ablations
import hlo_bytes
import throughput

TARGETS = Path(__file__).resolve().parent / "gpu_targets"
PLUGIN_HINT = (
    "compiling for a GPU without one needs JAX's CUDA plugin: pip install "
    '"jax-cuda12-plugin==<your jax version>" "nvidia-cudnn-cu12>=9.8,<10"'
)


def compile_only_device(target_config: str):
    """A device of the GPU that `target_config` (GpuTargetConfigProto text) describes, which
    XLA compiles for but nothing runs on."""
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="cuda", topology_name="", target_config=target_config, topology="1x1x1"
        )
    except NotImplementedError as e:  # no CUDA plugin: jax has no "cuda" topology
        raise SystemExit(f"{e}: {PLUGIN_HINT}") from None
    return topology.devices[0]


@contextlib.contextmanager
def traced_for_gpu():
    """While tracing, the model code takes its GPU paths (cuDNN attention) as on the card."""
    from jaxft.models import layers

    saved = layers.on_gpu
    layers.on_gpu = lambda: True
    try:
        yield
    finally:
        layers.on_gpu = saved


def compile_row(device, arch: str, strategy: str, variant: str, dims: tuple, shape: dict):
    """(seconds, compiled) of the row's train step compiled for `device`: its state is built
    on the CPU as throughput.py builds it, then only its shapes travel."""
    import jax
    from jax.sharding import SingleDeviceSharding

    train_step, state = throughput.build_step(arch, shape, strategy, variant, "bfloat16")
    placed = SingleDeviceSharding(device)
    abstract = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placed), tree
    )
    batch = throughput.numpy_batch(arch, dims, shape["vocab_size"])
    start = time.perf_counter()
    with traced_for_gpu():
        compiled = ablations.compile_step(train_step, abstract(state), abstract(batch), variant)
    return time.perf_counter() - start, compiled


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=str(TARGETS / "h100.txtpb"), help="target config file")
    p.add_argument("--arch", default="bert", choices=("bert", "t5"))
    p.add_argument("--strategy", default="full", choices=("full", "lora", "adapters", "frozen"))
    p.add_argument("--variants", default="default", help="comma list of throughput.py variants")
    p.add_argument("--preset", default="gpu", choices=sorted(throughput.PRESETS))
    p.add_argument("--bandwidth", type=float, default=3.35, help="TB/s, for the ms column")
    p.add_argument(
        "--out", default="", help="folder for the table (gpu_hlo_ARCH_STRATEGY.md) and each HLO"
    )
    args = p.parse_args(argv)
    import jax

    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        ablations.check(v, args.arch)
    device = compile_only_device(Path(args.target).read_text())
    preset = throughput.PRESETS[args.preset]
    shape = throughput.SHAPES[preset["shape"]][0 if args.arch == "bert" else 1]
    dims = preset[args.arch]
    lines = [
        f"{args.arch} {args.strategy}, {' x '.join(map(str, dims))}, bf16, compiled for "
        f"{device.device_kind} without one (jax {jax.__version__}; "
        f"`python benchmarks/gpu_hlo.py {' '.join(sys.argv[1:] if argv is None else argv)}`)",
        "",
        "| variant | compile s (here) | kernels | GB outside matmuls "
        f"| ms at {args.bandwidth} TB/s |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results = []
    for v in variants:
        seconds, compiled = compile_row(device, args.arch, args.strategy, v, dims, shape)
        hlo = compiled.as_text()
        summary = hlo_bytes.summarize(hlo_bytes.entry_kernels(hlo))
        gb = summary["memory_bound_bytes"] / 1e9
        lines.append(f"| {v} | {seconds:.1f} | {summary['kernels']} | {gb:.2f} | "
                     f"{gb / args.bandwidth:.2f} |")  # fmt: skip
        print(lines[-1], flush=True)
        results.append(dict(variant=v, compile_s=seconds, **summary))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            name = f"hlo_{args.arch}_{args.strategy}_{v}.txt.gz"
            (Path(args.out) / name).write_bytes(gzip.compress(hlo.encode()))
    if args.out:
        table = Path(args.out) / f"gpu_hlo_{args.arch}_{args.strategy}.md"
        table.write_text("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":
    main()
