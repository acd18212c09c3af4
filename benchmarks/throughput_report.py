"""What benchmarks/throughput.py prints and writes: one line per row, the ratios the targets
name, and the Markdown table."""


def format_row(r) -> str:
    if r.error:
        return f"{r.framework:5} {r.arch:4} {r.strategy:8} {r.variant:13} ERROR {r.error[:120]}"
    mfu = f"{r.mfu:6.1%}" if r.mfu is not None else "   n/a"
    return (
        f"{r.framework:5} {r.arch:4} {r.strategy:8} {r.variant:13} {r.samples_s:9.1f} samples/s "
        f"{r.step_ms:8.2f} ms  compile {r.compile_s:5.1f} s  mem {r.memory_gb:5.2f} GB  MFU {mfu}"
        f"  build {r.build_s:5.1f} s  row {r.wall_s:5.1f} s"
    )


def ratios(rows: list) -> list[dict]:
    """jaxft / HF per (arch, strategy), jaxft full / HF compile, jaxft LoRA / jaxft full; of
    each ablated row, default / ablated and ablated / HF, and other strategies / full under the
    same ablation."""
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
    ablated = {k[1:] for k in ok if k[0] == "jaxft" and k[3] != "default"}
    for s, v in sorted({(s, v) for arch, s, v in ablated if arch == "bert" and s != "full"}):
        add(f"bert {s} / bert full (jaxft, both {v})", ("jaxft", "bert", s, v),
            ("jaxft", "bert", "full", v), 1.3 if s == "lora" else None)  # fmt: skip
    for arch, s, v in sorted(ablated):
        add(f"{arch} {s} default / {v} (jaxft)", ("jaxft", arch, s, "default"),
            ("jaxft", arch, s, v), None)  # fmt: skip
        add(f"{arch} {s} {v} (jaxft) / HF eager", ("jaxft", arch, s, v), ("hf", arch, s, "eager"),
            None)  # fmt: skip
        if (arch, s) == ("bert", "full"):
            add(f"bert full {v} (jaxft) / HF torch.compile", ("jaxft", arch, s, v),
                ("hf", arch, s, "compile"), None)  # fmt: skip
    return out


def markdown(result: dict, ablations: dict) -> str:
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
            lines.append(head + f"| {r['dtype']} | {r['error'][:80]} |" + " |" * 7)  # 14 cells
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
    lines += ["", "Ablations: " + "; ".join(f"{k}: {v}" for k, v in ablations.items()) + "."]
    return "\n".join(lines) + "\n"
