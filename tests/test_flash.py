"""jaxft's Pallas flash attention (`attention="flash"`): the kernels, run by Pallas's interpreter
here and compiled by Triton on a GPU, give `flash.reference`'s outputs and gradients with the
same dropout masks; the masks keep the rate, are independent and are a function of the step's
key, the example, the layer, the head and the position only; the BERT model plumbs each layer's
seeds into the kernel."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft.models import backend, bert, dropout, flash, heads

ON_GPU = jax.default_backend() == "gpu"


def _qkv(batch, seq, n_heads, head_dim, dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    shape = (batch, seq, n_heads, head_dim)
    q, k, v, w = (jax.random.normal(key, shape, jnp.float32) for key in keys)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), w


def _grads(fn, q, k, v, w):
    return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w), (0, 1, 2))(
        q, k, v
    )


def _relative(a, b):
    """|a - b| / |b| over every leaf of two pytrees together."""
    flat = lambda t: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(t)])
    a, b = flat(a).astype(jnp.float32), flat(b).astype(jnp.float32)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _max_diff(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
               for x, y in pairs)  # fmt: skip


@pytest.mark.parametrize("seq", [32, 48, 128], ids=["one_block", "blocked", "one_block_4_passes"])
@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_kernels_give_the_reference_outputs_and_gradients(seq, rate):
    q, k, v, w = _qkv(2, seq, 2, 16, seed=seq)
    lengths = jnp.array([seq, seq // 2 + 3], jnp.int32)  # right padding in the second example
    seeds = dropout.kernel_seeds(jax.random.key(7), 3, 2)
    ref = lambda q, k, v: flash.reference(q, k, v, lengths, seeds, rate)
    kernel = lambda q, k, v: flash.attention(q, k, v, lengths, seeds, rate, interpret=True)
    assert _max_diff(ref(q, k, v), kernel(q, k, v)) < 1e-5
    assert _max_diff(_grads(ref, q, k, v, w), _grads(kernel, q, k, v, w)) < 1e-5


@pytest.mark.parametrize("seq", [32, 48], ids=["one_block", "blocked"])
def test_packed_kernels_add_the_bias_and_give_its_gradient(seq):
    """The packed kernels add each part's bias as they read it and give back the gradients of
    the packed input and of the bias (its rows summed)."""
    q, k, v, w = _qkv(2, seq, 2, 16, seed=seq + 1)
    qkv = jnp.stack([q, k, v], axis=2)
    bias = jax.random.normal(jax.random.key(9), (3, 2, 16))
    lengths = jnp.array([seq - 5, seq], jnp.int32)
    seeds = dropout.kernel_seeds(jax.random.key(8), 1, 2)

    def ref(qkv, bias):
        q, k, v = jnp.moveaxis(qkv + bias, 2, 0)
        return flash.reference(q, k, v, lengths, seeds, 0.1)

    def kernel(qkv, bias):
        return flash.attention_packed(qkv, lengths, seeds, 0.1, interpret=True, bias=bias)

    loss = lambda fn: jax.grad(lambda a, b: jnp.sum(fn(a, b) * w), (0, 1))(qkv, bias)
    assert _max_diff(ref(qkv, bias), kernel(qkv, bias)) < 1e-5
    got, want = loss(kernel), loss(ref)
    assert _max_diff(got[0], want[0]) < 1e-5 and _max_diff(got[1], want[1]) < 1e-4
    assert float(jnp.abs(want[1]).max()) > 0.1  # the bias gradient is compared, not ~zero


def test_reference_without_dropout_is_the_explicit_attention():
    q, k, v, _ = _qkv(2, 16, 3, 8)
    mask = jnp.ones((2, 16), jnp.int32).at[1, 9:].set(0)
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5 + bias, axis=-1)
    explicit = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    got = flash.reference(q, k, v, jnp.sum(mask, -1), dropout.kernel_seeds(jnp.zeros(2), 0, 2), 0)
    assert _max_diff(explicit, got) < 1e-6


def test_masks_keep_the_rate_independently_and_differ_by_example_head_site_and_key():
    rate = 0.1
    seeds = dropout.kernel_seeds(jax.random.key(3), 5, 4)
    keep = np.asarray(flash.keep_masks(seeds, 4, 128, 128, rate))
    assert abs(keep.mean() - (1 - rate)) < 0.004  # 262,144 decisions: 6 standard deviations
    # neighbours along either axis: P(both kept) is the product of the marginals
    for a, b in ((keep[..., 1:], keep[..., :-1]), (keep[..., 1:, :], keep[..., :-1, :])):
        assert abs((a & b).mean() - keep.mean() ** 2) < 0.004
    flat = keep.reshape(4, 4, -1)
    assert not (flat[0] == flat[1]).all() and not (flat[0, 0] == flat[0, 1]).all()
    other_site = np.asarray(flash.keep_masks(dropout.kernel_seeds(jax.random.key(3), 6, 4), 4,
                                             128, 128, rate))  # fmt: skip
    other_key = np.asarray(flash.keep_masks(dropout.kernel_seeds(jax.random.key(4), 5, 4), 4,
                                            128, 128, rate))  # fmt: skip
    assert 0.15 < (keep != other_site).mean() < 0.2 and 0.15 < (keep != other_key).mean() < 0.2


def test_seeds_of_an_example_do_not_depend_on_the_batch_it_is_in():
    # each example's seeds come from its index: a batch-sharded array holds its own examples'
    key = jax.random.key(11)
    assert (dropout.kernel_seeds(key, 2, 8)[:4] == dropout.kernel_seeds(key, 2, 4)).all()
    assert (dropout.kernel_seeds(key, 2, 8) == dropout.kernel_seeds(jax.random.key_data(key), 2,
                                                                    8)).all()  # fmt: skip


def test_a_jax_without_pallas_triton_keeps_the_explicit_path_on_a_gpu(monkeypatch):
    """Pallas's Triton backend is deprecated as of jax 0.11: where jax has none, a GPU step
    falls back to the explicit attention and a direct call says what to use instead."""
    from jaxft.models import attention

    monkeypatch.setattr(flash, "plt", None)
    monkeypatch.setattr(backend, "on_gpu", lambda: True)
    assert not flash.supports(128, 64)
    assert attention.attention_kernel("flash", jnp.bfloat16, 64, True, flash_seq=128) is None
    q = jnp.zeros((1, 32, 2, 16), jnp.bfloat16)
    with pytest.raises(ValueError, match="no Pallas Triton backend.*cudnn_dropout"):
        flash.attention(q, q, q, jnp.array([32]), jnp.zeros((1, 2), jnp.int32), 0.1)
    monkeypatch.setattr(backend, "on_gpu", lambda: False)  # interpreted: still there
    assert flash.supports(128, 64)


def test_kernel_refuses_a_length_triton_cannot_block():
    q = jnp.ones((1, 40, 2, 16))
    with pytest.raises(ValueError, match="multiple of 16"):
        flash.attention(q, q, q, jnp.array([40]), jnp.zeros((1, 2), jnp.int32), 0.1)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\); got 1.0"):
        flash.attention(q[:, :32], q[:, :32], q[:, :32], jnp.array([32]), None, 1.0)
    assert flash.blocks(128) == (64, 128) and flash.blocks(256) == flash.blocks(384) == (64, 64)
    assert flash.blocks(48) == (16, 16) and flash.blocks(40) is None


CONFIG = bert.BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.1,
)


def _bert(config, seed, padded_row, length):
    """(bf16 model, ids, mask with row `padded_row` cut to `length`, initialized params)."""
    model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2), dtype=jnp.bfloat16)
    ids = jnp.asarray(np.random.default_rng(seed).integers(3, 100, (2, 16)), jnp.int32)
    mask = jnp.ones_like(ids).at[padded_row, length:].set(0)
    return model, ids, mask, model.init(jax.random.key(0), ids, attention_mask=mask)["params"]


def _packed_reference(qkv, lengths, seeds, rate, scale, bias=None):
    """`flash.attention_packed` as `flash.reference` computes it, the bias added as `Dense`
    adds it."""
    if bias is not None:
        qkv = qkv + bias.astype(qkv.dtype)
    q, k, v = jnp.moveaxis(qkv, 2, 0)
    return flash.reference(q, k, v, lengths, seeds, rate, scale)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_bert_attention_runs_in_the_kernel_with_each_layers_seeds(monkeypatch, scan_layers):
    """On a GPU (elsewhere traced as for one, the kernels interpreted), attention="flash" runs
    every layer's attention dropout in the kernel, from seeds that differ by layer; the same
    model with the kernel swapped for `flash.reference` (the same masks written out) gives the
    same loss and gradients. Scanned layers (one traced body) draw their seeds from the key
    each trip gets."""
    config = dataclasses.replace(CONFIG, attention="flash", scan_layers=scan_layers)
    model, ids, mask, params = _bert(config, 0, 1, 11)
    if not ON_GPU:  # after init: no dropout there, so "auto", cuDNN
        monkeypatch.setattr(backend, "on_gpu", lambda: True)
    sites = bert.layer_dropout_sites(config, jnp.bfloat16, params, (2, 16, 32), False)
    assert isinstance(sites[0][1], dropout.SeedSite) and sites[0][1] == (2,)

    calls = []

    def loss(p, attend):
        monkeypatch.setattr(flash, "attention_packed", attend)
        out = model.apply({"params": p}, ids, attention_mask=mask, deterministic=False,
                          rngs={"dropout": jax.random.key(5)})  # fmt: skip
        return jnp.sum(out.logits.astype(jnp.float32))

    kernel = flash.attention_packed

    def interpreted(qkv, lengths, seeds, rate, scale, bias):
        calls.append(seeds)
        return kernel(qkv, lengths, seeds, rate, scale, interpret=not ON_GPU, bias=bias)

    got = jax.value_and_grad(loss)(params, interpreted)
    want = jax.value_and_grad(loss)(params, _packed_reference)

    if not scan_layers:  # a layer, its own seeds
        assert len(calls) == 2 and not (calls[0] == calls[1]).all()
    assert abs(float(got[0]) - float(want[0])) < 1e-2
    # bf16 compute, the kernels' float32 softmax
    assert _relative(got[1], want[1]) < 2e-2 and _max_diff(got[1], want[1]) < 5e-2


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_bert_packs_queries_keys_and_values_from_one_matmul(monkeypatch, strategy):
    """With the flash kernel, the query, key and value projections run as one matmul of their
    kernels side by side (LoRA branches, with their dropout, added to their parts): the same
    loss and gradients, every projection's leaves included, as the three Dense layers stacked."""
    from jaxft import peft

    config = dataclasses.replace(CONFIG, attention="flash", lora_dropout=0.1)
    model, ids, mask, params = _bert(config, 1, 0, 9)
    if strategy == "lora":
        cfg = peft.defaults()
        cfg.name, cfg.lora.targets = "lora", ("attention/query$", "attention/value$")
        params, _ = peft.apply(params, cfg, jax.random.key(1))
    # biases and LoRA's B start at zero: each leaf its own noise, so that no part can stand in
    # for another
    leaves, tree = jax.tree_util.tree_flatten(params)
    noise = lambda i, x: x + 0.05 * jax.random.normal(jax.random.key(i), x.shape, x.dtype)
    params = tree.unflatten([noise(i, x) for i, x in enumerate(leaves)])
    monkeypatch.setattr(backend, "on_gpu", lambda: True)
    monkeypatch.setattr(flash, "attention_packed", _packed_reference)
    packs = []

    def loss(p, packed):
        monkeypatch.setattr(bert.SelfAttention, "_packed_projections", packed)
        out = model.apply({"params": p}, ids, attention_mask=mask, deterministic=False,
                          rngs={"dropout": jax.random.key(7)})  # fmt: skip
        return jnp.sum(out.logits.astype(jnp.float32))

    fused = bert.SelfAttention._packed_projections

    def counted(self, *args):
        packs.append(fused(self, *args))
        return packs[-1]

    got = jax.value_and_grad(loss)(params, counted)
    want = jax.value_and_grad(loss)(params, lambda *_: None)  # the Dense layers, stacked
    assert len(packs) == 2 and all(pack is not None for pack in packs)
    assert abs(float(got[0]) - float(want[0])) < 1e-2
    assert _relative(got[1], want[1]) < 1e-2 and _max_diff(got[1], want[1]) < 2e-2
    if strategy == "lora":  # the branches' gradients are compared, not zero
        grad_b = got[1]["encoder"]["layer_0"]["attention"]["value"]["lora_b"]
        assert float(jnp.abs(grad_b).max()) > 0


@pytest.mark.skipif(not ON_GPU, reason="the Triton kernels need an NVIDIA GPU")
@pytest.mark.parametrize("seq", [128, 384], ids=["one_block", "loop"])
def test_triton_kernels_match_the_reference_in_bf16(seq):
    q, k, v, w = _qkv(4, seq, 4, 64, jnp.bfloat16)
    lengths = jnp.array([seq, seq - 37, 1, seq // 2], jnp.int32)
    seeds = dropout.kernel_seeds(jax.random.key(1), 0, 4)
    bias = 0.5 * jax.random.normal(jax.random.key(2), (3, 4, 64))  # added in the kernels

    def ref(q, k, v):  # the bias added in bf16, as Dense adds it, then float32 throughout
        biased = (x + b for x, b in zip((q, k, v), bias.astype(jnp.bfloat16), strict=True))
        return flash.reference(*(x.astype(jnp.float32) for x in biased), lengths, seeds, 0.1)

    kernel = jax.jit(
        lambda q, k, v: flash.attention_packed(
            jnp.stack([q, k, v], axis=2), lengths, seeds, 0.1, bias=bias
        )
    )
    assert _max_diff(ref(q, k, v), kernel(q, k, v)) < 3e-2
    got, want = _grads(kernel, q, k, v, w), _grads(ref, q, k, v, w)
    # bf16 blocks against float32: interpreted, 0.011 at most (a missing bias is 0.5 off)
    assert max(_relative(g, r) for g, r in zip(got, want, strict=True)) < 2e-2


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxft.models import dropout, flash
keys = jax.random.split(jax.random.key(0), 4)
q, k, v, w = (jax.random.normal(x, (4, 32, 2, 16)) for x in keys)
lengths = jnp.array([32, 20, 9, 32], jnp.int32)
def loss(q, k, v, lengths, rng):
    seeds = dropout.kernel_seeds(rng, 1, q.shape[0])
    return jnp.sum(flash.attention(q, k, v, lengths, seeds, 0.1, interpret=True) * w)
grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
want = grad(q, k, v, lengths, jax.random.key(3))
split = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
got = grad(*[jax.device_put(x, split) for x in (q, k, v, lengths)], jax.random.key(3))
assert len(jax.devices()) == 2 and got[1][0].sharding.spec == P("data")
assert abs(float(got[0]) - float(want[0])) < 1e-4 * abs(float(want[0]))
for g, r in zip(got[1], want[1], strict=True):
    assert float(jnp.max(jnp.abs(g - r))) < 1e-5
print("ok")
"""


def test_a_batch_split_over_devices_draws_the_whole_batchs_masks():
    """A batch split over two devices (the kernels interpreted, as on any CPU) gives the
    outputs and gradients of one device running the whole batch, batch-split: each example's
    seeds travel with it. That the compiled kernels run per device, not gathered, is checked by
    compiling for two GPUs (`benchmarks/results/gpu_hlo/xla_0.11.2/eleventh_session.md`)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
