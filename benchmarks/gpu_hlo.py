"""Compile throughput.py's train steps for an NVIDIA GPU on a machine that has none, and count
what each compiled step moves through device memory: a way to weigh a speed change for a GPU
before a GPU is at hand.

XLA's GPU compiler runs here against a compile-only device described by a target config
(`gpu_targets/h100.txtpb`, or the one `gpu_check.sh` brought back from a real card): the same
fusion, layout and scheduling decisions as on the card, minus GEMM autotuning (XLA's default
GEMM choices instead) and minus running anything. For each variant it prints the compile time
(this machine's cores, no autotuning: compare variants with each other, not with a GPU's compile
column), the kernel count and the bytes moved outside library matmuls (`hlo_bytes.py`), and with
--out it writes each optimized HLO for `hlo_bytes.py --top`. With --phases it splits each compile
into JAX's trace and lowering and XLA's own timers (HLO passes, the slowest of them, and the
backend: LLVM and PTX to cubin), from XLA's log: run on a GPU's host against the card's target
config (`gpu_check.sh` does), it tells how much of the card's compile time is the host compiling
and how much GEMM autotuning.

Needs JAX's CUDA plugin matching the installed jax, and cuDNN for the attention variants that
use it (about 1.6 GB, not in the project's requirements; no GPU or driver needed):

    pip install "jax-cuda12-plugin==$(python -c 'import jax; print(jax.__version__)')" \
        "nvidia-cudnn-cu12>=9.8,<10"
    python benchmarks/gpu_hlo.py --variants default,cudnn_dropout,scan+cudnn_dropout
    python benchmarks/gpu_hlo.py --strategy frozen --variants default,cudnn_dropout --out /tmp/h

To compile as the GPU machine does, use its jax in a Python of its own (jax 0.11 needs Python
3.12; this machine's pyenv has one): the kernels jaxft writes in Pallas (`attention=flash`) are
lowered to Triton by jax's Python code, which changes between releases, so only the card's jax
checks them (jax 0.11's lowering asks the default device for its compute capability, which is
why the compile-only device is the default while tracing):

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/v312
    /tmp/v312/bin/pip install jax==0.11.2 jaxlib==0.11.2 "jax-cuda12-plugin==0.11.2" \
        "nvidia-cudnn-cu12>=9.8,<10" flax==0.12.10 transformers==5.17.0 ml_collections \
        datasets tokenizers safetensors chex pandas tqdm tensorboardX
    PYTHONPATH=$PWD/.. JAX_PLATFORMS=cpu /tmp/v312/bin/python gpu_hlo.py --variants default,flash

Without such a Python, the plugin's PJRT library (package jax-cuda12-pjrt), which talks to jax
through PJRT's C API, can stand in for the installed one: the card's XLA then compiles what this
machine's jax lowered (its PJRT wheel is for any Python 3):

    pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_27_x86_64 -d /tmp/w jax-cuda12-pjrt==0.11.2
    pip install --no-deps --target /tmp/pjrt011 /tmp/w/jax_cuda12_pjrt-0.11.2-*.whl
    # a site folder with the installed plugin's Python package, the newer PJRT library beside it
    mkdir /tmp/site011 && cp -r SITE/jax_cuda12_plugin SITE/nvidia /tmp/pjrt011/jax_plugins \
        /tmp/site011/
    PYTHONPATH=/tmp/site011 python benchmarks/gpu_hlo.py ...

The table's first line names the XLA that compiled (the PJRT library's version).
"""

import argparse
import collections
import contextlib
import gzip
import os
import re
import sys
import tempfile
from pathlib import Path

import ablations
import hlo_bytes
import throughput
import throughput_jaxft

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


def compiler_version() -> str:
    """The version of the CUDA PJRT library jax loaded (the XLA that compiles), "?" when it
    does not say."""
    try:
        from jax_plugins.xla_cuda12 import version
    except ImportError:
        return "?"
    return getattr(version, "_version", "?")


def traced_for_gpu():
    """While tracing, the model code takes its GPU paths (cuDNN attention) as on the card."""
    from jaxft.models import backend

    return ablations.swapped(True, (backend, "on_gpu", lambda: True))


def compile_row(
    device, arch: str, strategy: str, variant: str, dims: tuple, shape: dict, during=None
):
    """(seconds, compiled, seconds to trace and lower) of the row's train step compiled for
    `device`: its state is built on the CPU as throughput.py builds it, then only its shapes
    travel. `during` (a context manager) wraps the tracing and compiling only, not the build."""
    import jax
    from jax.sharding import SingleDeviceSharding

    train_step, state = throughput_jaxft.build_step(arch, shape, strategy, variant, "bfloat16")
    placed = SingleDeviceSharding(device)
    abstract = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placed), tree
    )
    batch = throughput_jaxft.numpy_batch(arch, dims, shape["vocab_size"])
    # The compile-only device is the default while tracing: Pallas's Triton lowering (jax 0.11)
    # asks the default device for its compute capability, as it asks the card on a GPU host.
    with during or contextlib.nullcontext(), traced_for_gpu(), jax.default_device(device):
        compiled, seconds, lower_s = ablations.timed_compile(
            train_step, abstract(state), abstract(batch), variant
        )
    return seconds, compiled, lower_s


# XLA's scoped timers, logged at VLOG 1 by the files that TF_CPP_VMODULE names, and a line per
# Triton kernel compiled (xtile_compiler, VLOG 2).
XLA_LOG_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "0",
    "TF_CPP_VMODULE": (
        "gpu_compiler=1,hlo_pass_pipeline=1,compile_module_to_llvm_ir=1,xtile_compiler=2"
    ),
}
_PHASE = re.compile(r"(RunHloPasses|RunBackend) for \S+ time: ([\d.]+) (s|ms|us)\b")
_PASS = re.compile(r"HLO pass: (\S+) time: [^(]*\((\d+) us\)")
_EMISSION = re.compile(r"RunBackend - IR emission for (\S+) time: [^(]*\((\d+) us\)")
_TRITON = re.compile(r"xtile_compiler\.cc:\d+\] Shared memory usage")
_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def xla_phases(log: str) -> dict:
    """XLA's compile timers in a log: seconds of HLO passes and of the backend (LLVM, PTX to
    cubin) summed over the log's compiles, the seconds of each HLO pass, slowest first, and of
    the backend's IR emission, with the Triton kernels compiled.

    The backend emits the step's kernels one after the other (Triton's own compiler runs for each
    Triton kernel inside that emission) while other threads turn the emitted LLVM modules into
    PTX and cubins, so with enough cores its time is about the emission's. During the HLO passes
    XLA also emits every distinct Triton matmul fusion as a module of its own to choose its tile
    configuration: `matmul_config_emissions` of them, in `matmul_config_s` seconds."""
    phases = collections.Counter()
    for name, value, unit in _PHASE.findall(log):
        phases[name] += float(value) * _UNIT[unit]
    passes = collections.Counter()
    for name, micros in _PASS.findall(log):
        passes[name] += int(micros) / 1e6
    step, configs = [], []
    for module, micros in _EMISSION.findall(log):
        (configs if module.startswith("gemm_fusion") else step).append(int(micros) / 1e6)
    return {
        "hlo_passes_s": phases["RunHloPasses"],
        "backend_s": phases["RunBackend"],
        "passes": dict(passes.most_common()),
        "ir_emission_s": sum(step),
        "matmul_config_emissions": len(configs),
        "matmul_config_s": sum(configs),
        "triton_kernels": len(_TRITON.findall(log)),
    }


class StderrCapture(contextlib.AbstractContextManager):
    """What the process's C++ code writes to file descriptor 2 meanwhile, in `.log` on exit
    (Python's sys.stderr is another object: XLA's log bypasses it)."""

    log = ""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._sink = tempfile.TemporaryFile()
        os.dup2(self._sink.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._sink.seek(0)
        self.log = self._sink.read().decode(errors="replace")
        self._sink.close()
        return False


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
    p.add_argument(
        "--phases", action="store_true", help="split each compile by XLA's timers (its log)"
    )
    args = p.parse_args(argv)
    if args.phases:
        if "jax" in sys.modules:
            raise SystemExit("--phases sets XLA's logging before JAX loads: run it as a script")
        os.environ.update(XLA_LOG_ENV)
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
        f"{device.device_kind} without one (jax {jax.__version__}, XLA of jax-cuda12-pjrt "
        f"{compiler_version()}; "
        f"`python benchmarks/gpu_hlo.py {' '.join(sys.argv[1:] if argv is None else argv)}`)",
        "",
        "| variant | compile s (here) | kernels | GB outside matmuls "
        f"| ms at {args.bandwidth} TB/s |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results, phase_lines = [], []
    for v in variants:
        # Only the compile's log: building the state runs CPU programs, whose passes would
        # add to the GPU compile's per-pass times.
        capture = StderrCapture() if args.phases else None
        seconds, compiled, lower_s = compile_row(
            device, args.arch, args.strategy, v, dims, shape, during=capture
        )
        hlo = compiled.as_text()
        summary = hlo_bytes.summarize(hlo_bytes.entry_kernels(hlo))
        gb = summary["memory_bound_bytes"] / 1e9
        lines.append(f"| {v} | {seconds:.1f} | {summary['kernels']} | {gb:.2f} | "
                     f"{gb / args.bandwidth:.2f} |")  # fmt: skip
        print(lines[-1], flush=True)
        results.append(dict(variant=v, compile_s=seconds, trace_lower_s=lower_s, **summary))
        if args.phases:
            phases = xla_phases(capture.log)
            results[-1]["xla"] = phases
            top = ", ".join(f"{n} {t:.1f}" for n, t in list(phases["passes"].items())[:4])
            phase_lines.append(
                f"| {v} | {seconds:.1f} | {lower_s:.1f} | {phases['hlo_passes_s']:.1f} | "
                f"{top} | {phases['matmul_config_emissions']} in "
                f"{phases['matmul_config_s']:.1f} | {phases['backend_s']:.1f} | "
                f"{phases['ir_emission_s']:.1f} | {phases['triton_kernels']} |"
            )
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            name = f"hlo_{args.arch}_{args.strategy}_{v}.txt.gz"
            (Path(args.out) / name).write_bytes(gzip.compress(hlo.encode()))
    if phase_lines:
        lines += [
            "",
            f"Where the compile time goes ({os.cpu_count()} CPU cores here; XLA's timers):",
            "",
            "| variant | compile s | trace + lower s | HLO passes s | slowest passes s "
            "| of them, Triton matmuls emitted to choose tiles (s) | backend s (LLVM, PTX) "
            "| of it, IR emission s | Triton kernels compiled |",
            "|---|---|---|---|---|---|---|---|---|",
            *phase_lines,
        ]
        print("\n".join(lines[-len(phase_lines) - 5 :]), flush=True)
    if args.out:
        table = Path(args.out) / f"gpu_hlo_{args.arch}_{args.strategy}.md"
        table.write_text("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":
    main()
