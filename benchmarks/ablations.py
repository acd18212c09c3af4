"""Ablations of jaxft's defaults for the throughput and profile benchmarks: what each one
changes, the settings a row builds its model and step with, and the compile that applies the
rest (library functions swapped while tracing, XLA options).

A variant is "default", a key of ABLATIONS, or keys joined by "+" ("scan+cudnn_dropout");
`jaxft_settings` gives the model and step settings, `compile_step` lowers and compiles the step
with whatever the variant changes beyond them.
"""

import contextlib
import time

# name -> what it changes against the library default
ABLATIONS = {
    "rbg": "train.dropout_rng='rbg': dropout bits from XLA's RngBitGenerator, not threefry",
    "float32": "float32 compute instead of bf16",
    "scan": "layers under lax.scan (scan_layers=True)",
    "remat": "remat='dots' (matmul outputs kept, the rest recomputed)",
    "attn_explicit": "attention dropout 0, einsum-softmax attention",
    "attn_fused": "attention dropout 0, fused attention (cuDNN flash on GPU)",
    "autodiff_ops": "GELU and the norms differentiated by JAX, not by their own backward",
    "flax_dropout": "dropout masks by jax.random.bernoulli (one threefry hash per element)",
    "autotune0": "compiled with xla_gpu_autotune_level=0 (library GEMM heuristics, no autotuning)",
    "softmax_vjp": "attention softmax and dropout with their own backward (attention_probs_vjp)",
    "cudnn_dropout": "attention='cudnn_dropout': cuDNN flash attention with cuDNN's dropout",
    "flash": "attention='flash': jaxft's Pallas flash attention, its dropout drawn in the kernel",
    "no_dot_merger": "compiled with xla_gpu_dot_merger_threshold_mb=0 (Q, K, V matmuls apart, "
    "each with its bias in its epilogue)",
    "no_triton_gemm": "compiled with xla_gpu_enable_triton_gemm=false (cuBLAS for every matmul: "
    "nothing for the autotuner to compile)",
    "fusion_autotuner": "compiled with XLA's fusion autotuner on (XLA's default; jaxft turns it "
    "off on a GPU: each loop and reduction fusion compiled and timed with Triton too)",
    "block_masks": "on a GPU, dropout masks from one hash per transformer block (and one each for "
    "the embeddings and the head) cut at static offsets: the library before one hash per model",
    "plain_weight_grads": "on a CPU, weight gradients without the optimization barrier of "
    "layers.project (XLA fuses their operands' transposes into the kernels before them)",
    "f32_head_loss": "T5's tied LM head in float32 and optax's cross-entropy by autodiff (the "
    "library before t5.tied_logits and step.cross_entropy)",
    "autodiff_bias": "attention biases added as JAX differentiates them (float32 gradients, "
    "no barrier): the library before attention.add_bias, where XLA sums T5's position-bias "
    "gradients of every layer in one kernel that recomputes each softmax backward",
}
# The ablations that change a T5 step too (scan, remat and attn_* are BERT options).
T5_ABLATIONS = {"rbg", "float32", "autodiff_ops", "flax_dropout", "autotune0", "softmax_vjp",
                "cudnn_dropout", "fusion_autotuner", "no_triton_gemm",
                "plain_weight_grads", "block_masks", "autodiff_bias",
                "f32_head_loss"}  # fmt: skip


@contextlib.contextmanager
def swapped(on: bool, *swaps):
    """While tracing, when `on`: each (module or dict, name, replacement) swapped in, and the
    originals put back after."""
    get = lambda where, name: where[name] if isinstance(where, dict) else getattr(where, name)

    def put(where, name, value):
        if isinstance(where, dict):
            where[name] = value
        else:
            setattr(where, name, value)

    saved = [(where, name, get(where, name)) for where, name, _ in swaps] if on else []
    for where, name, value in swaps if on else ():
        put(where, name, value)
    try:
        yield
    finally:
        for where, name, value in saved:
            put(where, name, value)


def flax_dropout(on: bool):
    """While tracing, dropout masks drawn as flax's nn.Dropout draws them, one
    `jax.random.bernoulli` (a threefry hash per element) per site: the library before its masks
    took 16 bits per element, four elements per hash, and a block's masks one hash."""
    import jax

    from jaxft.models import dropout

    def bernoulli_masks(key, rates, shapes, offsets="runtime"):
        del offsets  # a mask per site: no bank to cut
        keys = jax.random.split(key, len(shapes))
        return tuple(
            jax.random.bernoulli(k, 1.0 - rate, shape)
            for k, rate, shape in zip(keys, rates, shapes, strict=True)
        )

    return swapped(on, (dropout, "keep_masks", bernoulli_masks))


def block_masks(on: bool):
    """While tracing, each group of dropout sites (a block's, the embeddings', the head's) drawn
    from its own hash and cut from its bank at static offsets: the library before a model drew
    all its masks from one bank."""
    from jaxft.models import bert, dropout, t5

    def per_group(module, deterministic, groups, offsets="runtime"):
        del offsets  # a block's bank: each layer's readers are alike at static offsets
        return [dropout.site_masks(module, deterministic, group, "static") for group in groups]

    return swapped(
        on, (bert, "grouped_site_masks", per_group), (t5, "grouped_site_masks", per_group)
    )


def softmax_vjp(on: bool):
    """While tracing, attention probabilities by `attention_probs_vjp` (hand-written backward)
    instead of the library's `attention_probs` (JAX's autodiff of `jax.nn.softmax`)."""
    from jaxft.models import attention

    return swapped(on, (attention, "attention_probs", attention.attention_probs_vjp))


def autodiff_bias(on: bool):
    """While tracing, attention biases added by plain `+` (JAX's float32 gradient) instead of
    `attention.add_bias`."""
    from jaxft.models import attention

    return swapped(on, (attention, "add_bias", lambda logits, bias, dtype: logits + bias))


def f32_head_loss(on: bool):
    """While tracing, T5's tied LM head in float32 and the cross-entropy as optax's, which JAX
    differentiates (a scatter of the labels' -1 into an array of the float32 logits' shape)."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxft.models import t5
    from jaxft.train import step

    def optax_loss(logits, labels, label_smoothing=0.0):
        x = logits.astype(jnp.float32)
        if not label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(x, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, x.shape[-1]), label_smoothing)
        return optax.softmax_cross_entropy(x, targets)

    f32_head = lambda h, embedding, dtype: jnp.dot(h.astype(jnp.float32), embedding.T)
    return swapped(on, (t5, "tied_logits", f32_head), (step, "cross_entropy", optax_loss))


def autodiff_ops(on: bool):
    """While tracing, the exact GELU, LayerNorm and T5's RMS norm as plain jnp differentiated by
    JAX: the library before their hand-written backward passes."""
    from jaxft.models import layers, norms

    return swapped(
        on,
        (layers.ACTIVATIONS, "gelu", jax_gelu),
        (norms, "layer_norm", norms.layer_norm_autodiff),
        (norms, "rms_norm", norms.rms_norm_autodiff),
    )


def plain_weight_grads(on: bool):
    """While tracing, `layers.project` as on a GPU: a plain product, whose weight gradient XLA
    differentiates and fuses as it likes (the CPU library before its barrier)."""
    from jaxft.models import backend

    return swapped(on, (backend, "on_cpu", lambda: False))


def jax_gelu(x):
    import jax

    return jax.nn.gelu(x, approximate=False)


def parts(variant: str) -> set[str]:
    """The ablations a variant combines: "default" none, "scan+cudnn_dropout" two."""
    return set() if variant == "default" else set(variant.split("+"))


def check(variant: str, arch: str = "bert") -> None:
    """SystemExit naming the culprit unless every part of `variant` is an ablation (of a T5 step
    too, for arch "t5")."""
    for a in parts(variant):
        if a not in ABLATIONS:
            raise SystemExit(f"unknown ablation {a!r}; choose from {sorted(ABLATIONS)}")
        if arch == "t5" and a not in T5_ABLATIONS:
            choices = sorted(T5_ABLATIONS)
            raise SystemExit(f"ablation {a!r} does not change a T5 step; choose from {choices}")


def jaxft_settings(variant: str, dtype: str) -> dict:
    """Model and step settings of a row: the library's defaults, changed by each ablation the
    variant names (the float32 ablation is its row's dtype)."""
    s = dict(dtype=dtype, dropout_rng="threefry", attention="auto", scan_layers=False, remat="none")
    s["attention_dropout"] = None  # None = the model config's (0.1)
    on = parts(variant)
    if "rbg" in on:
        s["dropout_rng"] = "rbg"
    if "scan" in on:
        s["scan_layers"] = True
    if "remat" in on:
        s["remat"] = "dots"
    if "cudnn_dropout" in on:
        s["attention"] = "cudnn_dropout"
    if "flash" in on:
        s["attention"] = "flash"
    if on & {"attn_explicit", "attn_fused"}:
        s["attention_dropout"] = 0.0
        s["attention"] = "explicit" if "attn_explicit" in on else "fused"
    return s


def platform(tree) -> str:
    """The platform ("cpu", "gpu", "cuda", ...) of the device holding a tree's first leaf (an
    array or a ShapeDtypeStruct with a sharding); the default backend's when it has none."""
    import jax

    leaf = jax.tree_util.tree_leaves(tree)[0]
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return jax.default_backend()
    return next(iter(sharding.device_set)).platform


def compile_step(train_step, state, batch, variant: str):
    """`train_step` jitted (state donated), lowered and compiled for `variant`: the library
    functions it swaps are swapped while tracing, its XLA options passed to the compiler."""
    return timed_compile(train_step, state, batch, variant)[0]


def timed_compile(train_step, state, batch, variant: str):
    """`compile_step`'s result, its seconds in all and the part of them JAX spent tracing and
    lowering (the rest is XLA's). The step is compiled with the library's default options for
    the state's platform (`parallel.default_compile_options`), then the variant's."""
    import jax

    from jaxft.train import parallel

    on = parts(variant)
    options = parallel.default_compile_options(platform(state))
    if "fusion_autotuner" in on:
        options[parallel.FUSION_AUTOTUNER] = True
    if "autotune0" in on:
        options["xla_gpu_autotune_level"] = 0
    if "no_dot_merger" in on:
        options["xla_gpu_dot_merger_threshold_mb"] = 0
    if "no_triton_gemm" in on:
        options["xla_gpu_enable_triton_gemm"] = False
    start = time.perf_counter()
    with (
        autodiff_ops("autodiff_ops" in on),
        flax_dropout("flax_dropout" in on),
        softmax_vjp("softmax_vjp" in on),
        plain_weight_grads("plain_weight_grads" in on),
        block_masks("block_masks" in on),
        autodiff_bias("autodiff_bias" in on),
        f32_head_loss("f32_head_loss" in on),
    ):
        lowered = jax.jit(train_step, donate_argnums=0).lower(state, batch)
    lower_s = time.perf_counter() - start
    compiled = lowered.compile(compiler_options=options or None)
    return compiled, time.perf_counter() - start, lower_s
