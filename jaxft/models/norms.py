"""LayerNorm and T5's RMS norm with statistics in float32 and backward passes of their own, and
the plain-jnp forms they are tested against."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxft.models import backend
from jaxft.models.layers import Dtype


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
    y, mean, rstd = _layer_norm(x, scale, bias, epsilon, dtype, one_pass=backend.on_gpu())
    mean, rstd = _kept_stats((mean, rstd))
    return y, (x, mean, rstd, scale, bias)


def _layer_norm_bwd(epsilon, dtype, saved, grad):
    x, mean, rstd, scale, bias = saved
    g = grad.astype(jnp.float32)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    if backend.on_gpu():
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


class RMSNorm(nn.Module):
    """x / rms(x) * scale, in float32 (T5's LayerNorm: no mean subtraction, no bias)."""

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        return rms_norm(x, scale, self.epsilon, jnp.dtype(self.dtype))
