"""jaxft's dropout: masks drawn 16 bits per element, four elements per threefry hash, must
still drop each element independently at the given rate, and be a pure function of the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft.models import layers

RATE = 0.1


def _sigmas(observed, expected_p, n):
    """How many standard errors a frequency is from the probability it estimates."""
    return abs(observed - expected_p) / np.sqrt(expected_p * (1 - expected_p) / n)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_each_element_is_kept_at_the_rate_and_independently_of_its_neighbours(impl):
    key = jax.random.key(3, impl=impl)
    keep = np.asarray(jax.jit(layers.keep_mask, static_argnums=(1, 2))(key, RATE, (256, 4096)))
    assert keep.shape == (256, 4096) and keep.dtype == bool
    assert _sigmas(keep.mean(), 1 - RATE, keep.size) < 5
    # Elements that share a hash word (4 along the last axis) and those that don't.
    for offset in (1, 2, 3, 4, 5):
        both = (keep[:, :-offset] & keep[:, offset:]).mean()
        assert _sigmas(both, (1 - RATE) ** 2, keep[:, offset:].size) < 5, offset
    # Each of the four positions within a word is kept at the rate.
    for lane in range(4):
        assert _sigmas(keep[:, lane::4].mean(), 1 - RATE, keep[:, lane::4].size) < 5, lane


def test_masks_are_a_pure_function_of_the_key_and_differ_between_keys():
    shape = (3, 5, 7)  # a last axis that is not a multiple of 4
    a = layers.keep_mask(jax.random.key(0), 0.5, shape)
    assert a.shape == shape
    np.testing.assert_array_equal(a, layers.keep_mask(jax.random.key(0), 0.5, shape))
    np.testing.assert_array_equal(a, layers.keep_mask(jax.random.PRNGKey(0), 0.5, shape))
    assert not np.array_equal(a, layers.keep_mask(jax.random.key(1), 0.5, shape))


def test_dropout_keeps_the_expectation_and_its_gradient_is_the_mask():
    x = jnp.full((512, 1024), 2.0)
    key = jax.random.key(7)
    out, vjp = jax.vjp(lambda t: layers.dropout(t, RATE, key), x)
    keep = np.asarray(layers.keep_mask(key, RATE, x.shape))
    scale = 1 / (1 - round(RATE * 65536) / 65536)
    np.testing.assert_allclose(np.asarray(out), np.where(keep, 2.0 * scale, 0.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vjp(jnp.ones_like(x))[0]), np.where(keep, scale, 0.0))
    assert abs(float(out.mean()) / 2.0 - 1.0) < 5 * np.sqrt(RATE / (1 - RATE) / x.size)
    # bf16 activations stay bf16
    assert layers.dropout(x.astype(jnp.bfloat16), RATE, key).dtype == jnp.bfloat16


def test_rates_zero_and_one_and_deterministic_mode():
    x = jnp.arange(12.0).reshape(3, 4)
    key = jax.random.key(0)
    np.testing.assert_array_equal(layers.dropout(x, 0.0, key), x)
    np.testing.assert_array_equal(layers.dropout(x, 1.0, key), jnp.zeros_like(x))
    module = layers.Dropout(0.5)
    np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
    dropped = module.apply({}, x, deterministic=False, rngs={"dropout": key})
    assert set(np.unique(np.asarray(dropped) / np.maximum(np.asarray(x), 1))) <= {0.0, 2.0}


def test_without_jaxs_exported_threefry_hash_masks_come_from_random_bits(monkeypatch):
    hashed = np.asarray(layers.keep_mask(jax.random.key(5), RATE, (64, 4096)))
    monkeypatch.setattr(layers, "threefry2x32_p", None)
    keep = np.asarray(layers.keep_mask(jax.random.key(5), RATE, (64, 4096)))
    assert _sigmas(keep.mean(), 1 - RATE, keep.size) < 5
    # and with it, threefry keys do take the hash path: the masks are not the fallback's
    assert not np.array_equal(hashed, keep)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_the_mask_is_kept_as_one_bool_array_behind_an_optimization_barrier(impl):
    # The barrier stops XLA from fusing the hash into every reader of the mask (forward and
    # backward), and its operand must be the bool mask itself, not the hash words: XLA's GPU
    # Triton fusions take a bool operand into the LayerNorm after the dropout, not the integer
    # compare that would turn words into a mask (gpu_hlo.py: 12-18% fewer bytes per step).
    key = jax.random.key(0, impl=impl)
    jaxpr = jax.make_jaxpr(lambda k: layers.keep_mask(k, RATE, (4, 6, 10)))(key).jaxpr
    barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert len(barriers) == 1
    (operand,) = barriers[0].invars
    assert operand.aval.dtype == jnp.bool_ and operand.aval.shape == (4, 6, 10)
    assert barriers[0].outvars == list(jaxpr.outvars)
