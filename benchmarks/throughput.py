"""Train-step throughput of jaxft against Hugging Face PyTorch on the same device, in one run.

Random-init models of BERT-base and T5-base shape (or smaller presets), one fixed batch resident
on the device, full-length sequences. Each jaxft row compiles its train step ahead of time
(compile s), warms up, then times `--steps` steps ending in `block_until_ready`. Each PyTorch row
(transformers + PEFT for LoRA, AdamW, grad-norm clip 1.0 as the HF Trainer, bf16 autocast over
fp32 weights as `Trainer(bf16=True)`) runs in a child process first, so the two allocators never
share the card, and is timed the same way with `torch.cuda.synchronize()`.

    python benchmarks/throughput.py                          # GPU preset: BERT-base + T5-base
    python benchmarks/throughput.py --preset cpu             # MiniLM shape on the CPU, fp32
    python benchmarks/throughput.py --preset tiny --steps 2  # seconds: what the tests run
    python benchmarks/throughput.py --only bert --strategies full,lora --ablations ""
    python benchmarks/throughput.py --preset cpu --ablations flax_dropout,frozen:flax_dropout

Ablation rows change library defaults (`ablations.py`; several joined by "+", as
cudnn_dropout+no_dot_merger) for the BERT full step, or for another strategy's step when
prefixed (frozen:flax_dropout; t5:cudnn_dropout the T5 step); they run after the headline rows,
in the order given, so a run cut short by --budget_s keeps what matters most.

Columns: samples/s, tokens/s, ms/step, compile s (jaxft: lower + compile, the JSON's lower_s
the lowering part; torch.compile: its first steps minus a steady step), memory (jaxft: XLA's
buffer plan for the step, arguments + outputs + temporaries - donated aliases; torch:
`max_memory_allocated`), and MFU = model FLOPs
per step / step time / the device's dense peak (bf16 989 TFLOP/s on H100/H200 SXM; on a CPU
pass --peak_tflops). Model FLOPs are counted analytically (`benchmarks/mfu.py` states the
formula: a full step is 3x the forward matmul and attention FLOPs, LoRA and adapters 2x matmul
+ 3x attention, frozen 1x).
XLA's own cost-analysis count of each compiled step is reported beside it.

Writes `throughput.json` and `throughput.md` into --out (default benchmarks/results), tagged
with the device, and with --save_hlo the compiled steps' HLO for `hlo_bytes.py`. Ratios: jaxft /
HF for the same shape and strategy, jaxft LoRA / jaxft full, each row / its ablations and each
ablated row / HF.
"""

import argparse
import contextlib
import dataclasses
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablations  # noqa: E402
import mfu  # noqa: E402
import throughput_hf  # noqa: E402
import throughput_jaxft as jaxft_build  # noqa: E402
import throughput_report as report  # noqa: E402

# Shapes: (BERT config fields, T5 config fields). BERT-base and T5-base are the published ones.
SHAPES = {
    "base": (
        dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             intermediate_size=3072),
        dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
             num_decoder_layers=12, num_heads=12),
    ),
    "minilm": (  # all-MiniLM-L6-v2's shape
        dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
             intermediate_size=1536),
        dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
             num_decoder_layers=6, num_heads=8),
    ),
    "tiny": (
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128),
        dict(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2,
             num_decoder_layers=2, num_heads=4),
    ),
}  # fmt: skip
# Per preset: shape, dtype, BERT (batch, seq), T5 (batch, source, target), ablations.
PRESETS = {
    "gpu": dict(shape="base", dtype="bfloat16", bert=(64, 128), t5=(32, 512, 128),
                ablations="flax_dropout,frozen:flax_dropout,lora:default,scan,autotune0,"
                          "autodiff_ops,rbg,attn_fused,attn_explicit,float32,remat"),
    "cpu": dict(shape="minilm", dtype="float32", bert=(32, 128), t5=(8, 128, 32),
                ablations="flax_dropout,frozen:flax_dropout,autodiff_ops,rbg,scan,remat,"
                "plain_weight_grads,t5:plain_weight_grads"),
    "tiny": dict(shape="tiny", dtype="float32", bert=(4, 16), t5=(2, 16, 8),
                 ablations="autodiff_ops,rbg,scan,remat,attn_explicit,attn_fused"),
}  # fmt: skip
TORCH_SHARE = 0.45  # of --budget_s, for the HF rows (torch.compile's first steps are slow)
ROW_MARKER = "ROW_JSON "  # how the torch child hands its measured rows back


@dataclasses.dataclass
class Row:
    framework: str  # jaxft | hf
    arch: str  # bert | t5
    strategy: str  # full | lora | adapters | frozen
    variant: str  # default, or the ablated setting
    shape: str
    dims: tuple
    dtype: str
    samples_s: float = 0.0
    tokens_s: float = 0.0
    step_ms: float = 0.0
    compile_s: float = 0.0
    lower_s: float = 0.0  # jaxft: the part of compile_s spent tracing and lowering (JAX, not XLA)
    build_s: float = 0.0  # jaxft: random init, strategy and optimizer state, moved to the device
    memory_gb: float = 0.0
    model_flops: float = 0.0
    xla_flops: float | None = None
    mfu: float | None = None
    wall_s: float = 0.0  # the whole row: build, compile, warmup and timed steps
    error: str = ""


def row_arguments(parser, preset: str) -> None:
    """The --preset, --arch, --strategy and --dtype options of a tool that runs one row's step
    (`profile_step.py`, `alternate.py`); `warm_step` builds it."""
    parser.add_argument("--preset", default=preset, choices=sorted(PRESETS))
    parser.add_argument("--arch", default="bert", choices=("bert", "t5"))
    parser.add_argument("--strategy", default="full", help="full | lora | adapters | frozen")
    parser.add_argument("--dtype", default="", help="bfloat16 | float32 (default: the preset's)")


def warm_step(args, variant: str, warmup: int):
    """(compiled train step, its state after `warmup` steps, the batch on the device, dims,
    dtype) of the row that `row_arguments`' options in `args` name, ablated by `variant`."""
    import jax

    preset = PRESETS[args.preset]
    shape = SHAPES[preset["shape"]][0 if args.arch == "bert" else 1]
    dims, dtype = preset[args.arch], args.dtype or preset["dtype"]
    train_step, state = jaxft_build.build_step(args.arch, shape, args.strategy, variant, dtype)
    batch = jax.tree_util.tree_map(
        jax.numpy.asarray, jaxft_build.numpy_batch(args.arch, dims, shape["vocab_size"])
    )
    compiled = ablations.compile_step(train_step, state, batch, variant)
    for _ in range(warmup):
        state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    return compiled, state, batch, dims, dtype


def jaxft_row(row: Row, shape: dict, steps: int, warmup: int, peak, hlo_dir: str = "") -> Row:
    import jax

    start = time.perf_counter()
    train_step, state = jaxft_build.build_step(
        row.arch, shape, row.strategy, row.variant, row.dtype
    )
    jax.block_until_ready(state)
    row.build_s = time.perf_counter() - start
    batch = jax.tree_util.tree_map(
        jax.numpy.asarray, jaxft_build.numpy_batch(row.arch, row.dims, shape["vocab_size"])
    )
    compiled, row.compile_s, row.lower_s = ablations.timed_compile(
        train_step, state, batch, row.variant
    )
    # now, not with the row: a run killed in the timed steps still tells where its time went
    print(f"  {row.arch} {row.strategy} {row.variant}: built in {row.build_s:.1f} s, "
          f"compiled in {row.compile_s:.1f} s ({row.lower_s:.1f} s of it tracing and lowering)",
          flush=True)  # fmt: skip
    if hlo_dir:
        name = f"hlo_{hlo_name(row)}.txt.gz"
        (Path(hlo_dir) / name).write_bytes(gzip.compress(compiled.as_text().encode()))
    row.xla_flops = xla_flops(compiled)
    row.memory_gb = plan_bytes(compiled) / 1e9
    metrics = None  # --warmup 0: nothing run yet
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    return finish_row(row, (time.perf_counter() - start) / steps, peak)


def hlo_name(row: Row) -> str:
    """bert_full for a default row, bert_full_cudnn_dropout for an ablated one."""
    name = f"{row.arch}_{row.strategy}"
    return name if row.variant == "default" else f"{name}_{row.variant}"


def xla_flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def plan_bytes(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return 0.0
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return float(total - m.alias_size_in_bytes)


def finish_row(row: Row, seconds_per_step: float, peak) -> Row:
    samples = row.dims[0]
    tokens = samples * sum(row.dims[1:])
    row.step_ms = seconds_per_step * 1e3
    row.samples_s = samples / seconds_per_step
    row.tokens_s = tokens / seconds_per_step
    if peak:
        row.mfu = row.model_flops / seconds_per_step / peak
    return row


# --- Hugging Face PyTorch rows (run in a child process) ----------------------------------------


def hf_row(row: Row, shape: dict, steps: int, warmup: int, peak) -> Row:
    """The HF PyTorch train step of `row`'s shape and strategy, on the jaxft rows' batch."""
    batch = jaxft_build.numpy_batch(row.arch, row.dims, shape["vocab_size"])
    timing = throughput_hf.time_train_step(row, shape, batch, steps, warmup, jaxft_build.LORA)
    row.compile_s, row.memory_gb = timing["compile_s"], timing["memory_gb"]
    return finish_row(row, timing["seconds_per_step"], peak)


# --- the run ----------------------------------------------------------------------------------


def plan(args) -> list[Row]:
    """Rows in priority order: the headline comparisons first, ablations last, so a run cut
    short by --budget_s still has the rows that matter."""
    preset = PRESETS[args.preset]
    shape, dtype = preset["shape"], args.dtype or preset["dtype"]
    bert_dims = (args.batch or preset["bert"][0], args.seq or preset["bert"][1])
    t5_dims = preset["t5"] if not args.t5_batch else (args.t5_batch,) + preset["t5"][1:]
    strategies = [s for s in args.strategies.split(",") if s]
    variants = preset["ablations"] if args.ablations is None else args.ablations
    rows = []

    hf_strategies = strategies if args.hf_strategies is None else args.hf_strategies.split(",")

    def pair(arch, strategy, dims):
        rows.append(Row("jaxft", arch, strategy, "default", shape, dims, dtype))
        # PEFT has no bottleneck adapters; T5 is compared for full fine-tuning, always
        if strategy != "adapters" and (arch == "t5" or strategy in hf_strategies):
            rows.append(Row("hf", arch, strategy, "eager", shape, dims, dtype))

    key = lambda r: (r.framework, r.arch, r.strategy, r.variant)
    items = [a for a in variants.split(",") if a]
    t5_placed = "t5:default" in items  # the T5 rows go where the list puts them
    bert_strategies = strategies if "bert" in args.only else []
    t5_after = len(bert_strategies) if args.t5_last else 2
    for s in bert_strategies[:t5_after]:
        pair("bert", s, bert_dims)
    if "t5" in args.only and not (args.t5_last or t5_placed):  # a target too: early
        pair("t5", "full", t5_dims)
    for s in bert_strategies[t5_after:]:
        pair("bert", s, bert_dims)
    if "bert" in args.only and "full" in strategies and args.torch_compile:
        rows.append(Row("hf", "bert", "full", "compile", shape, bert_dims, dtype))
    for item in items:
        # "frozen:scan": the frozen row, scanned; "lora:default": the LoRA row, placed here;
        # "t5:softmax_vjp": the T5 full row, ablated; "t5:default": the T5 rows (jaxft and HF)
        # placed here instead of after the first two BERT rows or last (likewise
        # "lora:default" with an HF row when --hf_strategies names lora);
        # "scan+cudnn_dropout": both
        strategy, _, a = item.rpartition(":")
        arch = "t5" if strategy == "t5" else "bert"
        if item == "t5:default":
            if "t5" in args.only:
                pair("t5", "full", t5_dims)
            continue
        if a == "default" and strategy:  # "lora:default": a strategy's rows (and HF's), here
            planned = ("jaxft", "bert", strategy, "default")
            if "bert" in args.only and planned not in {key(r) for r in rows}:
                pair("bert", strategy, bert_dims)
            continue
        ablations.check(a, arch)
        if arch in args.only:
            row_dtype = "float32" if "float32" in ablations.parts(a) else dtype
            dims = t5_dims if arch == "t5" else bert_dims
            strategy = "full" if arch == "t5" else strategy or "full"
            rows.append(Row("jaxft", arch, strategy, a, shape, dims, row_dtype))
    if "t5" in args.only and args.t5_last and not t5_placed:  # last: the slowest row
        pair("t5", "full", t5_dims)
    if args.no_torch:
        rows = [r for r in rows if r.framework != "hf"]
    return rows


def run_rows(rows, args, runner, deadline, on_row=lambda row: None) -> None:
    """Measures `rows` in place with `runner` (jaxft_row or hf_row), skipping those not started
    before `deadline`; `on_row` is called after each."""
    import traceback

    device_kind = device_name(rows[0].framework if rows else "jaxft")
    for row in rows:
        shape = SHAPES[row.shape][0 if row.arch == "bert" else 1]
        row.model_flops = mfu.model_flops(
            row.arch,
            shape,
            row.dims,
            row.strategy,
            jaxft_build.LORA["rank"],
            len(jaxft_build.LORA["targets"]),
            jaxft_build.ADAPTER_SIZE,
        )
        peak = mfu.peak_flops(device_kind, row.dtype, args.peak_tflops)
        if time.monotonic() > deadline:
            row.error = "skipped: --budget_s spent"
        else:
            start = time.monotonic()
            try:
                runner(row, shape, args.steps, args.warmup, peak)
            except Exception as e:  # one failed row must not lose the others
                row.error = f"{type(e).__name__}: {e}"[:500]
                traceback.print_exc()
            row.wall_s = time.monotonic() - start
        print(report.format_row(row), flush=True)
        on_row(row)


def device_name(framework: str) -> str:
    """The accelerator the framework runs on, else this machine's CPU."""
    if framework == "hf":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    else:
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"


def torch_child(args, rows: list[Row], budget: float) -> None:
    """Measures the HF rows of `rows` in a child process (its own CUDA allocator), in place."""
    hf_rows = [r for r in rows if r.framework == "hf"]
    if not hf_rows:
        return
    spec = json.dumps([dataclasses.asdict(r) for r in hf_rows])
    cmd = [sys.executable, __file__, "--_torch_rows", spec, "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup), "--budget_s", str(budget)]
    cmd += ["--peak_tflops", str(args.peak_tflops)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget + 120)
        stdout, stderr, status = done.stdout, done.stderr, f"exit {done.returncode}"
    except subprocess.TimeoutExpired as e:  # keep the rows it finished
        stdout, stderr, status = e.stdout or "", e.stderr or "", "timed out"
        stdout, stderr = (x.decode() if isinstance(x, bytes) else x for x in (stdout, stderr))
    sys.stderr.write(stderr[-4000:])
    print(stdout, end="", flush=True)
    finished = [
        json.loads(line[len(ROW_MARKER) :])
        for line in stdout.splitlines()
        if line.startswith(ROW_MARKER)
    ]
    for row, found in zip(hf_rows, finished + [None] * len(hf_rows), strict=False):
        if found is None:
            row.error = f"torch child {status} before this row: {stderr[-300:]}"
        else:
            for key, value in found.items():
                setattr(row, key, tuple(value) if key == "dims" else value)


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("jax", "jaxlib", "flax", "torch", "transformers", "peft"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    return found


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpu", choices=sorted(PRESETS))
    p.add_argument("--only", default="bert,t5", help="models: bert, t5 or both")
    p.add_argument("--strategies", default="full,lora,adapters,frozen")
    p.add_argument(
        "--ablations",
        default=None,
        help="comma list of BERT full-row ablations, or STRATEGY:ABLATION for another strategy's "
        "row (frozen:flax_dropout; lora:default puts the plain LoRA row at that place in the "
        "order; t5:softmax_vjp ablates the T5 full row); default: the preset's",
    )
    p.add_argument(
        "--save_hlo",
        default="",
        help="comma list of ARCH_STRATEGY (bert_full,t5_full) or ARCH_STRATEGY_VARIANT "
        "(bert_full_cudnn_dropout): those jaxft rows write their optimized HLO into --out as "
        "hlo_NAME.txt.gz (for hlo_bytes.py)",
    )
    p.add_argument(
        "--hf_strategies", default=None, help="BERT strategies with an HF row (default: all)"
    )
    p.add_argument("--batch", type=int, default=0, help="BERT batch (default: the preset's)")
    p.add_argument("--seq", type=int, default=0, help="BERT sequence length")
    p.add_argument("--t5_batch", type=int, default=0, help="T5 batch")
    p.add_argument("--dtype", default="", help="bfloat16 | float32 (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row after compile")
    p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no_torch", action="store_true", help="jaxft rows only")
    p.add_argument("--t5_last", action="store_true", help="T5 rows after every BERT row")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="device peak, for MFU")
    p.add_argument(
        "--budget_s",
        type=float,
        default=3600.0,
        help="seconds: rows not started by then are skipped (HF rows get at most 45%%)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--_torch_rows", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    start = time.monotonic()
    if args._torch_rows:  # child process: measure the HF rows, print each as JSON when done
        rows = [Row(**dict(d, dims=tuple(d["dims"]))) for d in json.loads(args._torch_rows)]
        emit = lambda row: print(ROW_MARKER + json.dumps(dataclasses.asdict(row)), flush=True)
        run_rows(rows, args, hf_row, start + args.budget_s, on_row=emit)
        return {}
    rows = plan(args)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not importable: jaxft rows only", flush=True)
        rows = [r for r in rows if r.framework != "hf"]
    meta = {
        "date": str(date.today()),
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv else sys.argv[1:]),
        "versions": versions(),
    }

    def save(final: bool) -> dict:
        """Written after every row, so a run killed midway still leaves its figures."""
        done = [r for r in rows if r.framework == "hf" or r.samples_s or r.error]
        result = dict(meta, device=device_name("jaxft"), complete=final)
        result["rows"] = [dataclasses.asdict(r) for r in done]
        result["ratios"] = report.ratios(done)
        result["wall_s"] = time.monotonic() - start
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps(result, indent=2))
        (out / "throughput.md").write_text(report.markdown(result, ablations.ABLATIONS))
        return result

    # HF first, in its own process, before this one's JAX takes the device memory. The torch
    # child gets its share of --budget_s (a row it has started runs to its end); jaxft rows
    # start until the budget is spent. Its rows are saved at once, so a run killed in the first
    # jaxft row still leaves them.
    torch_child(args, rows, args.budget_s * TORCH_SHARE)  # fills in the HF rows of `rows`
    jaxft_deadline = start + args.budget_s
    save(False)
    jaxft_rows = [r for r in rows if r.framework == "jaxft"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_hlo = set(args.save_hlo.split(","))

    def runner(row, *rest):
        keep = hlo_name(row) in save_hlo
        return jaxft_row(row, *rest, hlo_dir=args.out if keep else "")

    run_rows(jaxft_rows, args, runner, jaxft_deadline, on_row=lambda _: save(False))
    result = save(True)
    print()
    print(report.markdown(result, ablations.ABLATIONS))
    return result


if __name__ == "__main__":
    main()
