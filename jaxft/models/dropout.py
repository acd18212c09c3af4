"""Dropout: keep masks drawn 16 random bits per element from one threefry hash per block.

A transformer block drops activations at several sites (attention probabilities, the attention
output, the feed-forward output, T5's feed-forward inner activation). `site_masks` draws all of
a block's masks from one key and one hash over a bank of words, then slices the bank into each
site's mask. XLA's GPU compiler spends about 0.2 s on every hash it fuses (priority fusion and
code generation of ~115 dependent integer ops, however large the mask): a hash per site made 38
of them in a BERT-base train step, 40% of its compile time, where one per block makes 14
(`benchmarks/gpu_hlo.py --phases`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

try:  # the threefry hash itself, for dropout's words; jax.random.bits where it is not exported
    from jax.extend.random import threefry2x32_p
except ImportError:  # pragma: no cover
    threefry2x32_p = None

# Dropout decides each element with 16 random bits: a drop rate is rounded to a multiple of 2^-16.
_DROP_LEVELS = 1 << 16


def drop_threshold(rate: float) -> int:
    """16-bit values below this are dropped: round(rate·2^16), at most 2^16 - 1."""
    return min(round(rate * _DROP_LEVELS), _DROP_LEVELS - 1)


def keep_scale(rate: float) -> float:
    """1 / P(keep), exactly, for the rounded rate: what kept elements are multiplied by."""
    return _DROP_LEVELS / (_DROP_LEVELS - drop_threshold(rate))


def _position_counters(shape) -> jax.Array:
    """uint32 [shape]: each position's row-major index, summed from per-axis iotas (no flat
    iota to reshape), so a sharded array's counters are computed shard by shard."""
    if np.prod(shape, dtype=np.int64) >= 2**32:
        raise ValueError(f"a dropout mask bank of shape {shape} has 2^32 or more hash words")
    strides = np.cumprod((tuple(shape[1:]) + (1,))[::-1])[::-1]
    return sum(
        jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        for axis, stride in enumerate(strides)
    )


def _word_pairs(key, words) -> tuple[jax.Array, jax.Array]:
    """Two uint32 [words] arrays of random bits: with a threefry key, the two outputs of one
    threefry2x32 hash of each position's counter; with another key (rbg), `jax.random.bits`.

    `jax.random.bits` with a threefry key hashes once per element and keeps 32 of the 64 bits:
    on 2 CPU cores, dropout masks drawn that way took a fifth of a MiniLM train step."""
    if threefry2x32_p is not None and str(jax.random.key_impl(key)) == "threefry2x32":
        k1, k2 = jax.random.key_data(key)
        counters = _position_counters(words)
        w1, w2 = threefry2x32_p.bind(k1, k2, jnp.zeros_like(counters), counters)
    else:
        w1, w2 = jax.random.bits(key, (2,) + words, jnp.uint32)
    return w1, w2


def _traced_for_gpu() -> bool:
    from jaxft.models import layers  # which imports this module

    return layers.on_gpu()


def keep_masks(key: jax.Array, rates, shapes) -> tuple[jax.Array, ...]:
    """bool masks of `shapes`, each element True with probability 1 - its site's rate (rounded
    to a multiple of 2^-16), all independent, from one hash of a threefry key (typed or raw
    uint32[2]) or an rbg key.

    The masks share their leading (batch) axis where they all have one of the same length, and
    the bank of hash words is [batch, words per row]: site i takes the next ceil(n_i / 4) words
    of every row (n_i its elements per row), so a batch-sharded bank is hashed shard by shard.
    Each element is decided by 16 random bits, four elements by each pair of 32-bit words.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a raw uint32[2] key is a threefry key
    shapes = [tuple(s) for s in shapes]
    if len(rates) != len(shapes) or not shapes:
        raise ValueError(f"{len(rates)} dropout rates for {len(shapes)} mask shapes")
    batched = all(len(s) > 1 and s[0] == shapes[0][0] for s in shapes)
    rows = shapes[0][0] if batched else 1
    sizes = [int(np.prod(s[1:] if batched else s, dtype=np.int64)) for s in shapes]
    starts = np.cumsum([0] + [-(-n // 4) for n in sizes])  # in words
    w1, w2 = _word_pairs(key, (rows, int(starts[-1])))
    threshold = jnp.uint32(drop_threshold(rates[-1]))
    if len(set(drop_threshold(r) for r in rates)) > 1:  # per site, by word column
        column = jax.lax.broadcasted_iota(jnp.int32, w1.shape, 1)
        for start, rate in zip(starts[-2:0:-1], rates[-2::-1], strict=True):
            threshold = jnp.where(column < int(start), jnp.uint32(drop_threshold(rate)), threshold)
    kept = [lane >= threshold for lane in (w1 & 0xFFFF, w1 >> 16, w2 & 0xFFFF, w2 >> 16)]
    if _traced_for_gpu():
        # XLA's GPU compiler will not fuse the hash into a kernel that writes each word's four
        # decisions as four elements (every element would hash its word again), so the words
        # went out to memory and back, 2 bytes per element more than the mask. The decisions
        # packed into the four bytes of one word (the same masks: little-endian byte order)
        # are written by the hashing kernel itself: 0.6 GB less per BERT-base full step, 0.6 GB
        # (11%) frozen, 5.6 GB T5-base (gpu_hlo.py). On the CPU that ran 4% slower: stacked.
        # The bytes stay bytes up to the barrier below: turned into bools before it, they were
        # copied by a kernel of their own (a byte read and a byte written per element, 0.55 GB
        # of the BERT-base full step); after it, each reader's fusion compares its own.
        packed = sum(keep.astype(jnp.uint32) << (8 * i) for i, keep in enumerate(kept))
        bank = jax.lax.bitcast_convert_type(packed, jnp.uint8).reshape(rows, -1)
    else:
        bank = jnp.stack(kept, axis=-1).reshape(rows, -1)
    # The bank (one byte per element) passes an optimization barrier, so XLA hashes once and
    # keeps the masks instead of fusing the hash into every consumer (the forward and backward
    # passes both read them). A byte per element, not the words: readers of a mask read a byte
    # per element, and XLA's GPU Triton fusions take it, so the dropout, residual add and
    # LayerNorm after it become one kernel (BERT-base and T5-base default steps compiled for an
    # H100 move 12-18% fewer bytes than with the words, benchmarks/gpu_hlo.py).
    bank = jax.lax.optimization_barrier(bank)
    slices = (
        bank[:, 4 * int(start) : 4 * int(start) + n]
        for start, n in zip(starts[:-1], sizes, strict=True)
    )
    # Bytes compared slice by slice, so each reader's fusion compares its own: compared whole,
    # the bank was written out again as bools (1.1 GB more).
    return tuple(
        (keep if keep.dtype == jnp.bool_ else keep != 0).reshape(shape)
        for keep, shape in zip(slices, shapes, strict=True)
    )


def keep_mask(key: jax.Array, rate: float, shape: tuple) -> jax.Array:
    """`keep_masks` for one mask."""
    return keep_masks(key, (rate,), (shape,))[0]


def apply_mask(x: jax.Array, rate: float, keep: jax.Array | None) -> jax.Array:
    """x with the elements `keep` drops zeroed and the kept ones scaled by 1 / P(keep); x
    itself without a mask, zeros at rate 1."""
    if keep is None or rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    return jnp.where(keep, x * jnp.asarray(keep_scale(rate), x.dtype), jnp.zeros((), x.dtype))


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """x with elements zeroed at `rate` and the kept ones scaled so the expectation is x."""
    if rate >= 1.0:
        return jnp.zeros_like(x)
    return apply_mask(x, rate, keep_mask(key, rate, x.shape) if rate > 0.0 else None)


def site_masks(module: nn.Module, deterministic: bool, sites) -> list[jax.Array | None]:
    """Keep masks for a block's dropout `sites`, (rate, shape) pairs, from one key of the
    module's "dropout" rng stream and one hash: None for a site that drops nothing (in
    deterministic mode, at rate 0, or with shape None: a site whose dropout a fused kernel
    does itself), all-False at rate 1. Apply each with `apply_mask`."""
    masks = [None] * len(sites)
    if deterministic:
        return masks
    drawn = [i for i, (rate, shape) in enumerate(sites) if shape is not None and 0 < rate < 1]
    for i, (rate, shape) in enumerate(sites):
        if shape is not None and rate >= 1:
            masks[i] = jnp.zeros(shape, bool)
    if drawn:
        rng = module.make_rng("dropout")
        picked = keep_masks(rng, [sites[i][0] for i in drawn], [sites[i][1] for i in drawn])
        for i, keep in zip(drawn, picked, strict=True):
            masks[i] = keep
    return masks


class Dropout(nn.Module):
    """`nn.Dropout`'s interface over `dropout`: masks from the "dropout" rng stream, four
    elements per threefry hash. For one site; a block with several draws their masks together
    (`site_masks`)."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        (keep,) = site_masks(self, deterministic, [(self.rate, x.shape)])
        return apply_mask(x, self.rate, keep)
