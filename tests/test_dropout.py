"""jaxft's dropout: masks drawn 16 bits per element, four elements per threefry hash, and a
block's masks from one hash, must still drop each element independently at its site's rate,
and be a pure function of the key."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft.models import backend, bert, heads, layers, t5
from jaxft.models import dropout as dropout_lib

RATE = 0.1


def _sigmas(observed, expected_p, n):
    """How many standard errors a frequency is from the probability it estimates."""
    return abs(observed - expected_p) / np.sqrt(expected_p * (1 - expected_p) / n)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_each_element_is_kept_at_the_rate_and_independently_of_its_neighbours(impl):
    key = jax.random.key(3, impl=impl)
    keep = np.asarray(jax.jit(dropout_lib.keep_mask, static_argnums=(1, 2))(key, RATE, (256, 4096)))
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
    a = dropout_lib.keep_mask(jax.random.key(0), 0.5, shape)
    assert a.shape == shape
    np.testing.assert_array_equal(a, dropout_lib.keep_mask(jax.random.key(0), 0.5, shape))
    np.testing.assert_array_equal(a, dropout_lib.keep_mask(jax.random.PRNGKey(0), 0.5, shape))
    assert not np.array_equal(a, dropout_lib.keep_mask(jax.random.key(1), 0.5, shape))


def test_dropout_keeps_the_expectation_and_its_gradient_is_the_mask():
    x = jnp.full((512, 1024), 2.0)
    key = jax.random.key(7)
    out, vjp = jax.vjp(lambda t: dropout_lib.dropout(t, RATE, key), x)
    keep = np.asarray(dropout_lib.keep_mask(key, RATE, x.shape))
    scale = 1 / (1 - round(RATE * 65536) / 65536)
    np.testing.assert_allclose(np.asarray(out), np.where(keep, 2.0 * scale, 0.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vjp(jnp.ones_like(x))[0]), np.where(keep, scale, 0.0))
    assert abs(float(out.mean()) / 2.0 - 1.0) < 5 * np.sqrt(RATE / (1 - RATE) / x.size)
    # bf16 activations stay bf16
    assert dropout_lib.dropout(x.astype(jnp.bfloat16), RATE, key).dtype == jnp.bfloat16


def test_bf16_activations_are_scaled_in_float32_and_rounded_once():
    # The scale rounded to bf16 first (1.109375 for 1/0.9) shrank every kept bf16 activation by
    # 0.16%; scaled in float32 and rounded per element, the kept values keep their expectation.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.5, 4.0, (256, 512)), jnp.bfloat16)
    keep = jnp.ones(x.shape, bool)
    out = dropout_lib.apply_mask(x, RATE, keep)
    assert out.dtype == jnp.bfloat16
    exact = np.asarray(x, np.float32) * dropout_lib.keep_scale(RATE)
    ratio = float(np.asarray(out, np.float32).sum() / exact.sum())
    assert abs(ratio - 1.0) < 2e-4, ratio
    # each element is the float32 product rounded once
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.asarray(exact, jnp.bfloat16)))


def test_runtime_offsets_past_int32_fall_back_to_static_slices():
    # A row of 2^31 mask elements or more cannot be cut at int32 offsets; the bank then cuts
    # at static ones (the same masks) instead of overflowing.
    shapes = [(1, 2**31), (1, 8)]
    masks = jax.eval_shape(
        lambda key: dropout_lib.keep_masks(key, (RATE, RATE), shapes, "runtime"),
        jax.random.key(0),
    )
    assert [m.shape for m in masks] == shapes and all(m.dtype == jnp.bool_ for m in masks)


def test_rates_zero_and_one_and_deterministic_mode():
    x = jnp.arange(12.0).reshape(3, 4)
    key = jax.random.key(0)
    np.testing.assert_array_equal(dropout_lib.dropout(x, 0.0, key), x)
    np.testing.assert_array_equal(dropout_lib.dropout(x, 1.0, key), jnp.zeros_like(x))
    module = dropout_lib.Dropout(0.5)
    np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
    dropped = module.apply({}, x, deterministic=False, rngs={"dropout": key})
    assert set(np.unique(np.asarray(dropped) / np.maximum(np.asarray(x), 1))) <= {0.0, 2.0}


def test_without_jaxs_exported_threefry_hash_masks_come_from_random_bits(monkeypatch):
    hashed = np.asarray(dropout_lib.keep_mask(jax.random.key(5), RATE, (64, 4096)))
    monkeypatch.setattr(dropout_lib, "threefry2x32_p", None)
    keep = np.asarray(dropout_lib.keep_mask(jax.random.key(5), RATE, (64, 4096)))
    assert _sigmas(keep.mean(), 1 - RATE, keep.size) < 5
    # and with it, threefry keys do take the hash path: the masks are not the fallback's
    assert not np.array_equal(hashed, keep)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_the_masks_are_kept_as_one_bool_array_behind_an_optimization_barrier(impl):
    # The barrier stops XLA from fusing the hash into every reader of the masks (forward and
    # backward), and its operand must be the bool bank itself, not the hash words: XLA's GPU
    # Triton fusions take a bool operand into the LayerNorm after the dropout, not the integer
    # compare that would turn words into a mask (gpu_hlo.py: 12-18% fewer bytes per step).
    key = jax.random.key(0, impl=impl)
    shapes = [(4, 6, 10), (4, 3, 5, 5), (4, 7)]
    jaxpr = jax.make_jaxpr(lambda k: dropout_lib.keep_masks(k, (RATE,) * 3, shapes))(key).jaxpr
    barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert len(barriers) == 1
    operand, *offsets = barriers[0].invars  # and each site's offset in the bank
    assert len(offsets) == 3 and all(o.aval.shape == () for o in offsets)
    # each row: 60 elements in 15 words, 75 in 19 (one padded), 7 in 2
    assert operand.aval.dtype == jnp.bool_ and operand.aval.shape == (4, 4 * (15 + 19 + 2))
    names = [e.primitive.name for e in jaxpr.eqns]
    assert names.count("threefry2x32") + names.count("random_bits") == 1  # one hash


def test_a_blocks_masks_come_from_one_bank_at_their_own_rates_and_independently():
    shapes = [(64, 8, 128), (64, 2, 128, 128), (64, 8, 128)]
    rates = (0.1, 0.5, 0.3)
    keep = [np.asarray(m) for m in dropout_lib.keep_masks(jax.random.key(11), rates, shapes)]
    for mask, shape, rate in zip(keep, shapes, rates, strict=True):
        assert mask.shape == shape and mask.dtype == bool
        assert _sigmas(mask.mean(), 1 - rate, mask.size) < 5, rate
    both = (keep[0] & keep[2]).mean()
    assert _sigmas(both, 0.9 * 0.7, keep[0].size) < 5
    assert not np.array_equal(keep[0], keep[2])


def test_the_bank_picks_each_words_threshold_once_per_distinct_rate():
    # A model's bank holds dozens of sites at two or three rates (hidden, attention, LoRA): laid
    # out by rate, the hashing kernel compares a word's column with one boundary per rate
    # change, not per site. The masks still come back in the caller's order, at their rates.
    key = jax.random.key(3)
    rates = (0.1, 0.5, 0.1, 0.5, 0.1)
    shapes = [(64, 512 * (i + 1)) for i in range(5)]
    jaxpr = str(jax.make_jaxpr(lambda k: dropout_lib.keep_masks(k, rates, shapes))(key))
    assert len(re.findall(r"u32\[[\d,]*\] = select_n", jaxpr)) == 1  # one threshold switch
    keep = dropout_lib.keep_masks(key, rates, shapes)
    for mask, shape, rate in zip(keep, shapes, rates, strict=True):
        assert mask.shape == shape
        assert _sigmas(np.asarray(mask).mean(), 1 - rate, mask.size) < 5, rate


def test_a_banks_counters_run_per_row_so_only_a_rows_words_are_bounded():
    # (row, column) counter pairs: a whole model's bank may hold 2^32 words or more in all,
    # as long as each row holds fewer (traced only: nothing this large is allocated).
    key = jax.random.key(0)
    draw = lambda shape: jax.eval_shape(lambda k: dropout_lib.keep_mask(k, RATE, shape), key)
    assert draw((8, 2**32)).shape == (8, 2**32)  # 2^33 words
    with pytest.raises(ValueError, match="words per row"):
        draw((2, 2**34))


def test_a_rows_masks_do_not_depend_on_the_batch_size():
    # Counters run row by row over a fixed number of words per row, so a batch-sharded bank is
    # hashed shard by shard and a batch's first rows drop what a smaller batch drops.
    key = jax.random.key(2)
    small = dropout_lib.keep_masks(key, (RATE, RATE), [(2, 3, 9), (2, 4, 4)])
    large = dropout_lib.keep_masks(key, (RATE, RATE), [(5, 3, 9), (5, 4, 4)])
    for few, many in zip(small, large, strict=True):
        np.testing.assert_array_equal(few, many[:2])


class _Block(nn.Module):
    sites: tuple

    @nn.compact
    def __call__(self, deterministic):
        return dropout_lib.site_masks(self, deterministic, self.sites)


def test_site_masks_draw_only_the_sites_that_drop():
    sites = ((0.1, (4, 8)), (0.0, (4, 8)), (0.2, None), (1.0, (4, 3)), (0.5, (4, 2, 2)))
    block = _Block(sites)
    assert block.apply({}, True) == [None] * 5
    masks = block.apply({}, False, rngs={"dropout": jax.random.key(0)})
    assert masks[1] is None and masks[2] is None
    assert masks[0].shape == (4, 8) and masks[4].shape == (4, 2, 2)
    np.testing.assert_array_equal(masks[3], np.zeros((4, 3), bool))
    expected = dropout_lib.keep_masks(
        block.apply(
            {}, method=lambda m: m.make_rng("dropout"), rngs={"dropout": jax.random.key(0)}
        ),
        (0.1, 0.5),
        [(4, 8), (4, 2, 2)],
    )
    np.testing.assert_array_equal(masks[0], expected[0])
    np.testing.assert_array_equal(masks[4], expected[1])


def _hashes(fn, *args) -> int:
    return str(jax.make_jaxpr(fn)(*args)).count("threefry2x32")


def test_a_model_traced_for_a_gpu_draws_all_its_masks_from_one_hash(monkeypatch):
    # XLA's GPU compiler spends about half a second on every dropout hash it fuses, whatever its
    # size: one per site made 38 in a BERT-base train step, one per block 14 (gpu_hlo.py).
    ids = jnp.ones((2, 8), jnp.int32)
    rngs = {"dropout": jax.random.key(1)}
    config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                             num_attention_heads=2, intermediate_size=32)  # fmt: skip
    model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2))
    params = model.init(jax.random.key(0), ids)
    train = lambda p: model.apply(p, ids, deterministic=False, rngs=rngs).logits
    # on the CPU, a hash per block, the embeddings and the head (the CPU ran them faster)
    assert _hashes(train, params) == 3 + 2
    monkeypatch.setattr(backend, "on_gpu", lambda: True)
    train = lambda p: model.apply(p, ids, deterministic=False, rngs=rngs).logits  # traced anew
    assert _hashes(train, params) == 1  # the layers, the embeddings and the head
    config = t5.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                         num_decoder_layers=2, num_heads=2)  # fmt: skip
    model = t5.T5Model(config)
    params = model.init(jax.random.key(0), ids, decoder_input_ids=ids)
    train = lambda p: (
        model.apply(p, ids, decoder_input_ids=ids, deterministic=False, rngs=rngs).logits
    )
    # a stack's blocks and its dropout on its embeddings and on its final norm's output
    assert _hashes(train, params) == 2


def test_lora_branches_draw_their_input_masks_with_their_blocks_masks(monkeypatch):
    # Each LoRA branch drew its own input dropout mask, one hash each: 24 more in BERT-base
    # with LoRA on query and value.
    from jaxft import peft

    cfg = peft.defaults()
    cfg.name, cfg.lora.targets, cfg.lora.dropout = "lora", ("query", "value", "output"), 0.5
    ids = jnp.ones((2, 8), jnp.int32)
    rngs = {"dropout": jax.random.key(1)}
    config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                             num_attention_heads=2, intermediate_size=32,
                             **peft.model_options(cfg))  # fmt: skip
    model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2))
    params, _ = peft.apply(model.init(jax.random.key(0), ids)["params"], cfg)
    monkeypatch.setattr(backend, "on_gpu", lambda: True)  # one hash per model
    run = lambda p, det: model.apply({"params": p}, ids, deterministic=det, rngs=rngs).logits
    assert _hashes(lambda p: run(p, False), params) == 1
    # The masks reach the branches: with B non-zero the branch's output moves with its
    # dropout, and each layer's query, value and both outputs draw their own masks.
    moved = jax.tree_util.tree_map_with_path(
        lambda kp, x: x + 1.0 if "lora_b" in jax.tree_util.keystr(kp) else x, params
    )
    assert not np.allclose(run(moved, False), run(moved, True))
    keeps = {}

    def spy(self, x, deterministic=True, lora_keep=None):
        if lora_keep is not None:
            keeps["/".join(self.scope.path)] = np.asarray(lora_keep)
        return saved(self, x, deterministic, lora_keep)

    saved = layers.Dense.__call__
    layers.Dense.__call__ = spy
    try:
        run(moved, False)
    finally:
        layers.Dense.__call__ = saved
    assert len(keeps) == 3 * 4  # query, value, attention output, output; three layers
    assert {k.shape[-1] for k in keeps.values()} == {16, 32}
    flat = np.concatenate([k.ravel() for k in keeps.values()])
    assert abs(flat.mean() - 0.5) < 0.05
    firsts = [k.ravel()[:16] for k in keeps.values() if k.shape[-1] == 16]
    assert len({f.tobytes() for f in firsts}) == len(firsts)  # independent masks
    config = t5.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                         num_decoder_layers=2, num_heads=2, **peft.model_options(cfg))  # fmt: skip
    cfg.lora.targets = ("q", "k", "v", "wo")
    model = t5.T5Model(config)
    memory_ids = jnp.ones((2, 6), jnp.int32)  # cross-attention k, v read 6 memory rows
    params = model.init(jax.random.key(0), memory_ids, decoder_input_ids=ids)["params"]
    params, _ = peft.apply(params, cfg)
    train = lambda p: (
        model.apply(
            {"params": p}, memory_ids, decoder_input_ids=ids, deterministic=False, rngs=rngs
        ).logits
    )
    assert _hashes(train, params) == 2


def test_the_gpus_packed_bank_holds_the_same_masks(monkeypatch):
    # On a GPU the four lane decisions of a word are packed into its bytes so that XLA writes
    # them from the hashing kernel; the masks must be the ones the stacked lanes give.
    key = jax.random.key(4)
    rates, shapes = (RATE, 0.5), [(3, 5, 7), (3, 2, 4, 4)]
    stacked = dropout_lib.keep_masks(key, rates, shapes)
    monkeypatch.setattr(backend, "on_gpu", lambda: True)
    packed = jax.jit(lambda k: dropout_lib.keep_masks(k, rates, shapes))(key)
    for a, b in zip(stacked, packed, strict=True):
        assert b.dtype == jnp.bool_
        np.testing.assert_array_equal(a, b)
    jaxpr = str(jax.make_jaxpr(lambda k: dropout_lib.keep_masks(k, rates, shapes))(key))
    assert "bitcast_convert_type" in jaxpr and "concatenate" not in jaxpr
    # The bytes pass the barrier as bytes: bools made before it were a copy of their own.
    (barrier,) = [line for line in jaxpr.splitlines() if "optimization_barrier" in line]
    assert "u8[" in barrier and "bool[" not in barrier


def test_masks_cut_at_static_or_runtime_offsets_are_the_same():
    # Runtime offsets (the default) pass the barrier, so XLA compiles each layer's mask readers
    # once; static ones (a frozen backbone's) are folded into them. The masks are the same.
    key = jax.random.key(6)
    rates, shapes = (RATE, 0.5, RATE), [(3, 5, 7), (3, 2, 4, 4), (3, 9)]
    runtime = dropout_lib.keep_masks(key, rates, shapes)
    static = dropout_lib.keep_masks(key, rates, shapes, "static")
    for a, b in zip(runtime, static, strict=True):
        np.testing.assert_array_equal(a, b)
    barrier_operands = lambda offsets: next(
        len(e.invars)
        for e in jax.make_jaxpr(lambda k: dropout_lib.keep_masks(k, rates, shapes, offsets))(
            key
        ).jaxpr.eqns
        if e.primitive.name == "optimization_barrier"
    )
    assert barrier_operands("runtime") == 1 + 3 and barrier_operands("static") == 1
    with pytest.raises(ValueError, match="dropout offsets"):
        dropout_lib.keep_masks(key, rates, shapes, "constant")


def test_only_an_undifferentiated_backbone_cuts_its_masks_at_static_offsets():
    from jaxft import peft

    cfg = peft.defaults()
    picked = {}
    for name in ("full", "frozen", "features", "lora", "frozen+lora", "bitfit"):
        cfg.name = name
        picked[name] = peft.model_options(cfg)["dropout_offsets"]
    assert picked == {"full": "runtime", "frozen": "static", "features": "static",
                      "lora": "runtime", "frozen+lora": "runtime", "bitfit": "runtime"}  # fmt: skip
