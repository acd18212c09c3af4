"""Speed options change how the BERT encoder computes, never what: fused attention, layers under
lax.scan and remat give the explicit, unrolled model's outputs and gradients. The cuDNN test runs
where a GPU is (benchmarks/gpu_check.sh); the rest run everywhere."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxft import peft
from jaxft.models import attention, bert, heads, t5
from jaxft.train import state as state_lib
from jaxft.train import step

ON_GPU = jax.default_backend() == "gpu"
CONFIG = bert.BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
)


def _inputs():
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 100, (3, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 7:].set(0).at[2, 4:].set(0)  # right padding
    return ids, mask


def _model(dtype=jnp.float32, **options):
    config = dataclasses.replace(CONFIG, **options)
    return bert.BertModel(config, head=heads.HeadConfig(num_labels=2), dtype=dtype)


def _outputs_and_grads(model, params):
    ids, mask = _inputs()

    def loss(p):
        out = model.apply({"params": p}, ids, attention_mask=mask)
        return jnp.sum(out.logits), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grads


def _relative(a, b):
    """Relative distance of two pytrees, all leaves together (bf16 against float32 paths)."""
    a, b = (jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(t)]) for t in (a, b))
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.mark.parametrize(
    "options",
    [dict(attention="fused"), dict(scan_layers=True), dict(remat="full"), dict(remat="dots")],
    ids=["fused", "scan", "remat_full", "remat_dots"],
)
def test_speed_option_gives_the_same_outputs_and_gradients(options):
    reference = _model(attention="explicit")
    ids, mask = _inputs()
    params = reference.init(jax.random.key(0), ids)["params"]
    ref_out, ref_grads = _outputs_and_grads(reference, params)
    out, grads = _outputs_and_grads(_model(**options), params)
    keep = np.asarray(mask, bool)  # hidden states of padding positions are not compared
    hidden = np.abs(np.asarray(out.last_hidden_state) - np.asarray(ref_out.last_hidden_state))
    assert hidden[keep].max() <= 1e-5
    assert _max_diff(out.logits, ref_out.logits) <= 1e-5
    assert _max_diff(grads, ref_grads) <= 1e-5


def test_scan_falls_back_to_unrolled_when_layers_differ():
    """LoRA on one layer only: the layers' trees differ, so they cannot be stacked."""
    ids, _ = _inputs()
    params = _model().init(jax.random.key(0), ids)["params"]
    cfg = peft.defaults()
    cfg.name, cfg.lora.targets = "lora", ("layer_1/attention/query$",)
    params, _ = peft.apply(params, cfg, jax.random.key(1))
    layer_trees = [params["encoder"][f"layer_{i}"] for i in range(3)]
    assert bert.stack_layers(layer_trees) is None
    ref_out, ref_grads = _outputs_and_grads(_model(), params)
    out, grads = _outputs_and_grads(_model(scan_layers=True), params)
    assert _max_diff((out.logits, grads), (ref_out.logits, ref_grads)) <= 1e-6


def test_scan_with_dropout_trains_and_is_deterministic():
    model = _model(scan_layers=True)
    ids, mask = _inputs()
    params = model.init(jax.random.key(0), ids)["params"]
    run = lambda key: (
        model.apply(
            {"params": params}, ids, attention_mask=mask, deterministic=False, rngs={"dropout": key}
        ).logits
    )
    np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(1)))
    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))


def _train_losses(dropout_rng: str, steps: int = 3) -> list[float]:
    model = _model()
    ids, mask = _inputs()
    params = model.init(jax.random.key(0), ids)["params"]
    tx = optax.adamw(1e-3)
    state = state_lib.create(params, jax.tree_util.tree_map(lambda _: True, params), tx,
                             jax.random.key(3))  # fmt: skip
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": jnp.zeros_like(ids),
        "labels": jnp.array([0, 1, 1]),
        "weights": jnp.ones((3,)),
    }
    train_step = jax.jit(step.make_train_step(model, tx, dropout_rng=dropout_rng))
    losses = []
    for _ in range(steps):
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses


def test_rbg_dropout_is_reproducible_and_draws_other_masks_than_threefry():
    rbg = np.array(_train_losses("rbg"))
    assert np.all(np.isfinite(rbg))
    # GPU scatter-adds (embedding gradients) may change the last bits between runs
    np.testing.assert_allclose(rbg, _train_losses("rbg"), rtol=1e-5)
    assert np.abs(rbg - np.array(_train_losses("threefry"))).max() > 1e-4


def test_attention_kernel_choice():
    bf16 = jnp.bfloat16
    cudnn = "cudnn" if ON_GPU else None
    assert attention.attention_kernel("explicit", bf16, 64, False) is None
    assert attention.attention_kernel("auto", bf16, 64, True) is None  # dropout on: explicit
    assert attention.attention_kernel("fused", bf16, 64, True) is None
    assert attention.attention_kernel("fused", jnp.float32, 64, False) == "xla"
    assert attention.attention_kernel("fused", bf16, 64, False) == ("cudnn" if ON_GPU else "xla")
    assert attention.attention_kernel("auto", bf16, 64, False) == cudnn
    assert attention.attention_kernel("auto", jnp.float32, 64, False) is None
    # cudnn_dropout: cuDNN with dropout on too, where cuDNN runs; jaxft's explicit path elsewhere
    assert attention.attention_kernel("cudnn_dropout", bf16, 64, True) == cudnn
    assert attention.attention_kernel("cudnn_dropout", bf16, 64, False) == cudnn
    assert attention.attention_kernel("cudnn_dropout", jnp.float32, 64, True) is None
    assert attention.attention_kernel("cudnn_dropout", bf16, 64, True, explicit_only=True) is None
    # under lax.scan cuDNN's mask counter would pair a layer's backward with another's forward
    assert attention.attention_kernel("cudnn_dropout", bf16, 64, True, scanned=True) is None
    assert attention.attention_kernel("cudnn_dropout", bf16, 64, False, scanned=True) == cudnn
    # flash: jaxft's kernel with dropout on, on a GPU in bf16, where the caller says the
    # sequence length and the kernel takes it; as auto otherwise
    flash = "flash" if ON_GPU else None
    assert attention.attention_kernel("flash", bf16, 64, True, flash_seq=128) == flash
    assert attention.attention_kernel("flash", bf16, 64, True, scanned=True, flash_seq=128) == flash
    assert attention.attention_kernel("flash", bf16, 64, True) is None  # no length: explicit
    assert attention.attention_kernel("flash", bf16, 64, True, flash_seq=40) is None
    assert attention.attention_kernel("flash", jnp.float32, 64, True, flash_seq=128) is None
    assert attention.attention_kernel("flash", bf16, 64, False, flash_seq=128) == cudnn
    with pytest.raises(ValueError, match="unknown attention"):
        attention.attention_kernel("flashy", bf16, 64, False)


def test_fused_attention_refuses_dropout_outside_cudnn():
    q = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match="cuDNN only"):
        attention.fused_attention(q, q, q, jnp.array([4]), "xla", dropout_rate=0.1)


def test_call_seeds_differ_by_layer_and_by_run_seed():
    seeds = {attention.call_seed(base, ("encoder", f"layer_{i}", "attention"))
             for base in (0, 1) for i in range(12)}  # fmt: skip
    assert len(seeds) == 24 and all(0 <= s < 2**31 for s in seeds)
    assert attention.call_seed(0, ("a",)) == attention.call_seed(0, ("a",))


@pytest.mark.skipif(ON_GPU, reason="on a GPU cudnn_dropout runs cuDNN's own masks")
def test_cudnn_dropout_off_the_gpu_trains_as_auto():
    """Where cuDNN does not run, attention=cudnn_dropout is the explicit path with jaxft's masks:
    a CPU run of an experiment written for the GPU trains exactly as attention=auto."""
    ids, mask = _inputs()
    auto, cudnn_dropout = _model(), _model(attention="cudnn_dropout", dropout_seed=5)
    params = auto.init(jax.random.key(0), ids)["params"]
    run = lambda model: model.apply(
        {"params": params}, ids, attention_mask=mask, deterministic=False,
        rngs={"dropout": jax.random.key(1)},
    ).logits  # fmt: skip
    np.testing.assert_array_equal(run(auto), run(cudnn_dropout))


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's fused attention needs an NVIDIA GPU")
def test_cudnn_attention_matches_explicit_in_bf16():
    ids = jnp.asarray(np.random.default_rng(1).integers(3, 100, (4, 128)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 100:].set(0).at[2, 17:].set(0)
    config = dataclasses.replace(CONFIG, hidden_size=256, num_attention_heads=4)
    explicit = bert.BertModel(dataclasses.replace(config, attention="explicit"), dtype=jnp.bfloat16)
    fused = bert.BertModel(dataclasses.replace(config, attention="auto"), dtype=jnp.bfloat16)
    params = explicit.init(jax.random.key(0), ids)["params"]
    keep = np.asarray(mask, bool)

    def hidden_and_grads(model):
        def loss(p):
            h = model.apply({"params": p}, ids, attention_mask=mask).last_hidden_state
            return jnp.sum(h * mask[..., None]), h

        (_, h), g = jax.value_and_grad(loss, has_aux=True)(params)
        return np.asarray(h)[keep], g

    (a, grads_a), (b, grads_b) = hidden_and_grads(explicit), hidden_and_grads(fused)
    assert _relative(a, b) < 2e-2
    assert _relative(grads_a, grads_b) < 3e-2  # all gradients together: some are ~0 in theory


def _cudnn_dropout_attention(rate, seed=7, batch=2, length=64, heads=2):
    """(probs, grad_probs_t) of one compiled call: value = identity, so the output is the
    dropped, rescaled attention matrix A [b, t, n, s]; the gradient of sum(A * w) with respect
    to the value is A^T w, computed by cuDNN's backward kernel from its own masks."""
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.normal(size=(batch, length, heads, 64)), jnp.bfloat16) for _ in "qk")
    eye = jnp.broadcast_to(jnp.eye(length, 64, dtype=jnp.bfloat16)[None, :, None, :],
                           (batch, length, heads, 64))  # fmt: skip
    w = jnp.asarray(rng.normal(size=(batch, length, heads, 64)), jnp.bfloat16)
    lengths = jnp.full((batch,), length, jnp.int32)

    @jax.jit
    def probs_and_grad(v):
        attend = lambda v: attention.fused_attention(q, k, v, lengths, "cudnn", rate, seed)
        out, vjp = jax.vjp(attend, v)
        return out, vjp(w)[0]

    return probs_and_grad, eye, w


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's dropout needs an NVIDIA GPU")
def test_cudnn_dropout_masks_change_every_step_and_the_backward_uses_the_forward_mask():
    rate = 0.5
    probs_and_grad, eye, w = _cudnn_dropout_attention(rate)
    (a1, g1), (a2, _) = probs_and_grad(eye), probs_and_grad(eye)
    a1, a2 = np.asarray(a1, np.float32), np.asarray(a2, np.float32)
    dropped = a1 == 0
    assert abs(dropped.mean() - rate) < 0.03  # the rate, drawn by cuDNN
    assert (dropped != (a2 == 0)).mean() > 0.3  # the next execution draws a new mask
    # kept probabilities are rescaled by 1 / (1 - rate): rows sum to 1 on average
    assert abs(a1.sum(axis=-1).mean() - 1.0) < 0.05
    # d/dv sum(A v * w) = A^T w: the backward kernel dropped what the forward dropped
    expected = np.einsum("btns,btnh->bsnh", a1, np.asarray(w, np.float32))
    got = np.asarray(g1, np.float32)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's dropout needs an NVIDIA GPU")
def test_cudnn_dropout_bert_trains_and_its_layers_draw_their_own_masks():
    """A training step (forward and backward kernels) compiled so that XLA puts even short
    runs of kernels into CUDA graphs, which it instantiates after the first executions and then
    replays, as in a long training loop: cuDNN's masks must still change at every execution,
    replayed graphs included."""
    ids, mask = _inputs()
    model = _model(jnp.bfloat16, attention="cudnn_dropout", hidden_size=128,
                   num_attention_heads=2, attention_probs_dropout_prob=0.5)  # fmt: skip
    params = model.init(jax.random.key(0), ids)["params"]

    def loss(p):
        rngs = {"dropout": jax.random.key(1)}  # jaxft's own masks: the same at every execution
        out = model.apply({"params": p}, ids, attention_mask=mask, deterministic=False, rngs=rngs)
        return jnp.mean(out.logits.astype(jnp.float32) ** 2)

    graphs = {"xla_gpu_graph_min_graph_size": 1}
    step = jax.jit(jax.value_and_grad(loss)).lower(params).compile(compiler_options=graphs)
    seeds = re.findall(r'"seed": ?"?(\d+)', step.as_text())
    # one seed per layer, shared by its forward and backward kernels
    assert len(seeds) == 2 * CONFIG.num_hidden_layers
    assert len(set(seeds)) == CONFIG.num_hidden_layers
    losses = [float(step(params)[0]) for _ in range(6)]
    assert np.all(np.isfinite(losses)) and len(set(losses)) == len(losses), losses


T5_CONFIG = t5.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                        num_decoder_layers=2, num_heads=4, dropout_rate=0.0)  # fmt: skip


def _t5_outputs_and_grads(attention, dtype=jnp.float32, target=7):
    """Logits and gradients of a T5 with right-padded encoder and decoder masks."""
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(2, 100, (3, 10)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 6:].set(0).at[2, 3:].set(0)
    labels = jnp.asarray(rng.integers(2, 100, (3, target)), jnp.int32)
    decoder_mask = jnp.ones_like(labels).at[0, 5:].set(0)
    model = t5.T5Model(dataclasses.replace(T5_CONFIG, attention=attention), dtype=dtype)
    params = t5.T5Model(T5_CONFIG).init(jax.random.key(0), ids, decoder_input_ids=labels)
    params = params["params"]

    def loss(p):
        logits = model.apply({"params": p}, ids, attention_mask=mask, decoder_input_ids=labels,
                             decoder_attention_mask=decoder_mask).logits  # fmt: skip
        return jnp.sum(logits * decoder_mask[..., None]), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return np.asarray(logits, np.float32)[np.asarray(decoder_mask, bool)], grads


def test_t5_fused_attention_gives_the_explicit_outputs_and_gradients():
    """Position bias (and its gradient), encoder padding, causal decoder with padding and
    cross-attention over padded memory, through jax.nn.dot_product_attention (XLA's
    implementation here, cuDNN's on a GPU in bf16)."""
    logits, grads = _t5_outputs_and_grads("explicit")
    fused_logits, fused_grads = _t5_outputs_and_grads("fused")
    np.testing.assert_allclose(fused_logits, logits, atol=1e-5)
    # float32 rounding of gradients up to ~40 in size (jax 0.11's CPU sums reach 1.1e-5)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5), fused_grads, grads
    )
    position_grad = grads["encoder"]["relative_attention_bias"]["embedding"]
    assert float(jnp.abs(position_grad).max()) > 0  # the bias gradient is compared, not zero
    # auto is explicit for T5: cuDNN only when asked for
    auto_logits, _ = _t5_outputs_and_grads("auto")
    np.testing.assert_array_equal(auto_logits, logits)


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's fused attention needs an NVIDIA GPU")
def test_t5_cudnn_attention_matches_explicit_in_bf16():
    """cuDNN with T5's position bias (and its gradient), causal decoder and cross-attention;
    even lengths (cuDNN trains with a bias only over those) and, in the odd-length call, the
    explicit path."""
    for target in (8, 7):
        logits, grads = _t5_outputs_and_grads("explicit", jnp.bfloat16, target)
        fused_logits, fused_grads = _t5_outputs_and_grads("fused", jnp.bfloat16, target)
        assert _relative(logits, fused_logits) < 2e-2
        assert _relative(grads, fused_grads) < 3e-2


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's dropout needs an NVIDIA GPU")
def test_t5_cudnn_dropout_trains_and_draws_new_masks_each_step():
    config = dataclasses.replace(T5_CONFIG, attention="cudnn_dropout", dropout_rate=0.5)
    model = t5.T5Model(config, dtype=jnp.bfloat16)
    ids = jnp.asarray(np.random.default_rng(0).integers(2, 100, (2, 16)), jnp.int32)
    params = t5.T5Model(T5_CONFIG).init(jax.random.key(0), ids, decoder_input_ids=ids[:, :8])

    @jax.jit
    def loss_and_grads(p):
        def loss(p):
            rngs = {"dropout": jax.random.key(1)}
            out = model.apply(
                {"params": p}, ids, decoder_input_ids=ids[:, :8], deterministic=False, rngs=rngs
            )
            return jnp.mean(out.logits.astype(jnp.float32) ** 2)

        return jax.value_and_grad(loss)(p)

    hlo = loss_and_grads.lower(params["params"]).compile().as_text()
    assert "fmhaScaleBiasSoftmaxDropoutBackward" in hlo  # position bias, dropout, backward
    assert "fmhaSoftmaxDropout" in hlo  # cross-attention: no bias
    (first, grads), (second, _) = loss_and_grads(params["params"]), loss_and_grads(params["params"])
    assert np.isfinite(float(first)) and float(first) != float(second)
    assert all(
        np.all(np.isfinite(np.asarray(g, np.float32))) for g in jax.tree_util.tree_leaves(grads)
    )


def test_the_experiment_sets_attention_and_the_dropout_seed_of_either_family():
    from jaxft.config import UserError, defaults, validate
    from jaxft.train import loop

    cfg = defaults()
    cfg.attention, cfg.seed = "cudnn_dropout", 7
    validate(cfg)
    for model in (_model(), t5.T5Model(T5_CONFIG)):
        config = loop.with_speed_options(model, cfg).config
        assert (config.attention, config.dropout_seed) == ("cudnn_dropout", 7)
    cfg.scan_layers = True
    with pytest.raises(UserError, match="BERT family only"):
        loop.with_speed_options(t5.T5Model(T5_CONFIG), cfg)
    cfg.scan_layers = False
    cfg.attention = "flash"  # jaxft's kernel: the BERT family's attention, no position bias
    validate(cfg)
    assert loop.with_speed_options(_model(), cfg).config.attention == "flash"
    with pytest.raises(UserError, match="attention='flash' .* for the BERT family"):
        loop.with_speed_options(t5.T5Model(T5_CONFIG), cfg)
    cfg.attention = "flashy"
    with pytest.raises(UserError, match="attention='flashy'; use one of .*cudnn_dropout, flash"):
        validate(cfg)
