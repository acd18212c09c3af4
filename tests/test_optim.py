"""The global norm and clipping the train step uses, against optax's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxft.train import optim


def _tree():
    rng = np.random.default_rng(0)
    big = optim.SMALL_LEAF
    return {
        "kernel": jnp.asarray(rng.normal(size=(big,)), jnp.float32),
        "embed": jnp.asarray(rng.normal(size=(2, big)), jnp.float32),
        "layer": {f"b{i}": jnp.asarray(rng.normal(size=(7 + i,)), jnp.float32) for i in range(5)},
        "scale": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    }


def test_global_norm_is_optax_with_the_small_leaves_summed_in_one_reduction():
    tree = _tree()
    np.testing.assert_allclose(optim.global_norm(tree), optax.global_norm(tree), rtol=1e-6)
    # bf16 leaves are squared in float32 (optax squares them in bf16)
    half = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), tree)
    exact = np.sqrt(
        sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(half))
    )
    np.testing.assert_allclose(optim.global_norm(half), exact, rtol=1e-6)
    jaxpr = jax.make_jaxpr(optim.global_norm)(tree).jaxpr
    reductions = [e for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
    # each big leaf along its rows, then its row sums and the six small leaves' squares together
    assert [e.outvars[0].aval.shape for e in reductions] == [(2,), (1,), ()]  # embed, kernel
    assert "optimization_barrier" in [e.primitive.name for e in jaxpr.eqns]


def test_global_norm_of_nothing_is_zero():
    assert float(optim.global_norm({})) == 0.0


@pytest.mark.parametrize("max_norm", [1.0, 1e4])  # clipped, not clipped
def test_clip_by_global_norm_is_optaxs(max_norm):
    tree = _tree()
    ours, state = optim.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    assert state == optim.clip_by_global_norm(max_norm).init(tree) == optax.EmptyState()
    for a, b in zip(
        jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True
    ):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5)
    if max_norm == 1.0:
        np.testing.assert_allclose(optim.global_norm(ours), 1.0, rtol=1e-5)
