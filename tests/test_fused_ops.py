"""The GELU, LayerNorm, T5 RMS norm and attention softmax (`attention_probs_vjp`, a benchmark
candidate) with hand-written backward passes compute the same values and gradients as their
plain-jnp versions differentiated by JAX, in float32 and bf16 compute."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft.models import attention, backend, layers, norms
from jaxft.models import dropout as dropout_lib


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
@pytest.mark.parametrize("gpu", [False, True])  # the GPU's one-pass statistics, stacked sums
def test_layer_norm_matches_autodiff(monkeypatch, x_dtype, param_dtype, out_dtype, gpu):
    monkeypatch.setattr(backend, "on_gpu", lambda: gpu)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.0, 2.0, (3, 5, 48)), x_dtype)
    scale = jnp.asarray(rng.normal(1.0, 0.1, (48,)), param_dtype)
    bias = jnp.asarray(rng.normal(0.0, 0.1, (48,)), param_dtype)
    cot = jnp.asarray(rng.normal(size=x.shape), out_dtype)

    def run(fn):
        out, vjp = jax.vjp(lambda *a: fn(*a, 1e-12, jnp.dtype(out_dtype)), x, scale, bias)
        return out, vjp(cot)

    # A fresh function to jit: jit(norms.layer_norm) would reuse the trace of the case before,
    # made with the other answer of on_gpu.
    fresh = lambda *a: norms.layer_norm(*a)
    out, grads = run(jax.jit(fresh, static_argnums=(3, 4)))
    ref, grads_ref = run(norms.layer_norm_autodiff)
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

    out, grads = run(jax.jit(norms.rms_norm, static_argnums=(2, 3)))
    ref, grads_ref = run(norms.rms_norm_autodiff)
    assert out.dtype == x_dtype and [g.dtype for g in grads] == [x_dtype, jnp.float32]
    tol = 2e-6 if x_dtype == jnp.float32 else 1e-2
    assert _rel(out, ref) < tol
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert _rel(g, g_ref) < (2e-5 if x_dtype == jnp.float32 else 2e-2)


def _barrier_operands(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [
        [(v.aval.shape, v.aval.dtype) for v in e.invars]
        for e in jaxpr.eqns
        if e.primitive.name == "optimization_barrier"
    ]


def test_layer_norm_keeps_its_row_statistics_for_the_backward_behind_a_barrier():
    # Under differentiation the forward keeps its float32 row statistics behind an optimization
    # barrier: XLA's GPU compiler otherwise recomputes them in the backward and writes g·x̂ out
    # in float32 for the scale gradient to read back. Without differentiation (evaluation, a
    # frozen backbone) there is no barrier, so the norm stays one fused kernel.
    x, scale, bias = jnp.ones((2, 3, 8), jnp.bfloat16), jnp.ones(8), jnp.zeros(8)
    fn = lambda x, s, b: norms.layer_norm(x, s, b, 1e-12, jnp.bfloat16)
    assert _barrier_operands(lambda *a: jax.vjp(fn, *a)[0], x, scale, bias) == [
        [((2, 3, 1), jnp.float32)] * 2
    ]
    assert _barrier_operands(fn, x, scale, bias) == []


def _depends_on(jaxpr, var, source) -> bool:
    """Whether jaxpr variable `var` is computed from `source`."""
    producers = {out: e for e in jaxpr.eqns for out in e.outvars}
    todo, seen = [var], set()
    while todo:
        v = todo.pop()
        if v is source:
            return True
        if v in seen or v not in producers:
            continue
        seen.add(v)
        todo += [i for i in producers[v].invars if not isinstance(i, jax.extend.core.Literal)]
    return False


@pytest.mark.parametrize("gpu", [False, True])
def test_layer_norm_differentiated_on_a_gpu_takes_its_sums_in_one_pass(monkeypatch, gpu):
    # On a GPU the differentiated forward takes sum(x) and sum(x²) from one pass over x (XLA
    # then computes both in the kernel that writes x out); elsewhere, and undifferentiated, the
    # variance's sum reads x - mean, a second pass. Both match the autodiff reference with row
    # means two standard deviations from 0 (the real MiniLM's LayerNorm inputs: under 0.08).
    monkeypatch.setattr(backend, "on_gpu", lambda: gpu)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(2.0, 1.0, (3, 5, 64)), jnp.float32)
    scale = jnp.asarray(rng.normal(1.0, 0.1, (64,)), jnp.float32)
    bias = jnp.asarray(rng.normal(0.0, 0.1, (64,)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    fn = lambda x, s, b: norms.layer_norm(x, s, b, 1e-12, jnp.dtype(jnp.float32))
    out, vjp = jax.vjp(fn, x, scale, bias)
    ref, vjp_ref = jax.vjp(
        lambda *a: norms.layer_norm_autodiff(*a, 1e-12, jnp.float32), x, scale, bias
    )
    assert _rel(out, ref) < 2e-6
    for g, g_ref in zip(vjp(cot), vjp_ref(cot), strict=True):
        assert _rel(g, g_ref) < 2e-5

    def sums(f):
        jaxpr = jax.make_jaxpr(f)(x, scale, bias).jaxpr
        (call,) = [e for e in jaxpr.eqns if "call_jaxpr" in e.params] or [None]
        jaxpr = jaxpr if call is None else call.params["call_jaxpr"].jaxpr  # undifferentiated
        reduces = [e for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
        return jaxpr, reduces[:2]  # the mean's and the variance's

    jaxpr, (mean, var) = sums(lambda *a: jax.vjp(fn, *a)[0])
    assert _depends_on(jaxpr, var.invars[0], mean.outvars[0]) is not gpu
    jaxpr, (mean, var) = sums(fn)
    assert _depends_on(jaxpr, var.invars[0], mean.outvars[0])


@pytest.mark.parametrize("gpu", [False, True])
def test_layer_norm_backward_on_a_gpu_sums_its_scale_and_bias_gradients_together(monkeypatch, gpu):
    # XLA's GPU compiler reads g once for both column sums only when they are one reduction.
    monkeypatch.setattr(backend, "on_gpu", lambda: gpu)
    x, scale, bias = jnp.ones((2, 3, 8), jnp.bfloat16), jnp.ones(8), jnp.zeros(8)
    fn = lambda x, s, b: norms.layer_norm(x, s, b, 1e-12, jnp.bfloat16)
    backward = lambda *a: jax.vjp(fn, *a)[1](jnp.ones((2, 3, 8), jnp.bfloat16))
    jaxpr = jax.make_jaxpr(backward)(x, scale, bias).jaxpr
    column_sums = [
        e.outvars[0].aval.shape
        for e in jaxpr.eqns
        if e.primitive.name == "reduce_sum" and e.outvars[0].aval.shape[-1:] == (8,)
    ]
    assert column_sums == ([(2, 8)] if gpu else [(8,), (8,)])


def test_custom_backward_composes_with_remat_and_scan():
    """The custom backward composes with jax.checkpoint and lax.scan (scan_layers, remat)."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 2, 16)), jnp.float32)
    scale, bias = jnp.ones((16,)), jnp.zeros((16,))

    def body(carry, xs):
        y = norms.layer_norm(carry + xs, scale, bias, 1e-6, jnp.dtype(jnp.float32))
        return layers.gelu_exact(y), None

    def loss(fn, x):
        return jnp.sum(jax.lax.scan(fn, jnp.zeros((2, 16)), x)[0] ** 2)

    plain = jax.grad(lambda x: loss(body, x))(x)
    remat = jax.grad(lambda x: loss(jax.checkpoint(body), x))(x)
    np.testing.assert_allclose(np.asarray(remat), np.asarray(plain), rtol=1e-6, atol=1e-6)


def _attention_case(dtype, seed=0):
    """Scores [2, 3, 5, 16], a padding bias (row 1 keeps 9 keys) and a learned position bias."""
    rng = np.random.default_rng(seed)
    scores = jnp.asarray(rng.normal(0, 4, (2, 3, 5, 16)), dtype)
    keep = np.ones((2, 1, 1, 16), bool)
    keep[1, ..., 9:] = False
    padding = jnp.where(jnp.asarray(keep), 0.0, jnp.finfo(jnp.float32).min)
    position = jnp.asarray(rng.normal(0, 1, (1, 3, 5, 16)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=scores.shape), dtype)
    return scores, (position, padding), cot


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_attention_probs_vjp_matches_softmax_and_dropout_by_autodiff(dtype, rate):
    scores, biases, cot = _attention_case(dtype)
    keep = dropout_lib.keep_mask(jax.random.key(7), rate, scores.shape) if rate else None

    def run(fn):
        out, vjp = jax.vjp(lambda s, b: fn(s, b, 0.125, rate, keep, dtype), scores, biases)
        return out, vjp(cot)

    probs_vjp = jax.jit(attention.attention_probs_vjp, static_argnums=(2, 3, 5))
    out, (d_scores, d_biases) = run(probs_vjp)
    ref, (d_scores_ref, d_biases_ref) = run(attention.attention_probs)
    assert out.dtype == dtype and d_scores.dtype == dtype
    assert [b.shape for b in d_biases] == [(1, 3, 5, 16), (2, 1, 1, 16)]
    tol = 2e-6 if dtype == jnp.float32 else 1e-2
    assert _rel(out, ref) < tol
    assert _rel(d_scores, d_scores_ref) < tol
    assert _rel(d_biases[0], d_biases_ref[0]) < tol  # T5's learned position bias
    assert np.all(np.asarray(out)[1, ..., 9:] == 0)  # padded keys get no weight
    if rate:  # the same elements dropped, those the mask drops
        assert np.array_equal(np.asarray(out) == 0, np.asarray(ref) == 0)
        assert 0.1 < np.mean(np.asarray(out)[0] == 0) < 0.5


@pytest.mark.parametrize("fn", [attention.attention_probs, attention.attention_probs_vjp])
def test_attention_probs_rows_with_every_key_masked_are_uniform_as_softmax(fn):
    scores = jnp.zeros((1, 1, 2, 4))
    bias = jnp.full((1, 1, 1, 4), jnp.finfo(jnp.float32).min)
    np.testing.assert_allclose(np.asarray(fn(scores, (bias,))), 0.25)
    grad = jax.grad(lambda s: jnp.sum(fn(s, (bias,)) ** 2))(scores)
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("fn", [attention.attention_probs, attention.attention_probs_vjp])
def test_attention_probs_rejects_a_bias_of_another_rank(fn):
    with pytest.raises(ValueError, match="ranks"):
        fn(jnp.zeros((1, 1, 2, 4)), (jnp.zeros((4,)),))


def test_dense_sums_its_bias_and_ia3_gradients_over_rows_in_float32():
    # Under bf16 compute the bias and IA³ vectors' gradients sum 8,192 rows: JAX's transpose of
    # a broadcast summed them in bf16 (1-2% off here), `rows_of` sums in float32.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 128, 32)), jnp.float32)
    cot = jnp.asarray(rng.normal(0.05, 1.0, (64, 128, 48)), jnp.bfloat16)
    dense = layers.Dense(48, dtype=jnp.bfloat16)
    params = dense.init(jax.random.key(0), x)["params"]
    params["bias"] = jnp.asarray(rng.normal(0.0, 0.1, (48,)), jnp.float32)
    params["ia3_out"] = jnp.asarray(rng.normal(1.0, 0.1, (48,)), jnp.float32)
    y, vjp = jax.vjp(lambda p: dense.apply({"params": p}, x), params)
    (grads,) = vjp(cot)
    scale = np.asarray(params["ia3_out"].astype(jnp.bfloat16), np.float64)
    cot64 = np.asarray(cot, np.float64)
    assert grads["bias"].dtype == grads["ia3_out"].dtype == jnp.float32
    assert _rel(grads["bias"], (cot64 * scale).sum((0, 1))) < 3e-3
    before_scale = np.asarray(y, np.float64) / scale
    assert _rel(grads["ia3_out"], (cot64 * before_scale).sum((0, 1))) < 3e-3


def test_rows_of_broadcasts_over_leading_rows_only():
    v = jnp.arange(6.0).reshape(2, 3)
    out = layers.rows_of(v, (4, 2, 3), jnp.bfloat16)
    assert out.shape == (4, 2, 3) and out.dtype == jnp.bfloat16
    grad = jax.grad(lambda v: jnp.sum(layers.rows_of(v, (4, 2, 3), jnp.bfloat16)))(v)
    np.testing.assert_array_equal(grad, np.full((2, 3), 4.0))
    with pytest.raises(ValueError, match="cannot broadcast"):
        layers.rows_of(v, (4, 3, 2), jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_project_matches_a_matmul_differentiated_by_jax(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 9, 16)), dtype)
    kernel = jnp.asarray(rng.normal(size=(16, 24)), dtype)
    cot = jnp.asarray(rng.normal(size=(4, 9, 24)), dtype)
    out, vjp = jax.vjp(jax.jit(layers.project), x, kernel)
    ref, vjp_ref = jax.vjp(jnp.dot, x, kernel)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref)
    for got, want in zip(vjp(cot), vjp_ref(cot), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert _rel(got, want) < (1e-6 if dtype == jnp.float32 else 1e-2)


def test_project_takes_its_weight_gradient_behind_a_barrier_on_the_cpu_only(monkeypatch):
    # On the CPU the barrier keeps XLA from fusing the transposes of x and g that its matmul
    # library wants into the kernels that produce g (written one strided column at a time
    # there); a GPU's compiler fuses them into its matmuls, so it gets the plain product.
    x, kernel = jnp.ones((2, 3, 8)), jnp.ones((8, 5))
    # a new function each time: JAX caches a traced function by identity
    grads = lambda: lambda x, k: jax.grad(lambda x, k: jnp.sum(layers.project(x, k)), (0, 1))(x, k)
    kept = [((2, 3, 8), jnp.float32), ((2, 3, 5), jnp.float32)]  # x and g
    assert _barrier_operands(grads(), x, kernel) == [kept]
    monkeypatch.setattr(backend, "on_gpu", lambda: True)
    assert _barrier_operands(grads(), x, kernel) == []


def test_lora_branch_is_scaled_in_float32_under_bf16():
    # PEFT multiplies the bf16 branch by a Python float (computed in float32, rounded once);
    # the scale rounded to bf16 first (2.671875 for 32/12) was 0.2% off for every element.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.5, 2.0, (64, 16)), jnp.bfloat16)
    scale = 32 / 12
    params = {
        "kernel": jnp.zeros((16, 8)),
        "bias": jnp.zeros((8,)),
        "lora_a": jnp.asarray(rng.uniform(0.0, 1.0, (16, 4)), jnp.float32),
        "lora_b": jnp.asarray(rng.uniform(0.0, 1.0, (4, 8)), jnp.float32),
        "lora_scale": jnp.asarray(scale, jnp.float32),
    }
    y = layers.Dense(8, dtype=jnp.bfloat16).apply({"params": params}, x)
    to_bf16 = lambda t: t.astype(jnp.bfloat16)
    branch = jnp.dot(jnp.dot(x, to_bf16(params["lora_a"])), to_bf16(params["lora_b"]))
    exact = np.asarray(branch, np.float32) * scale
    assert y.dtype == jnp.bfloat16
    assert abs(float(np.asarray(y, np.float32).sum() / exact.sum()) - 1.0) < 5e-4


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_a_bias_gradient_sums_the_score_gradient_rounded_to_the_scores_dtype(dtype, monkeypatch):
    scores, (position, padding), cot = _attention_case(dtype)
    probs = lambda s, p, extra: attention.attention_probs(s, (p, padding, extra), 0.125, 0, None)
    d_position = jax.vjp(lambda p: probs(scores, p, jnp.zeros(scores.shape)), position)[1](cot)[0]
    # the logits' own float32 gradient: a zero bias of the scores' shape, added by plain `+`
    monkeypatch.setattr(attention, "add_bias", lambda logits, bias, dtype: logits + bias)
    d_logits = jax.vjp(lambda e: probs(scores, position, e), jnp.zeros(scores.shape))[1](cot)[0]
    expected = jnp.sum(d_logits.astype(dtype).astype(jnp.float32), axis=0, keepdims=True)
    assert d_position.dtype == jnp.float32 and d_position.shape == position.shape
    np.testing.assert_allclose(np.asarray(d_position), np.asarray(expected), rtol=1e-6, atol=1e-7)
    monkeypatch.undo()  # a bias of another dtype gets its gradient in that dtype
    half = position.astype(jnp.bfloat16)
    d_half = jax.vjp(lambda p: probs(scores, p, jnp.zeros(scores.shape)), half)[1](cot)[0]
    assert d_half.dtype == jnp.bfloat16


def test_each_calls_bias_gradient_is_summed_behind_its_own_barrier():
    # T5 shares one position bias among its layers; XLA must not merge their sums into one
    # reduction that recomputes every layer's softmax backward (attention.add_bias)
    scores, (position, padding), cot = _attention_case(jnp.bfloat16)
    two_layers = lambda p: jnp.sum(
        attention.attention_probs(scores, (p, padding))
        * attention.attention_probs(scores * 2, (p, padding))
    )
    jaxpr = jax.make_jaxpr(jax.grad(two_layers))(position).jaxpr
    barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    # per call, the position bias's summed gradient, and the rounded score gradient it sums
    shapes = [tuple(e.outvars[0].aval.shape) for e in barriers]
    assert shapes.count(position.shape) == 2
    assert shapes.count(scores.shape) >= 2
