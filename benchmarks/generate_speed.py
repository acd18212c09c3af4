"""Compiled generation speed: jaxft `greedy` / `beam_search` against HF PyTorch `generate`.

One random T5 (t5-small shape by default: d_model 512, d_ff 2048, 6+6 layers, 8 heads, vocab
32128, ReLU, tied head), saved with `save_pretrained` and loaded by `jaxft.from_pretrained`, so
both sides run the same weights in float32 on CPU. End-of-sequence is switched off on both sides
the same way (HF: `eos_token_id=None`; jaxft: a config whose EOS id, -1, argmax never picks), so
each call generates exactly batch x max_new_tokens tokens on both sides; the script reports how
many generated ids agree. Each scenario warms up both sides first (jaxft's first call compiles:
reported apart as compile s), then times the repeats interleaved (jaxft, HF, HF, jaxft, ...) so
both see the same background load, and reports the median ms per call, generated tokens/s and
speedup = HF ms / jaxft ms (= jaxft tok/s / HF tok/s). Writes
`benchmarks/results/generate_speed.{md,json}`.

    python benchmarks/generate_speed.py                 # t5-small shape, library threads
    python benchmarks/generate_speed.py --threads 1     # one thread each: for a shared machine
    python benchmarks/generate_speed.py --size tiny     # a quick check (~20 s)
    python benchmarks/generate_speed.py --batches 1,8 --beam_batch 0 --repeats 3

Latest figures (default threads, 1.6 minutes, on the 2-core AMD EPYC with no other load;
t5-small shape, source 64, 64 new tokens, float32; all output ids equal to HF's; see
benchmarks/results/generate_speed.md):

    | scenario         | jaxft ms | HF ms | jaxft tok/s | HF tok/s | speedup | compile s |
    |------------------|----------|-------|-------------|----------|---------|-----------|
    | greedy, batch 1  |      333 |   839 |         192 |       76 |   2.52x |       1.4 |
    | greedy, batch 8  |      746 |  1428 |         687 |      359 |   1.91x |       1.1 |
    | greedy, batch 32 |     1923 |  2962 |        1065 |      691 |   1.54x |       1.3 |
    | beam 4, batch 8  |     2012 |  2698 |         254 |      190 |   1.34x |       1.6 |

jaxft's lead is per-step overhead (one compiled scan against a Python loop of eager torch ops
per token) and an encoder about twice as fast; at batch 32 both decoders are compute-bound.
With the default threads on a busy machine torch's OpenMP workers wait for each other at every
op and HF ran 5-30x slower than alone, so those ratios say nothing about the libraries: use
`--threads 1` there (on a machine with one core busy elsewhere it gave 2.14x, 1.42x, 1.21x
and, before beam search stopped reordering the shared cross-attention cache, 1.03x).

Needs torch and transformers (`pip install -e .[test]`).
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # t5-small (v1.0): the shape of the public checkpoint, random weights.
    "small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
    "tiny": dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
}


def build_models(size: str, seed: int, folder: Path):
    """A random HF T5ForConditionalGeneration, saved to `folder`, and jaxft's (model, params)."""
    import torch
    import transformers

    import jaxft

    shape = SIZES[size]
    # transformers 5's generation cache sizes itself by num_layers: keep the decoder as deep.
    config = transformers.T5Config(
        **shape,
        num_decoder_layers=shape["num_layers"],
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    hf_model = transformers.T5ForConditionalGeneration(config).eval()
    # HF's own initialisation makes every row repeat one token. Fan-in-scaled weights with
    # gain 3 (queries also by d_kv**-0.5, as T5 does not scale attention logits) and norms away
    # from 1 give varied rows while float32 stays well conditioned (logits within ~2e-3 of HF),
    # so the id check means something.
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif "relative_attention_bias" in name or name.startswith("shared"):
                p.normal_(0.0, 1.0)
            else:
                fan_in = p.shape[1] * (config.d_kv if name.endswith(".q.weight") else 1)
                p.normal_(0.0, 3.0 * fan_in**-0.5)
    hf_model.save_pretrained(folder)
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    # EOS id -1: `greedy` / `beam_search` never see it, so every row runs max_new_tokens steps.
    model = model.clone(config=dataclasses.replace(model.config, eos_token_id=-1))
    return hf_model, model, params


def make_inputs(batch: int, src_len: int, vocab: int, seed: int):
    """Random source ids (never pad 0 or EOS 1) with varied lengths; row 0 is full length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(batch, src_len))
    lengths = rng.integers(src_len // 2, src_len + 1, size=batch)
    lengths[0] = src_len
    mask = (np.arange(src_len)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def _busy_seconds():
    """System-wide busy CPU seconds so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def timed(fn):
    """(result, wall s, this process's CPU s, other processes' CPU share of all cores)."""
    busy, cpu, start = _busy_seconds(), time.process_time(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    other = None
    if busy is not None:
        other = max(0.0, (_busy_seconds() - busy - cpu) / (wall * (os.cpu_count() or 1)))
    return result, wall, cpu, other


def run_scenario(name, jax_call, hf_call, repeats: int, tokens_of):
    """Warm up both sides, then interleave `repeats` timed calls of each."""
    jax_out, first_s, _, _ = timed(jax_call)
    hf_out, hf_first_s, _, _ = timed(hf_call)
    times = {"jaxft": [], "hf": []}
    cpu = {"jaxft": [], "hf": []}
    other = []
    for r in range(repeats):
        order = [("jaxft", jax_call), ("hf", hf_call)]
        for side, call in order if r % 2 == 0 else order[::-1]:
            out, wall, used, load = timed(call)
            times[side].append(wall)
            cpu[side].append(used)
            if load is not None:
                other.append(load)
            if side == "jaxft":
                jax_out = out
            else:
                hf_out = out
    jax_ms = 1000 * float(np.median(times["jaxft"]))
    hf_ms = 1000 * float(np.median(times["hf"]))
    jax_tokens, hf_tokens = tokens_of(jax_out), tokens_of(hf_out)
    same_shape = jax_out.shape == hf_out.shape
    result = {
        "scenario": name,
        "jaxft_ms": jax_ms,
        "hf_ms": hf_ms,
        "jaxft_ms_min": 1000 * min(times["jaxft"]),
        "hf_ms_min": 1000 * min(times["hf"]),
        "jaxft_tok_s": jax_tokens / (jax_ms / 1000),
        "hf_tok_s": hf_tokens / (hf_ms / 1000),
        "speedup": hf_ms / jax_ms,
        "speedup_of_min": min(times["hf"]) / min(times["jaxft"]),
        "compile_s": max(0.0, first_s - jax_ms / 1000),
        "hf_first_call_s": hf_first_s,
        "generated_tokens": {"jaxft": jax_tokens, "hf": hf_tokens},
        "ids_equal": float(np.mean(jax_out == hf_out)) if same_shape else 0.0,
        "rows_equal": f"{int(np.all(jax_out == hf_out, axis=1).sum())}/{len(hf_out)}"
        if same_shape
        else "shapes differ",
        "cpu_s_per_call": {k: float(np.median(v)) for k, v in cpu.items()},
        "other_load": float(np.mean(other)) if other else None,
        "times_s": times,
    }
    print(
        f"{name:>18}: jaxft {jax_ms:8.1f} ms  HF {hf_ms:8.1f} ms  speedup {result['speedup']:.2f}x"
        f"  (min: {result['speedup_of_min']:.2f}x)  compile {result['compile_s']:.1f} s"
        f"  ids equal {result['ids_equal']:.3f}  other load {result['other_load'] or 0:.2f}",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batches", default="1,8,32", help="greedy batch sizes, comma-separated")
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--beam_batch", type=int, default=8, help="0: no beam-search scenario")
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        choices=(0, 1),
        default=0,
        help="0: each library's default (all cores); 1: torch and XLA on one thread each",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()

    if args.threads == 1:  # before jax is imported: XLA reads its flags once
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()

    import jax
    import torch
    import transformers

    from jaxft import generate

    if args.threads == 1:
        torch.set_num_threads(1)
    n = args.max_new_tokens
    with tempfile.TemporaryDirectory() as folder:
        hf_model, model, params = build_models(args.size, args.seed, Path(folder))
    vocab = model.config.vocab_size
    hf_kwargs = dict(
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,  # never stop early: exactly max_new_tokens steps, as jaxft here
        decoder_start_token_id=0,
        pad_token_id=0,
    )

    def hf_generate(ids, mask, **kwargs):
        def call():
            with torch.inference_mode():
                return hf_model.generate(
                    input_ids=torch.tensor(ids),
                    attention_mask=torch.tensor(mask),
                    **hf_kwargs,
                    **kwargs,
                ).numpy()

        return call

    def new_tokens(out):  # generated ids, the start token left out (no EOS, so no padding)
        return int(out[:, 1:].size)

    results = []
    for b, batch in enumerate(int(x) for x in args.batches.split(",") if x):
        ids, mask = make_inputs(batch, args.src_len, vocab, args.seed + b)
        jids, jmask = ids.astype(np.int32), mask.astype(np.int32)
        results.append(
            run_scenario(
                f"greedy, batch {batch}",
                lambda jids=jids, jmask=jmask: np.asarray(
                    jax.block_until_ready(generate.greedy(model, params, jids, jmask, n))
                ),
                hf_generate(ids, mask, num_beams=1),
                args.repeats,
                new_tokens,
            )
        )
    if args.beam_batch:
        ids, mask = make_inputs(args.beam_batch, args.src_len, vocab, args.seed + 100)
        jids, jmask = ids.astype(np.int32), mask.astype(np.int32)
        beam = dict(num_beams=args.num_beams, length_penalty=1.0, early_stopping=False)
        results.append(
            run_scenario(
                f"beam {args.num_beams}, batch {args.beam_batch}",
                lambda: generate.trim_beams(
                    jax.block_until_ready(
                        generate.beam_search(model, params, jids, jmask, max_new_tokens=n, **beam)
                    )
                ),
                hf_generate(ids, mask, **beam),
                args.repeats,
                new_tokens,
            )
        )

    # One executable per shape: the decode loop is one compiled scan, never retraced per step.
    compiled = {"greedy": generate.greedy._cache_size()}
    if args.beam_batch:
        compiled["beam_search"] = generate.beam_search._cache_size()
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    command = " ".join(["python benchmarks/generate_speed.py", *sys.argv[1:]])
    meta = {
        "date": str(date.today()),
        "machine": f"{cpu_model}, {os.cpu_count()} cores (CPU)",
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "model": {"size": args.size, **SIZES[args.size], "num_decoder_layers": "= num_layers"},
        "compiled_executables": compiled,
        "command": command,
        "settings": vars(args),
    }
    header = (
        "| scenario | jaxft ms | HF ms | jaxft tok/s | HF tok/s | speedup (median) "
        "| speedup (min) | compile s | ids equal | other load |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {r['scenario']} | {r['jaxft_ms']:.0f} | {r['hf_ms']:.0f} | {r['jaxft_tok_s']:.0f} "
        f"| {r['hf_tok_s']:.0f} | {r['speedup']:.2f}x | {r['speedup_of_min']:.2f}x "
        f"| {r['compile_s']:.1f} | {r['ids_equal']:.3f} ({r['rows_equal']} rows) "
        f"| {r['other_load'] or 0:.0%} |\n"
        for r in results
    )
    table = header + rows
    print("\n" + table)
    threads = (
        "one each (torch.set_num_threads(1); XLA_FLAGS " + meta["xla_flags"] + ")"
        if args.threads == 1
        else f"library defaults (torch {meta['torch_threads']}, XLA all cores)"
    )
    notes = (
        f"T5 of the {args.size} shape ({SIZES[args.size]}, decoder as deep, ReLU, tied head), "
        f"random weights (seed {args.seed}), float32; source {args.src_len} tokens (varied "
        f"lengths, row 0 full), {n} new tokens per row on both sides (EOS switched off on "
        f"both); {args.repeats} interleaved timed calls per side after one warm-up call each. "
        f"ms = median wall time per `generate` call (encoder included); tok/s = generated "
        f"tokens / median time; speedup = HF ms / jaxft ms (> 1: jaxft faster); 'min' uses "
        f"the fastest call of each side; compile s = jaxft's first call minus its median. "
        f"'ids equal': share of output ids identical to HF's. 'other load': CPU share that "
        f"other processes took during the timed calls. Threads: {threads}. Compiled "
        f"executables after all calls: {compiled} (one per scenario: the decode loop is one "
        f"compiled scan, not retraced per step).\n"
    )
    loads = [r["other_load"] for r in results if r["other_load"] is not None]
    if args.threads == 0 and loads and max(loads) > 0.2:
        notes += (
            "\n**Warning**: other processes were busy during this run. With the default "
            "threads torch's OpenMP workers wait on each other at every op while the other "
            "process holds a core, which slows HF several-fold; rerun on a quiet machine or "
            "with `--threads 1`.\n"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate_speed.json").write_text(json.dumps({"results": results, **meta}, indent=2))
    (out / "generate_speed.md").write_text(
        "# Generation speed: jaxft (JAX, jit) vs Hugging Face PyTorch `generate`, CPU\n\n"
        f"{meta['date']}, {meta['machine']}; jax {jax.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; command: `{command}`\n\n{table}\n{notes}"
    )


if __name__ == "__main__":
    main()
