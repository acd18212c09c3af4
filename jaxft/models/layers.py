"""Building blocks shared by the model families: the dense layer, activations, norms, attention
(dropout has its own module, `dropout.py`)."""

import functools
import zlib
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxft.models.dropout import Dropout, apply_mask, keep_scale

Dtype = jnp.dtype | type

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def rows_of(v: jax.Array, shape: tuple, dtype) -> jax.Array:
    """`v` (a parameter) in `dtype`, broadcast over leading rows to `shape`, for adding to or
    scaling activations. Its gradient sums the rows in float32 and comes back in v's dtype: the
    transpose of JAX's own broadcast sums in the activations' dtype, and in bf16 a bias gradient
    summed over a BERT-base batch's 8,192 rows was 3% off (PyTorch's sum of the same bf16 rows,
    accumulated in float32 and rounded once, was 0.17% off)."""
    if tuple(shape[len(shape) - v.ndim :]) != v.shape:
        raise ValueError(f"cannot broadcast {v.shape} over the rows of {tuple(shape)}")
    return _rows_of(v, tuple(shape), jnp.dtype(dtype), jnp.dtype(v.dtype), v.ndim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _rows_of(v, shape, dtype, v_dtype, v_ndim):
    return jnp.broadcast_to(v.astype(dtype), shape)


def _rows_of_fwd(v, shape, dtype, v_dtype, v_ndim):
    return _rows_of(v, shape, dtype, v_dtype, v_ndim), None


def _rows_of_bwd(shape, dtype, v_dtype, v_ndim, _, grad):
    rows = tuple(range(len(shape) - v_ndim))
    return (jnp.sum(grad, axis=rows, dtype=jnp.float32).astype(v_dtype),)


_rows_of.defvjp(_rows_of_fwd, _rows_of_bwd)


def project(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over x's last axis. On a CPU its weight gradient is taken behind an
    optimization barrier: XLA's CPU matmul library wants both operands of x^T @ g transposed,
    and XLA fused those transposes into the kernels that make g (the ReLU or GELU backward,
    dropout's), which its loop emitter then wrote one strided column at a time: 13-26 ms for
    each 8 MB T5 feed-forward gradient. Behind the barrier the transposes are plain copies: on
    the 2-core CPU the MiniLM full step ran 1.09x faster and T5's 1.07-1.08x (LoRA, whose base
    weights take no gradient, the same), with the same values (`--ablations plain_weight_grads`).
    A GPU's compiler folds the transposes into its matmuls, so there the product stays plain."""
    if on_cpu():
        return _project_cpu(x, kernel)
    return jnp.dot(x, kernel)


@jax.custom_vjp
def _project_cpu(x, kernel):
    return jnp.dot(x, kernel)


def _project_cpu_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _project_cpu_bwd(res, g):
    x, kernel = res
    x_kept, g_kept = jax.lax.optimization_barrier((x, g))
    rows = lambda t: t.reshape(-1, t.shape[-1])
    return jnp.dot(g, kernel.T), jnp.dot(rows(x_kept).T, rows(g_kept))


_project_cpu.defvjp(_project_cpu_fwd, _project_cpu_bwd)


def _gelu_f32(x):
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """BERT's exact GELU, x·Φ(x), computed in float32 and returned in x's dtype.

    Its own backward keeps only x: with autodiff of `jax.nn.gelu`, XLA's forward kernel wrote
    three [batch, len, intermediate] tensors per layer for the backward to read back
    (BERT-base on an H100, `benchmarks/hlo_bytes.py`)."""
    return _gelu_f32(x.astype(jnp.float32)).astype(x.dtype)


def _gelu_exact_fwd(x):
    return gelu_exact(x), x


def _gelu_exact_bwd(x, grad):
    xf = x.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * _SQRT_HALF))
    pdf = jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
    return ((grad.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)

ACTIVATIONS: dict[str, Callable] = {
    "gelu": gelu_exact,  # BERT's exact erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Dense(nn.Module):
    """`x @ kernel + bias`, the one projection every model in jaxft uses.

    Parameters are stored in `param_dtype` (float32) and cast to the compute `dtype` at use, so
    mixed precision keeps fp32 master weights. Strategies add optional leaves beside `kernel`,
    and this layer honours them when they are present in the params it is applied with:

    - `lora_a` [in, r], `lora_b` [r, out], `lora_scale` []: adds `scale * (x @ A) @ B`, computed
      factorized, so no [in, out] update or weight gradient is ever formed;
    - `ia3_in` [in]: scales the input (IA³ on feed-forward activations);
    - `ia3_out` [out]: scales the output, bias included (IA³ on keys and values).
    """

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.normal(0.02)
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input (train mode only)

    def _leaf(self, name):
        return self.get_variable("params", name) if self.has_variable("params", name) else None

    @nn.compact
    def __call__(self, x, deterministic: bool = True, lora_keep=None):
        """`lora_keep`: the LoRA branch's input dropout mask, drawn by the enclosing block with
        its other masks (`lora_input_widths`); without it the branch draws its own."""
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        ia3_in, ia3_out = self._leaf("ia3_in"), self._leaf("ia3_out")
        if ia3_in is not None:
            x = x * rows_of(ia3_in, x.shape, x.dtype)
        x = x.astype(self.dtype)
        y = project(x, kernel.astype(self.dtype))
        lora_a = self._leaf("lora_a")
        if lora_a is not None:
            if lora_keep is None:
                drop = deterministic or not self.lora_dropout
                h = Dropout(self.lora_dropout)(x, deterministic=drop)
            else:
                h = apply_mask(x, self.lora_dropout, lora_keep)
            h = jnp.dot(
                jnp.dot(h, lora_a.astype(self.dtype)), self._leaf("lora_b").astype(self.dtype)
            )
            y = y + h * self._leaf("lora_scale").astype(self.dtype)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + rows_of(bias, y.shape, self.dtype)
        if ia3_out is not None:
            y = y * rows_of(ia3_out, y.shape, self.dtype)
        return y


def lora_input_widths(params: dict) -> dict[tuple, int]:
    """{path under a module's `params`, e.g. ("attention", "query"): the input width} of every
    `Dense` there that has a LoRA branch, so the model can draw their input dropout masks with
    its other masks (one hash: `dropout.site_masks`)."""
    found = {}

    def walk(tree, path):
        for name, leaf in tree.items():
            if name == "lora_a":
                found[path] = leaf.shape[0]
            elif hasattr(leaf, "items"):
                walk(leaf, path + (name,))

    walk(params, ())
    return found


def under(keeps: dict, name: str) -> dict:
    """The entries of a {path: mask} dict under `name`, with `name` taken off their paths."""
    return {path[1:]: keep for path, keep in keeps.items() if path[:1] == (name,)}


class Adapter(nn.Module):
    """Bottleneck adapter `x + up(act(down(x)))` (Houlsby et al. 2019).

    It exists only when a strategy added its `down`/`up` leaves; with `up` zero-initialised it
    starts as the identity. The bottleneck size is read from those leaves.
    """

    activation: str = "relu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        bottleneck = self.variables["params"]["down"]["kernel"].shape[1]
        h = Dense(bottleneck, dtype=self.dtype, name="down")(x)
        return x + Dense(x.shape[-1], dtype=self.dtype, name="up")(activation(self.activation)(h))


def layer_norm_autodiff(x, scale, bias, epsilon: float, dtype):
    """LayerNorm as plain jnp, differentiated by JAX: the reference `layer_norm` is tested
    against."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + epsilon)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


def _norm_stats(x, epsilon, one_pass: bool = False):
    """(x in float32, mean, 1/std) over the last axis. `one_pass`: the variance as mean(x²) -
    mean², so that both sums are taken in one pass over x (`_layer_norm_fwd` says when)."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    if one_pass:
        square_mean = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
        var = jnp.maximum(square_mean - jnp.square(mean), 0.0)
    else:
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return xf, mean, jax.lax.rsqrt(var + epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x, scale, bias, epsilon: float, dtype):
    """(x - mean) / std * scale + bias over the last axis, statistics in float32, output in
    `dtype`. Its backward keeps x (the residual sum, bf16 under mixed precision) and two floats
    per row, and recomputes the normalised x instead of keeping it."""
    return _layer_norm(x, scale, bias, epsilon, dtype)[0]


def _layer_norm(x, scale, bias, epsilon, dtype, one_pass=False):
    xf, mean, rstd = _norm_stats(x, epsilon, one_pass)
    y = (xf - mean) * rstd * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(dtype), mean, rstd


def _kept_stats(stats):
    """The row statistics LayerNorm's backward reads, kept as the forward computed them. Without
    the barrier XLA's GPU compiler recomputes them in the backward inside a Triton fusion, which
    then writes g·x̂ out in float32 for the scale gradient's column sum to read back: compiled
    for an H100, 50 MB more per norm of the BERT-base step (benchmarks/gpu_hlo.py)."""
    return jax.lax.optimization_barrier(stats)


def _layer_norm_fwd(x, scale, bias, epsilon, dtype):
    # Differentiated on a GPU, the statistics come from one pass: XLA then takes both sums in
    # the kernel that writes x (the residual sum) out for the backward, where the two-pass
    # variance read x once more in a kernel of its own (BERT-base full step compiled for an
    # H100: 49 kernels and 0.31 GB fewer). It loses float32 precision where a row's mean is
    # far from 0 in standard deviations (the variance's relative error grows as 1 + mean²/var):
    # over 768 features the output moved by at most 1e-6 at 1, 8e-6 at 3, 8e-5 at 10; the real
    # MiniLM's LayerNorm inputs, on a dozen sentences, stay under 0.08. Undifferentiated
    # (evaluation, a frozen backbone) the two-pass form stays: there XLA fuses it with the
    # normalisation into one kernel, which one pass broke (frozen step 4.01 -> 4.62 GB).
    y, mean, rstd = _layer_norm(x, scale, bias, epsilon, dtype, one_pass=on_gpu())
    mean, rstd = _kept_stats((mean, rstd))
    return y, (x, mean, rstd, scale, bias)


def _layer_norm_bwd(epsilon, dtype, saved, grad):
    x, mean, rstd, scale, bias = saved
    g = grad.astype(jnp.float32)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    if on_gpu():
        # One column sum over both: XLA's GPU compiler would not merge the two sibling sums, so
        # each read g in a kernel of its own and added a second-stage kernel (BERT-base full
        # step compiled for an H100: 73 kernels and 0.26 GB fewer). On the CPU the stacked sum
        # ran 1.5x slower.
        rows = tuple(range(1, x.ndim))
        dscale, dbias = jnp.sum(jnp.stack([g * xhat, g]), axis=rows)
    else:
        rows = tuple(range(x.ndim - 1))
        dscale, dbias = jnp.sum(g * xhat, axis=rows), jnp.sum(g, axis=rows)
    gx = g * scale.astype(jnp.float32)
    dx = rstd * (
        gx
        - jnp.mean(gx, axis=-1, keepdims=True)
        - xhat * jnp.mean(gx * xhat, axis=-1, keepdims=True)
    )
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def rms_norm_autodiff(x, scale, epsilon: float, dtype):
    """T5's norm as plain jnp, differentiated by JAX: the reference `rms_norm` is tested
    against."""
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + epsilon)
    return (x * scale.astype(jnp.float32)).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x, scale, epsilon: float, dtype):
    """x / rms(x) * scale over the last axis (T5's LayerNorm), in float32, output in `dtype`,
    with a backward that keeps x and one float per row, as `layer_norm`'s."""
    return _rms_norm_fwd(x, scale, epsilon, dtype)[0]


def _rms_norm_fwd(x, scale, epsilon, dtype):
    # Unlike layer_norm's, this forward needs no barrier on its statistics: compiled for an H100,
    # the T5-base step is the same with or without one (XLA keeps the forward's rstd here).
    xf = x.astype(jnp.float32)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + epsilon)
    return (xf * rstd * scale.astype(jnp.float32)).astype(dtype), (x, rstd, scale)


def _rms_norm_bwd(epsilon, dtype, saved, grad):
    x, rstd, scale = saved
    g = grad.astype(jnp.float32)
    xhat = x.astype(jnp.float32) * rstd
    dscale = jnp.sum(g * xhat, axis=tuple(range(x.ndim - 1)))
    gx = g * scale.astype(jnp.float32)
    dx = rstd * (gx - xhat * jnp.mean(gx * xhat, axis=-1, keepdims=True))
    return dx.astype(x.dtype), dscale.astype(scale.dtype)


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class LayerNorm(nn.Module):
    """LayerNorm with statistics in float32 whatever the compute dtype (bf16 moments drift)."""

    epsilon: float = 1e-12
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        return layer_norm(x, scale, bias, self.epsilon, jnp.dtype(self.dtype))


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
    probs = jax.nn.softmax(_logits(scores, biases, scale), axis=-1)
    return apply_mask(probs, rate, keep).astype(dtype or scores.dtype)


def _check_biases(scores, biases):
    if any(b.ndim != scores.ndim for b in biases):
        raise ValueError(f"biases of ranks {[b.ndim for b in biases]} for scores {scores.shape}")


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


def _logits(scores, biases, scale):
    logits = scores.astype(jnp.float32)
    if scale != 1.0:
        logits = logits * scale
    for bias in biases:
        logits = logits + bias
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
    d_biases = tuple(_sum_to(d_logits, b.shape).astype(b.dtype) for b in biases)
    return d_scores, d_biases, None


_attention_probs.defvjp(_attention_probs_fwd, _attention_probs_bwd)


ATTENTION_OPTIONS = ("auto", "explicit", "fused", "cudnn_dropout")


def on_gpu() -> bool:
    """Whether the step is traced for a GPU: the default backend here; benchmarks/gpu_hlo.py,
    compiling for a GPU this machine lacks, says yes while it traces."""
    return jax.default_backend() == "gpu"


def on_cpu() -> bool:
    """Whether the step is traced for this machine's CPU (not for a GPU or a TPU)."""
    return jax.default_backend() == "cpu" and not on_gpu()


def attention_kernel(
    option: str,
    dtype,
    head_dim: int,
    dropout: bool,
    explicit_only: bool = False,
    scanned: bool = False,
) -> str | None:
    """Which fused implementation runs attention, or None for the explicit
    einsum-softmax-einsum (the one that supports jaxft's dropout masks, learned prefixes and
    decode caches).

    - "explicit": always the einsum path;
    - "fused": `jax.nn.dot_product_attention`: cuDNN's flash kernel on GPU in bf16/fp16, XLA's
      implementation elsewhere;
    - "auto": fused on a GPU in bf16/fp16 where cuDNN takes the shape, else explicit;
    - "cudnn_dropout": as "auto", and with attention `dropout` on, cuDNN's flash kernel with
      cuDNN's own dropout (`fused_attention`'s `dropout_rate`) instead of the explicit path.

    With `dropout` on ("cudnn_dropout" aside) or `explicit_only` (learned prefixes, a decode
    cache), the explicit path: neither `jax.nn.dot_product_attention` implementation has
    dropout or takes a non-right-padded mask. Layers `scanned` by lax.scan keep the explicit
    path for dropout too: one cuDNN call in the loop body advances its mask counter once per
    layer, forward in layer order and backward in reverse, so the backward pass of a layer
    would not drop what its forward pass dropped.
    """
    if option not in ATTENTION_OPTIONS:
        raise ValueError(f"unknown attention {option!r}; choose from {ATTENTION_OPTIONS}")
    if option == "explicit" or explicit_only:
        return None
    half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    cudnn_ok = on_gpu() and half and head_dim % 8 == 0 and head_dim <= 128
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


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # keep layer inputs only
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def remat_policy(name: str):
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat {name!r}; choose from {sorted(REMAT_POLICIES)}")
    return REMAT_POLICIES[name]
