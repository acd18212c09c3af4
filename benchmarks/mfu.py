"""Model FLOPs of a train step, counted analytically, and device peaks: the two halves of MFU.

Forward M = 2 x tokens x weight-matmul params (BERT encoder layers; T5 encoder, decoder with its
cross-attention projections over the source, and the LM head) plus attention A = 4 x tokens x
keys x inner width per layer. A full step is 3(M + A); LoRA and adapters 2M + 3A + 3x their
branches (no weight gradients for frozen matmuls, but gradients still flow through them),
less what no gradient needs below the lowest trainable leaf (BERT's first layer: with LoRA on
query and value, the input gradients of its Q/K/V projections and its key gradient; with
adapters, its whole attention block's backward); frozen M + A (forward only). BERT's
sequence head reads the [CLS] position alone, so of the last layer only that position's work
and every position's keys and values count (jaxft computes just that, `BertModel`'s
`head_only`; Hugging Face computes every position). Embedding lookups, norms and the tiny
heads are not counted.
"""

# Dense peak FLOP/s per device kind (vendor datasheets, no sparsity), by compute dtype.
# Matched in order against the device kind: the PCIe and NVL H100s before the SXM one.
PEAKS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100 NVL": {"bfloat16": 835e12, "float32": 418e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; fp32 matmuls run as TF32
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def model_flops(
    arch: str,
    shape: dict,
    dims: tuple,
    strategy: str,
    lora_rank: int = 8,
    lora_targets: int = 2,
    adapter_size: int = 64,
) -> float:
    """Model FLOPs of one train step (the module docstring has the formula). `shape` holds the
    model config's fields; `dims` is (batch, length) for BERT, (batch, source, target) for T5;
    LoRA targets are [hidden, hidden] projections (query, value), adapters Houlsby's two."""
    if arch == "bert":
        batch, seq = dims
        d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        tokens = batch * seq
        matmul = 2 * tokens * layers * (4 * d * d + 2 * d * f)
        attention = 4 * tokens * seq * d * layers
        # The last layer's other positions: their queries, outputs, feed-forward and attention.
        rest = tokens - batch
        matmul -= 2 * rest * (2 * d * d + 2 * d * f)
        attention -= 4 * rest * seq * d
        branch = unneeded = 0.0
        if strategy == "lora":  # two targeted [d, d] projections per layer, rank r
            branch = 2 * tokens * layers * lora_targets * lora_rank * 2 * d
            branch -= 2 * rest * lora_rank * 2 * d  # the last layer's query branch
            unneeded = 3 * 2 * tokens * d * d + 2 * tokens * seq * d
        if strategy == "adapters":  # Houlsby: two d -> size -> d bottlenecks per layer
            branch = 2 * tokens * (layers - 1) * 2 * (2 * d * adapter_size)
            branch += 2 * batch * 2 * (2 * d * adapter_size)  # the last layer's [CLS] only
            unneeded = 4 * 2 * tokens * d * d + 2 * 4 * tokens * seq * d
    else:
        if strategy != "full":
            raise ValueError(f"T5 FLOPs are counted for full fine-tuning only, not {strategy!r}")
        batch, source, target = dims
        d, f, inner = shape["d_model"], shape["d_ff"], shape["num_heads"] * shape["d_kv"]
        enc_layers, dec_layers = shape["num_layers"], shape["num_decoder_layers"]
        src, tgt = batch * source, batch * target
        matmul = 2 * enc_layers * src * (4 * d * inner + 2 * d * f)
        # decoder: self-attention and cross q/o on target tokens, cross k/v on the source
        matmul += 2 * dec_layers * (tgt * (6 * d * inner + 2 * d * f) + src * 2 * d * inner)
        matmul += 2 * tgt * d * shape["vocab_size"]  # LM head
        attention = 4 * inner * (enc_layers * src * source + dec_layers * tgt * (target + source))
        branch = unneeded = 0.0
    if strategy == "full":
        return 3 * (matmul + attention)
    if strategy == "frozen":
        return matmul + attention
    return 2 * matmul + 3 * attention + 3 * branch - unneeded


def peak_flops(device_kind: str, dtype: str, override_tflops: float) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for name, peaks in PEAKS.items():
        if name in device_kind:
            return peaks[dtype if dtype in peaks else "bfloat16"]
    return None
