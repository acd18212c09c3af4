"""Attention's pieces: the padding bias, the softmax with its dropout (`attention_probs`), the
choice of a fused kernel (`attention_kernel`) and the fused call itself (`fused_attention`)."""

import functools
import zlib

import jax
import jax.numpy as jnp

from jaxft.models import backend, flash
from jaxft.models.dropout import apply_mask, keep_scale


def attention_bias(attention_mask: jax.Array) -> jax.Array:
    """[batch, kv_len] 0/1 mask -> additive float32 bias [batch, 1, 1, kv_len]."""
    keep = attention_mask[:, None, None, :].astype(bool)
    return jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min)


def attention_probs(scores, biases, scale=1.0, rate=0.0, keep=None, dtype=None) -> jax.Array:
    """dropout(softmax(scores·scale + sum(biases))) over the last axis, computed in float32 and
    returned in `dtype` (default: the scores'), ready for the probs·V matmul.

    `scores` [batch, heads, q, k] are the raw q·k products; `biases` is a tuple of additive
    float32 biases, each broadcastable to the scores (a padding mask, T5's position bias).
    Dropout at `rate` applies where a `keep` mask is given (`dropout.site_masks` draws it).
    JAX differentiates it; `attention_probs_vjp` is the same with a hand-written backward.
    """
    _check_biases(scores, biases)
    add = lambda logits, bias: add_bias(logits, bias, scores.dtype)
    probs = jax.nn.softmax(_logits(scores, biases, scale, add), axis=-1)
    return apply_mask(probs, rate, keep).astype(dtype or scores.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def add_bias(logits: jax.Array, bias: jax.Array, dtype) -> jax.Array:
    """logits + bias, whose gradient for the bias is `bias_gradient`'s: the logits' gradient
    rounded to `dtype` (the scores' dtype: bf16 under mixed precision, as PyTorch's autocast
    adds T5's position bias to bf16 scores) and summed in float32 over the axes the bias
    broadcasts along.

    T5 adds one position bias to every layer's scores; its gradient is each layer's score
    gradient summed over the batch, then over the layers. Summed in float32 by autodiff, XLA
    merged the layers' sums into one reduction that recomputed every layer's softmax backward
    from its inputs, as each layer's own backward had already done; summing the score gradient
    as written out for its matmuls reads it once (the T5-base step compiled for an H100 moves
    77.7 GB outside its matmuls instead of 87.9; `--ablations t5:autodiff_bias` is the plain
    sum)."""
    return logits + bias


def _add_bias_fwd(logits, bias, dtype):
    return logits + bias, bias  # kept for its shape and dtype (T5's is already alive)


def _add_bias_bwd(dtype, bias, grad):
    return grad, bias_gradient(grad, bias.shape, dtype).astype(bias.dtype)


def bias_gradient(d_logits, bias_shape, dtype) -> jax.Array:
    """The float32 gradient of a bias of `bias_shape` added to logits whose gradient is
    `d_logits`: d_logits rounded to `dtype` (written out once, behind a barrier, where the
    scores' gradient is) and summed over the axes the bias was broadcast along (behind another,
    so that no other call's sum merges with it)."""
    rounded = jax.lax.optimization_barrier(d_logits.astype(dtype)).astype(jnp.float32)
    return jax.lax.optimization_barrier(_sum_to(rounded, bias_shape))


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _check_biases(scores, biases):
    if any(b.ndim != scores.ndim for b in biases):
        raise ValueError(
            f"attention biases of ranks {[b.ndim for b in biases]} for scores of shape "
            f"{scores.shape}: each bias needs the scores' rank {scores.ndim}, broadcastable to "
            "them, e.g. [batch, 1, 1, keys] for a padding mask"
        )


def attention_probs_vjp(scores, biases, scale=1.0, rate=0.0, keep=None, dtype=None) -> jax.Array:
    """`attention_probs` (same arguments, same values, same dropout masks) with a hand-written
    backward pass, for the throughput benchmark's `softmax_vjp` rows; the models do not use it.

    It saves the scores (in their own dtype, bf16 under mixed precision), the row max and log
    row sum, and the mask, and recomputes the probabilities from them, where autodiff of
    `jax.nn.softmax` keeps the float32 probabilities. The last exp of the forward pass also
    subtracts the log of the row sum, so it is not the sum's exp and need not be written out to
    be shared. On the CPU it made the MiniLM and T5 full steps slower (0.97x, 0.95x: XLA's CPU
    fusion writes out the float32 logits the three passes share) and the frozen step 1.03x
    faster; on a GPU, where the BERT-base step writes the float32 exponentials out and reads
    them twice, it has not been measured yet.
    """
    dtype = jnp.dtype(dtype or scores.dtype)
    biases = tuple(biases)
    _check_biases(scores, biases)
    if keep is None or rate <= 0.0:
        keep, kept_scale = None, 1.0
    elif rate >= 1.0:
        return jnp.zeros(scores.shape, dtype)
    else:
        kept_scale = keep_scale(rate)
    return _attention_probs(scores, biases, keep, float(scale), kept_scale, dtype)


def _logits(scores, biases, scale, add=jnp.add):
    logits = scores.astype(jnp.float32)
    if scale != 1.0:
        logits = logits * scale
    for bias in biases:
        logits = add(logits, bias)
    return logits


def _probs(logits, top, log_sum):
    """exp(logits - top - log_sum): the softmax as one exp, subtracting the row max first so
    that a row whose every key is masked (all logits the float32 minimum) comes out uniform."""
    return jnp.exp((logits - top) - log_sum)


def _probs_out(logits, top, log_sum, keep, kept_scale, dtype):
    probs = _probs(logits, top, log_sum)
    if keep is None:
        return probs.astype(dtype)
    return jnp.where(keep, probs * kept_scale, 0.0).astype(dtype)


def _sum_to(x, shape):
    """x summed over the axes along which an array of `shape` was broadcast to x's shape."""
    axes = tuple(i for i, (n, m) in enumerate(zip(x.shape, shape, strict=True)) if m == 1 < n)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _attention_probs(scores, biases, keep, scale, kept_scale, dtype):
    return _attention_probs_fwd(scores, biases, keep, scale, kept_scale, dtype)[0]


def _attention_probs_fwd(scores, biases, keep, scale, kept_scale, dtype):
    logits = _logits(scores, biases, scale)
    top = jnp.max(logits, axis=-1, keepdims=True)
    log_sum = jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1, keepdims=True))
    out = _probs_out(logits, top, log_sum, keep, kept_scale, dtype)
    return out, (scores, biases, keep, top, log_sum)


def _attention_probs_bwd(scale, kept_scale, dtype, saved, grad):
    scores, biases, keep, top, log_sum = saved
    logits = _logits(scores, biases, scale)
    # dL/dprobs before dropout: the output's gradient through the mask and its scale.
    d_probs = grad.astype(jnp.float32) * kept_scale
    if keep is not None:
        d_probs = jnp.where(keep, d_probs, 0.0)
    # Two passes over the logits, each recomputing exp (a barrier on the row sums keeps XLA
    # from merging the two exps into one written-out array).
    row = jnp.sum(_probs(logits, top, log_sum) * d_probs, axis=-1, keepdims=True)
    probs = _probs(logits, *jax.lax.optimization_barrier((top, log_sum)))
    d_logits = probs * (d_probs - row)
    d_scores = (d_logits * scale if scale != 1.0 else d_logits).astype(scores.dtype)
    d_biases = tuple(bias_gradient(d_logits, b.shape, scores.dtype).astype(b.dtype) for b in biases)
    return d_scores, d_biases, None


_attention_probs.defvjp(_attention_probs_fwd, _attention_probs_bwd)


ATTENTION_OPTIONS = ("auto", "explicit", "fused", "cudnn_dropout", "flash")


def attention_kernel(
    option: str,
    dtype,
    head_dim: int,
    dropout: bool,
    explicit_only: bool = False,
    scanned: bool = False,
    flash_seq: int | None = None,
) -> str | None:
    """Which fused implementation runs attention, or None for the explicit
    einsum-softmax-einsum (the one that supports jaxft's dropout masks, learned prefixes and
    decode caches).

    - "explicit": always the einsum path;
    - "fused": `jax.nn.dot_product_attention`: cuDNN's flash kernel on GPU in bf16/fp16, XLA's
      implementation elsewhere;
    - "auto": fused on a GPU in bf16/fp16 where cuDNN takes the shape, else explicit;
    - "cudnn_dropout": as "auto", and with attention `dropout` on, cuDNN's flash kernel with
      cuDNN's own dropout (`fused_attention`'s `dropout_rate`) instead of the explicit path;
    - "flash": as "auto", and with attention `dropout` on, jaxft's own Pallas flash kernel
      (`flash.attention`, "flash") on a GPU in bf16/fp16, which draws jaxft's dropout inside
      the kernel, where the caller passes `flash_seq`, its sequence length (self-attention
      without a bias: the BERT family), and the kernel takes it (`flash.supports`).

    With `dropout` on ("cudnn_dropout" and "flash" aside) or `explicit_only` (learned prefixes,
    a decode cache), the explicit path: neither `jax.nn.dot_product_attention` implementation
    has dropout or takes a non-right-padded mask. Layers `scanned` by lax.scan keep the
    explicit path for cuDNN's dropout: one cuDNN call in the loop body advances its mask
    counter once per layer, forward in layer order and backward in reverse, so the backward
    pass of a layer would not drop what its forward pass dropped (jaxft's kernel draws from the
    layer's seeds, scanned or not).
    """
    if option not in ATTENTION_OPTIONS:
        raise ValueError(f"unknown attention {option!r}; choose from {ATTENTION_OPTIONS}")
    if option == "explicit" or explicit_only:
        return None
    half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    cudnn_ok = backend.on_gpu() and half and head_dim % 8 == 0 and head_dim <= 128
    if dropout and option == "flash":
        gpu_half = backend.on_gpu() and half
        return "flash" if gpu_half and flash_seq and flash.supports(flash_seq, head_dim) else None
    if dropout:
        return "cudnn" if option == "cudnn_dropout" and cudnn_ok and not scanned else None
    if option == "fused":
        return "cudnn" if cudnn_ok else "xla"
    return "cudnn" if cudnn_ok else None


def key_lengths(attention_mask: jax.Array) -> jax.Array:
    """Per-row count of attended keys: the padding of a right-padded [batch, keys] mask, the
    only kind jaxft's batching makes."""
    return jnp.sum(attention_mask, axis=-1, dtype=jnp.int32)


def fused_attention(
    q,
    k,
    v,
    lengths,
    implementation: str,
    dropout_rate: float = 0.0,
    seed: int = 0,
    *,
    bias=None,
    causal: bool = False,
    scale: float | None = None,
) -> jax.Array:
    """softmax(scale q·k + bias) v over each row's first `lengths` keys (and, `causal`, none
    after the query), with `scale` 1/sqrt(head dim) unless given: padding as key lengths, so
    cuDNN runs its padded flash kernel instead of reading a mask. `bias` [1 or batch, heads,
    queries, keys] is added to the scores and differentiated (T5's relative positions).

    With `dropout_rate`, cuDNN drops attention probabilities itself (cuDNN only). Its masks come
    from Philox counters, not from jaxft's dropout key: `seed` is a compile-time constant of the
    call and XLA advances the counter's offset at every execution of the compiled step, the
    forward and backward kernels in step, so each step draws new masks. They are a function of
    the seed and of how many steps this process has run: a resumed run starts again from
    offset 0, and data-parallel devices draw the same masks.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    bias = None if bias is None else bias.astype(q.dtype)
    if not dropout_rate:
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            bias=bias,
            scale=scale,
            is_causal=causal,
            key_value_seq_lengths=lengths,
            implementation=implementation,
        )
    if implementation != "cudnn":
        raise ValueError(f"attention dropout runs in cuDNN only, not {implementation!r}")
    # jax.nn.dot_product_attention has no dropout; its cuDNN backend does
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    return cudnn.dot_product_attention(
        q,
        k,
        v,
        bias=bias,
        q_seqlen=jnp.full_like(lengths, q.shape[1]),
        kv_seqlen=lengths,
        scale=scale,
        mask_type=cudnn.MaskType.PADDING_CAUSAL if causal else cudnn.MaskType.PADDING,
        seed=seed,
        dropout_rate=dropout_rate,
        qkv_layout="BTNH",
    )


def call_seed(base: int, path: tuple[str, ...]) -> int:
    """A compile-time seed for one call site: `base` (the run's seed) mixed with the module
    path, so each layer's cuDNN dropout draws its own masks."""
    return zlib.crc32(f"{base}/{'/'.join(path)}".encode()) & 0x7FFFFFFF
