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

Columns: samples/s, tokens/s, ms/step, compile s (jaxft: lower + compile; torch.compile: its
first steps minus a steady step), memory (jaxft: XLA's buffer plan for the step, arguments +
outputs + temporaries - donated aliases; torch: `max_memory_allocated`), and MFU = model FLOPs
per step / step time / the device's dense peak (bf16 989 TFLOP/s on H100/H200 SXM; on a CPU
pass --peak_tflops). Model FLOPs are counted analytically (`model_flops`): forward
M = 2 x tokens x weight-matmul params (encoder layers, T5 decoder and LM head) plus attention
A = 4 x tokens x keys x inner width per layer; a full step is 3(M + A); LoRA and adapters
2M + 3A + 3x their branch (no weight gradients for frozen matmuls, gradients still flow through
them); frozen M + A (forward only). Embedding lookups, norms and the tiny heads are not counted.
XLA's own cost-analysis count of each compiled step is reported beside it.

Writes `throughput.json` and `throughput.md` into --out (default benchmarks/results), tagged
with the device. Ratios: jaxft / HF for the same shape and strategy, and jaxft LoRA / jaxft full.
"""

import argparse
import contextlib
import dataclasses
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
                ablations="rbg,attn_fused,attn_explicit,float32,scan,remat"),
    "cpu": dict(shape="minilm", dtype="float32", bert=(32, 128), t5=(8, 128, 32),
                ablations="rbg,scan,remat"),
    "tiny": dict(shape="tiny", dtype="float32", bert=(4, 16), t5=(2, 16, 8),
                 ablations="rbg,scan,remat,attn_explicit,attn_fused"),
}  # fmt: skip
# Dense peak FLOP/s per device kind (vendor datasheets, no sparsity), by compute dtype.
PEAKS = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; fp32 matmuls run as TF32
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}
TORCH_SHARE = 0.45  # of --budget_s, for the HF rows (torch.compile's first steps are slow)
ROW_MARKER = "ROW_JSON "  # how the torch child hands its measured rows back
LORA = dict(rank=8, alpha=16.0, dropout=0.1, targets=("query", "value"))
ADAPTER_SIZE = 64


# --- model FLOPs -------------------------------------------------------------------------------


def model_flops(arch: str, shape: dict, dims: tuple, strategy: str) -> float:
    """Model FLOPs of one train step (see the module docstring for the formula)."""
    if arch == "bert":
        batch, seq = dims
        d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        tokens = batch * seq
        matmul = 2 * tokens * layers * (4 * d * d + 2 * d * f)
        attention = 4 * tokens * seq * d * layers
        branch = 0.0
        if strategy == "lora":  # two targeted [d, d] projections per layer, rank r
            branch = 2 * tokens * layers * len(LORA["targets"]) * LORA["rank"] * 2 * d
        if strategy == "adapters":  # Houlsby: two d -> size -> d bottlenecks per layer
            branch = 2 * tokens * layers * 2 * (2 * d * ADAPTER_SIZE)
    else:
        batch, source, target = dims
        d, f, inner = shape["d_model"], shape["d_ff"], shape["num_heads"] * shape["d_kv"]
        enc_layers, dec_layers = shape["num_layers"], shape["num_decoder_layers"]
        src, tgt = batch * source, batch * target
        matmul = 2 * enc_layers * src * (4 * d * inner + 2 * d * f)
        # decoder: self-attention and cross q/o on target tokens, cross k/v on the source
        matmul += 2 * dec_layers * (tgt * (6 * d * inner + 2 * d * f) + src * 2 * d * inner)
        matmul += 2 * tgt * d * shape["vocab_size"]  # LM head
        attention = 4 * inner * (enc_layers * src * source + dec_layers * tgt * (target + source))
        branch = 0.0
    if strategy == "full":
        return 3 * (matmul + attention)
    if strategy == "frozen":
        return matmul + attention
    return 2 * matmul + 3 * attention + 3 * branch


def peak_flops(device_kind: str, dtype: str, override_tflops: float) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for name, peaks in PEAKS.items():
        if name in device_kind:
            return peaks[dtype if dtype in peaks else "bfloat16"]
    return None


# --- jaxft rows ------------------------------------------------------------------------------


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
    memory_gb: float = 0.0
    model_flops: float = 0.0
    xla_flops: float | None = None
    mfu: float | None = None
    error: str = ""


def strategy_config(strategy: str):
    from jaxft import peft

    cfg = peft.defaults()
    cfg.name = strategy
    cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout = LORA["rank"], LORA["alpha"], LORA["dropout"]
    cfg.lora.targets = tuple(f"attention/{t}$" for t in LORA["targets"])
    cfg.adapters.size = ADAPTER_SIZE
    cfg.adapters.train_layer_norm = False  # as PEFT-style adapters: the bottlenecks alone
    return cfg


# Ablations of the default jaxft configuration: name -> (what changes, setting overrides).
ABLATIONS = {
    "rbg": "train.dropout_rng='rbg': dropout bits from XLA's RngBitGenerator, not threefry",
    "float32": "float32 compute instead of bf16",
    "scan": "layers under lax.scan (scan_layers=True)",
    "remat": "remat='dots' (matmul outputs kept, the rest recomputed)",
    "attn_explicit": "attention dropout 0, einsum-softmax attention",
    "attn_fused": "attention dropout 0, fused attention (cuDNN flash on GPU)",
}


def jaxft_settings(variant: str, dtype: str) -> dict:
    """Model and step settings of a row: the library's defaults, one changed per ablation."""
    s = dict(dtype=dtype, dropout_rng="threefry", attention="auto", scan_layers=False, remat="none")
    s["attention_dropout"] = None  # None = the model config's (0.1)
    if variant == "rbg":
        s["dropout_rng"] = "rbg"
    elif variant == "float32":
        s["dtype"] = "float32"
    elif variant == "scan":
        s["scan_layers"] = True
    elif variant == "remat":
        s["remat"] = "dots"
    elif variant in ("attn_explicit", "attn_fused"):
        s["attention_dropout"] = 0.0
        s["attention"] = "explicit" if variant == "attn_explicit" else "fused"
    return s


def build_jaxft(arch: str, shape: dict, strategy: str, settings: dict):
    """(model, train state, optimizer) for a random-init model with the strategy applied."""
    import jax

    from jaxft import models, peft
    from jaxft.config import defaults
    from jaxft.models import bert, heads, t5
    from jaxft.train import loop, optim
    from jaxft.train import state as state_lib

    dtype = models.resolve_dtype(settings["dtype"])
    if arch == "bert":
        extra = {}
        if settings["attention_dropout"] is not None:
            extra["attention_probs_dropout_prob"] = settings["attention_dropout"]
        config = bert.BertConfig(
            **shape,
            **extra,
            attention=settings["attention"],
            scan_layers=settings["scan_layers"],
            remat=settings["remat"],
        )
        model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2), dtype=dtype)
    else:
        model = t5.T5Model(t5.T5Config(**shape), dtype=dtype)
    strategy_cfg = strategy_config(strategy)
    model = loop.with_strategy(model, strategy_cfg)
    key = jax.random.key(0)
    params = models.init_params(model, key)
    params, mask = peft.apply(params, strategy_cfg, jax.random.key(1))
    if settings["dtype"] != "float32":
        params = loop.store_frozen(params, mask, "bfloat16")  # param_dtype=bfloat16
    optim_cfg = defaults().optim
    tx, _ = optim.make(optim_cfg, peft.paths.split(params, mask)[0], total_steps=1000)
    state = state_lib.create(params, mask, tx, jax.random.key(2))
    return model, state, tx


def numpy_batch(arch: str, dims: tuple, vocab: int, seed: int = 0) -> dict:
    """One random batch of full-length sequences, as numpy (the torch child never imports
    JAX: that would take most of the GPU's memory for JAX's allocator)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if arch == "bert":
        batch, seq = dims
        ids = rng.integers(5, vocab, (batch, seq), dtype=np.int32)
        host = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 2, (batch,), dtype=np.int32),
            "weights": np.ones((batch,), np.float32),
        }
    else:
        batch, source, target = dims
        ids = rng.integers(5, vocab, (batch, source), dtype=np.int32)
        host = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "labels": rng.integers(5, vocab, (batch, target), dtype=np.int32),
            "weights": np.ones((batch,), np.float32),
        }
    return host


def jaxft_row(row: Row, shape: dict, steps: int, warmup: int, peak) -> Row:
    import jax

    from jaxft.train import step as step_lib

    settings = jaxft_settings(row.variant, row.dtype)
    row.dtype = settings["dtype"]
    model, state, tx = build_jaxft(row.arch, shape, row.strategy, settings)
    batch = {
        k: jax.numpy.asarray(v)
        for k, v in numpy_batch(row.arch, row.dims, shape["vocab_size"]).items()
    }
    train_step = step_lib.make_train_step(model, tx, dropout_rng=settings["dropout_rng"])
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile()
    row.compile_s = time.perf_counter() - start
    row.xla_flops = xla_flops(compiled)
    row.memory_gb = plan_bytes(compiled) / 1e9
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    return finish_row(row, (time.perf_counter() - start) / steps, peak)


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


def hf_model(arch: str, shape: dict, strategy: str, device: str):
    import torch
    import transformers

    torch.manual_seed(0)
    if arch == "bert":
        config = transformers.BertConfig(**shape, num_labels=2)
        model = transformers.BertForSequenceClassification(config)
        backbone = model.bert
    else:
        config = transformers.T5Config(
            **shape, feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0
        )
        model = transformers.T5ForConditionalGeneration(config)
        backbone = None
    if strategy == "lora":
        import peft

        lora = peft.LoraConfig(
            r=LORA["rank"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=list(LORA["targets"]),
            task_type="SEQ_CLS" if arch == "bert" else "SEQ_2_SEQ_LM",
        )
        model = peft.get_peft_model(model, lora)
    elif strategy == "frozen":
        for p in backbone.parameters():
            p.requires_grad = False
    return model.to(device).train()


def hf_row(row: Row, shape: dict, steps: int, warmup: int, peak) -> Row:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = hf_model(row.arch, shape, row.strategy, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=device == "cuda")
    batch = {k: torch.from_numpy(v).to(device) for k, v in torch_batch(row, shape).items()}
    forward = torch.compile(model) if row.variant == "compile" else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=row.dtype == "bfloat16")

    def train_step():
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        train_step()
    sync()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    per_step = (time.perf_counter() - start) / steps
    row.compile_s = max(first - max(warmup, 1) * per_step, 0.0) if row.variant == "compile" else 0
    if device == "cuda":
        row.memory_gb = torch.cuda.max_memory_allocated() / 1e9
    return finish_row(row, per_step, peak)


def torch_batch(row: Row, shape: dict) -> dict:
    """The jaxft rows' batch, keyed and typed as HF models take it."""
    import numpy as np

    batch = numpy_batch(row.arch, row.dims, shape["vocab_size"])
    batch.pop("weights")
    return {k: v.astype(np.int64) for k, v in batch.items()}


# --- the run ----------------------------------------------------------------------------------


def plan(args) -> list[Row]:
    """Rows in priority order: the headline comparisons first, ablations last, so a run cut
    short by --budget_s still has the rows that matter."""
    preset = PRESETS[args.preset]
    shape, dtype = preset["shape"], args.dtype or preset["dtype"]
    bert_dims = (args.batch or preset["bert"][0], args.seq or preset["bert"][1])
    t5_dims = preset["t5"] if not args.t5_batch else (args.t5_batch,) + preset["t5"][1:]
    strategies = [s for s in args.strategies.split(",") if s]
    ablations = preset["ablations"] if args.ablations is None else args.ablations
    rows = []

    def pair(arch, strategy, dims):
        rows.append(Row("jaxft", arch, strategy, "default", shape, dims, dtype))
        if strategy != "adapters":  # PEFT has no bottleneck adapters
            rows.append(Row("hf", arch, strategy, "eager", shape, dims, dtype))

    bert_strategies = strategies if "bert" in args.only else []
    for s in bert_strategies[:2]:
        pair("bert", s, bert_dims)
    if "t5" in args.only:  # after the first two BERT rows: a target of its own
        pair("t5", "full", t5_dims)
    for s in bert_strategies[2:]:
        pair("bert", s, bert_dims)
    if "bert" in args.only and "full" in strategies and args.torch_compile:
        rows.append(Row("hf", "bert", "full", "compile", shape, bert_dims, dtype))
    if "bert" in args.only:
        for a in (a for a in ablations.split(",") if a):
            if a not in ABLATIONS:
                raise SystemExit(f"unknown ablation {a!r}; choose from {sorted(ABLATIONS)}")
            rows.append(Row("jaxft", "bert", "full", a, shape, bert_dims, dtype))
    if args.no_torch:
        rows = [r for r in rows if r.framework != "hf"]
    return rows


def run_rows(rows, args, runner, deadline, on_row=lambda row: None) -> list[Row]:
    import traceback

    device_kind = device_name(rows[0].framework if rows else "jaxft")
    peak = None
    done = []
    for row in rows:
        shape = SHAPES[row.shape][0 if row.arch == "bert" else 1]
        row.model_flops = model_flops(row.arch, shape, row.dims, row.strategy)
        dtype = "float32" if row.variant == "float32" else row.dtype
        peak = peak_flops(device_kind, dtype, args.peak_tflops)
        if time.monotonic() > deadline:
            row.error = "skipped: --budget_s spent"
        else:
            try:
                runner(row, shape, args.steps, args.warmup, peak)
            except Exception as e:  # one failed row must not lose the others
                row.error = f"{type(e).__name__}: {e}"[:500]
                traceback.print_exc()
        done.append(row)
        print(format_row(row), flush=True)
        on_row(row)
    return done


def device_name(framework: str) -> str:
    if framework == "hf":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
        return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    return d.device_kind


def format_row(r: Row) -> str:
    if r.error:
        return f"{r.framework:5} {r.arch:4} {r.strategy:8} {r.variant:13} ERROR {r.error[:120]}"
    mfu = f"{r.mfu:6.1%}" if r.mfu is not None else "   n/a"
    return (
        f"{r.framework:5} {r.arch:4} {r.strategy:8} {r.variant:13} {r.samples_s:9.1f} samples/s "
        f"{r.step_ms:8.2f} ms  compile {r.compile_s:5.1f} s  mem {r.memory_gb:5.2f} GB  MFU {mfu}"
    )


def torch_child(args, rows: list[Row], budget: float) -> list[Row]:
    """Measures the HF rows of `rows` in a child process (its own CUDA allocator), in place."""
    hf_rows = [r for r in rows if r.framework == "hf"]
    if not hf_rows:
        return []
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
    return hf_rows


def ratios(rows: list[Row]) -> list[dict]:
    """jaxft / HF per (arch, strategy), jaxft full / HF compile, jaxft LoRA / jaxft full."""
    ok = {(r.framework, r.arch, r.strategy, r.variant): r for r in rows if not r.error}
    out = []

    def add(name, a, b, target):
        if a in ok and b in ok:
            value = ok[a].samples_s / ok[b].samples_s
            out.append({"ratio": name, "value": value, "target": target})

    for arch in ("bert", "t5"):
        for s in ("full", "lora", "adapters", "frozen"):
            target = {("bert", "full"): 1.8, ("bert", "frozen"): 2.0, ("t5", "full"): 1.5}
            add(
                f"{arch} {s}: jaxft / HF eager",
                ("jaxft", arch, s, "default"),
                ("hf", arch, s, "eager"),
                target.get((arch, s)),
            )
    add(
        "bert full: jaxft / HF torch.compile",
        ("jaxft", "bert", "full", "default"),
        ("hf", "bert", "full", "compile"),
        1.5,
    )
    for s in ("lora", "adapters", "frozen"):
        add(
            f"bert {s} / bert full (jaxft)",
            ("jaxft", "bert", s, "default"),
            ("jaxft", "bert", "full", "default"),
            1.3 if s == "lora" else None,
        )
    for a in ABLATIONS:
        add(
            f"bert full default / {a} (jaxft)",
            ("jaxft", "bert", "full", "default"),
            ("jaxft", "bert", "full", a),
            None,
        )
    if ("jaxft", "bert", "full", "attn_fused") in ok:
        add(
            "bert full attn_fused / attn_explicit (jaxft)",
            ("jaxft", "bert", "full", "attn_fused"),
            ("jaxft", "bert", "full", "attn_explicit"),
            None,
        )
    return out


def markdown(result: dict) -> str:
    lines = [
        f"# Train-step throughput: {result['device']}",
        "",
        f"{result['date']}; `{result['command']}`; jax {result['versions'].get('jax')}, "
        f"torch {result['versions'].get('torch')}, transformers "
        f"{result['versions'].get('transformers')}. Random init, full-length sequences, "
        "AdamW + clip 1.0, dropout 0.1. jaxft rows run the library defaults (attention=auto, "
        "train.dropout_rng=threefry, no scan or remat) unless their variant names an ablation, and "
        "store frozen leaves in bf16 when computing in bf16.",
        "",
        "| framework | model | strategy | variant | batch x len | dtype | samples/s | tokens/s "
        "| ms/step | compile s | memory GB | MFU | XLA GFLOP/step | model GFLOP/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        dims = " x ".join(str(d) for d in r["dims"])
        head = f"| {r['framework']} | {r['arch']} | {r['strategy']} | {r['variant']} | {dims} "
        if r["error"]:
            lines.append(head + f"| {r['dtype']} | {r['error'][:80]} |" + " |" * 8)
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        xla = f"{r['xla_flops'] / 1e9:.1f}" if r["xla_flops"] else "-"
        lines.append(
            head + f"| {r['dtype']} | {r['samples_s']:.1f} | {r['tokens_s']:.0f} "
            f"| {r['step_ms']:.2f} | {r['compile_s']:.1f} | {r['memory_gb']:.2f} | {mfu} "
            f"| {xla} | {r['model_flops'] / 1e9:.1f} |"
        )
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    for q in result["ratios"]:
        target = f"≥ {q['target']}" if q["target"] else ""
        lines.append(f"| {q['ratio']} | {q['value']:.2f}x | {target} |")
    lines += ["", "Ablations: " + "; ".join(f"{k}: {v}" for k, v in ABLATIONS.items()) + "."]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--ablations", default=None, help="comma list; default: the preset's")
    p.add_argument("--batch", type=int, default=0, help="BERT batch (default: the preset's)")
    p.add_argument("--seq", type=int, default=0, help="BERT sequence length")
    p.add_argument("--t5_batch", type=int, default=0, help="T5 batch")
    p.add_argument("--dtype", default="", help="bfloat16 | float32 (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row after compile")
    p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no_torch", action="store_true", help="jaxft rows only")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="device peak, for MFU")
    p.add_argument(
        "--budget_s",
        type=float,
        default=3600.0,
        help="seconds: rows not started by then are skipped (45%% for HF, the rest for jaxft)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--_torch_rows", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    start = time.monotonic()
    if args._torch_rows:  # child process: measure the HF rows, print each as JSON when done
        rows = [Row(**dict(d, dims=tuple(d["dims"]))) for d in json.loads(args._torch_rows)]
        report = lambda row: print(ROW_MARKER + json.dumps(dataclasses.asdict(row)), flush=True)
        run_rows(rows, args, hf_row, start + args.budget_s, on_row=report)
        return {}
    rows = plan(args)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not importable: jaxft rows only", flush=True)
        rows = [r for r in rows if r.framework != "hf"]
    # HF first, in its own process, before this one's JAX takes the device memory.
    # --budget_s is split: the torch child gets its share, jaxft the rest after it returns.
    torch_budget = args.budget_s * TORCH_SHARE
    torch_child(args, rows, torch_budget)  # fills in the HF rows of `rows`
    jaxft_deadline = time.monotonic() + args.budget_s - torch_budget
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
        result["ratios"] = ratios(done)
        result["wall_s"] = time.monotonic() - start
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps(result, indent=2))
        (out / "throughput.md").write_text(markdown(result))
        return result

    jaxft_rows = [r for r in rows if r.framework == "jaxft"]
    run_rows(jaxft_rows, args, jaxft_row, jaxft_deadline, on_row=lambda _: save(False))
    result = save(True)
    print()
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
