"""The GELU, LayerNorm and T5 RMS norm with hand-written backward passes compute the same values
and gradients as their plain-jnp versions differentiated by JAX, in float32 and bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft.models import layers


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _gelu_reference(x):
    return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gelu_exact_matches_autodiff(dtype):
    x = jnp.asarray(np.random.default_rng(0).normal(0, 3, (4, 7, 33)), dtype)
    cot = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), dtype)
    out, vjp = jax.vjp(jax.jit(layers.gelu_exact), x)
    ref, vjp_ref = jax.vjp(_gelu_reference, x)
    assert out.dtype == dtype
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    assert _rel(out, ref) < tol
    assert _rel(vjp(cot)[0], vjp_ref(cot)[0]) < tol
    if dtype == jnp.float32:
        assert np.max(np.abs(np.asarray(out - ref))) < 1e-5


@pytest.mark.parametrize(
    "x_dtype, param_dtype, out_dtype",
    [
        (jnp.float32, jnp.float32, jnp.float32),
        (jnp.bfloat16, jnp.float32, jnp.bfloat16),  # mixed precision: fp32 master params
        (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),  # frozen leaves stored in bf16
    ],
)
def test_layer_norm_matches_autodiff(x_dtype, param_dtype, out_dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.0, 2.0, (3, 5, 48)), x_dtype)
    scale = jnp.asarray(rng.normal(1.0, 0.1, (48,)), param_dtype)
    bias = jnp.asarray(rng.normal(0.0, 0.1, (48,)), param_dtype)
    cot = jnp.asarray(rng.normal(size=x.shape), out_dtype)

    def run(fn):
        out, vjp = jax.vjp(lambda *a: fn(*a, 1e-12, jnp.dtype(out_dtype)), x, scale, bias)
        return out, vjp(cot)

    out, grads = run(jax.jit(layers.layer_norm, static_argnums=(3, 4)))
    ref, grads_ref = run(layers.layer_norm_autodiff)
    assert out.dtype == out_dtype
    assert [g.dtype for g in grads] == [x_dtype, param_dtype, param_dtype]
    tol = 2e-6 if x_dtype == jnp.float32 else 1e-2
    assert _rel(out, ref) < tol
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert _rel(g, g_ref) < (2e-5 if x_dtype == jnp.float32 else 2e-2)


@pytest.mark.parametrize("x_dtype", [jnp.float32, jnp.bfloat16])
def test_rms_norm_matches_autodiff(x_dtype):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(0.5, 2.0, (2, 6, 40)), x_dtype)
    scale = jnp.asarray(rng.normal(1.0, 0.2, (40,)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=x.shape), x_dtype)

    def run(fn):
        out, vjp = jax.vjp(lambda x, s: fn(x, s, 1e-6, jnp.dtype(x_dtype)), x, scale)
        return out, vjp(cot)

    out, grads = run(jax.jit(layers.rms_norm, static_argnums=(2, 3)))
    ref, grads_ref = run(layers.rms_norm_autodiff)
    assert out.dtype == x_dtype and [g.dtype for g in grads] == [x_dtype, jnp.float32]
    tol = 2e-6 if x_dtype == jnp.float32 else 1e-2
    assert _rel(out, ref) < tol
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert _rel(g, g_ref) < (2e-5 if x_dtype == jnp.float32 else 2e-2)


def test_custom_backward_composes_with_remat_and_scan():
    """The custom backward composes with jax.checkpoint and lax.scan (scan_layers, remat)."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 2, 16)), jnp.float32)
    scale, bias = jnp.ones((16,)), jnp.zeros((16,))

    def body(carry, xs):
        y = layers.layer_norm(carry + xs, scale, bias, 1e-6, jnp.dtype(jnp.float32))
        return layers.gelu_exact(y), None

    def loss(fn, x):
        return jnp.sum(jax.lax.scan(fn, jnp.zeros((2, 16)), x)[0] ** 2)

    plain = jax.grad(lambda x: loss(body, x))(x)
    remat = jax.grad(lambda x: loss(jax.checkpoint(body), x))(x)
    np.testing.assert_allclose(np.asarray(remat), np.asarray(plain), rtol=1e-6, atol=1e-6)
