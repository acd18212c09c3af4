"""Dropout: keep masks drawn 16 random bits per element, four elements per threefry hash.

A transformer drops activations at many sites (each block's attention probabilities, attention
output, feed-forward output, T5's feed-forward inner activation, LoRA branch inputs; the
embeddings and the head). Traced for a GPU, a model draws all its masks from one key and one
hash over a bank of words (`grouped_site_masks`; a T5 stack, or a scanned layer, its own), then
cuts the bank into each site's mask; elsewhere each block draws its own. XLA's GPU compiler
spends about half a second on every hash it fuses (priority fusion and code generation of ~115
dependent integer ops, however large the mask): a hash per site made 38 of them in a BERT-base
train step, a hash per block 14; one per model compiles the step for an H100 in 14.5-16.0 s
instead of 19.3-21.6 (`benchmarks/gpu_hlo.py --phases`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxft.models import backend

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


def _word_pairs(key, words) -> tuple[jax.Array, jax.Array]:
    """Two uint32 [rows, columns] arrays of random bits: with a threefry key, the two outputs
    of one threefry2x32 hash of each word's (row, column) counter pair; with another key (rbg),
    `jax.random.bits`. A counter per axis from its own iota, so a batch-sharded bank is hashed
    shard by shard and a row holds up to 2^32 - 1 words (a whole model's masks, one bank).

    `jax.random.bits` with a threefry key hashes once per element and keeps 32 of the 64 bits:
    on 2 CPU cores, dropout masks drawn that way took a fifth of a MiniLM train step."""
    if words[1] >= 2**32:
        raise ValueError(f"a dropout mask bank of {words[1]} words per row: at most 2^32 - 1")
    if threefry2x32_p is not None and str(jax.random.key_impl(key)) == "threefry2x32":
        k1, k2 = jax.random.key_data(key)
        row, column = (jax.lax.broadcasted_iota(jnp.uint32, words, axis) for axis in (0, 1))
        w1, w2 = threefry2x32_p.bind(k1, k2, row, column)
    else:
        w1, w2 = jax.random.bits(key, (2,) + words, jnp.uint32)
    return w1, w2


def mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (Wellons' lowbias32) of int32 values, multiplications wrapping:
    cheap integer arithmetic that a Pallas kernel computes per element too."""
    x = x ^ jax.lax.shift_right_logical(x, 16)
    x = x * jnp.int32(0x7FEB352D)
    x = x ^ jax.lax.shift_right_logical(x, 15)
    x = x * jnp.int32(0x846CA68B - (1 << 32))
    return x ^ jax.lax.shift_right_logical(x, 16)


class SeedSite(tuple):
    """A dropout site whose kernel draws its own decisions (`flash.attention`): in a site
    list its "shape" is SeedSite((batch,)), and `site_masks` gives it `kernel_seeds`."""


def kernel_seeds(key: jax.Array, site: int, batch: int) -> jax.Array:
    """int32 [batch, 2]: two seed words per example for dropout site `site`, mixed from the
    first two words of a dropout key and the example's index. The index is an iota, so a
    batch-sharded array holds its own examples' seeds; the mixing is integer arithmetic, not a
    threefry hash, which XLA's GPU compiler would spend half a second on per site."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = jax.lax.bitcast_convert_type(key.reshape(-1)[:2], jnp.int32)
    site_word = jnp.int32(2 * site + 1) * jnp.int32(0x632BE5AB)  # wraps
    s0 = mix32(words[0] ^ mix32(jax.lax.iota(jnp.int32, batch) * 2 + site_word))
    return jnp.stack([s0, mix32(words[1] ^ s0)], axis=-1)


# How a mask is cut from its bank: at a runtime offset (XLA cannot fold it), or a static one.
DROPOUT_OFFSETS = ("runtime", "static")


def keep_masks(key: jax.Array, rates, shapes, offsets: str = "runtime") -> tuple[jax.Array, ...]:
    """bool masks of `shapes`, each element True with probability 1 - its site's rate (rounded
    to a multiple of 2^-16), all independent, from one hash of a threefry key (typed or raw
    uint32[2]) or an rbg key.

    The masks share their leading (batch) axis where they all have one of the same length, and
    the bank of hash words is [batch, words per row]: each site takes ceil(n_i / 4) words of
    every row (n_i its elements per row), so a batch-sharded bank is hashed shard by shard. The
    sites lie in the bank grouped by rate, so the hashing kernel picks each word's threshold
    with one compare per distinct rate, not per site (a whole model's masks are one bank).
    Each element is decided by 16 random bits, four elements by each pair of 32-bit words.
    """
    if offsets not in DROPOUT_OFFSETS:
        raise ValueError(f"unknown dropout offsets {offsets!r}; choose from {DROPOUT_OFFSETS}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a raw uint32[2] key is a threefry key
    shapes = [tuple(s) for s in shapes]
    if not shapes:
        raise ValueError("keep_masks needs at least one mask shape (none were given)")
    if len(rates) != len(shapes):
        raise ValueError(f"{len(rates)} dropout rates for {len(shapes)} mask shapes: one each")
    batched = all(len(s) > 1 and s[0] == shapes[0][0] for s in shapes)
    rows = shapes[0][0] if batched else 1
    thresholds = [drop_threshold(r) for r in rates]
    order = sorted(range(len(shapes)), key=lambda i: thresholds[i])  # stable: ties keep order
    sizes = [int(np.prod(shapes[i][1:] if batched else shapes[i], dtype=np.int64)) for i in order]
    starts = np.cumsum([0] + [-(-n // 4) for n in sizes])  # in words, in bank order
    words_per_row = int(starts[-1])
    w1, w2 = _word_pairs(key, (rows, words_per_row))
    threshold = jnp.uint32(thresholds[order[-1]])
    column = None
    for k in range(len(order) - 2, -1, -1):  # where the rate changes, from the bank's end
        below = thresholds[order[k]]
        if below != thresholds[order[k + 1]]:
            if column is None:
                column = jax.lax.broadcasted_iota(jnp.uint32, w1.shape, 1)
            threshold = jnp.where(column < int(starts[k + 1]), jnp.uint32(below), threshold)
    kept = [lane >= threshold for lane in (w1 & 0xFFFF, w1 >> 16, w2 & 0xFFFF, w2 >> 16)]
    if backend.on_gpu():
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
    # With runtime `offsets`, each site's offset in the bank passes the barrier too, as a
    # number XLA cannot fold: with static ones, every layer's reader of its mask (a Triton
    # fusion of dropout, residual and LayerNorm, or of the attention softmax) was a kernel of
    # its own, where the layers of a per-block bank shared one: 40 more Triton kernels
    # compiled, 4-5 s more for BERT-base on an H100 (gpu_hlo.py --phases). With runtime
    # offsets XLA copies the masks its Triton fusions read out of the bank in one kernel (2% more
    # bytes in a BERT-base full step, 4% T5-base) and the layers' readers are one kernel again.
    # A frozen backbone, whose forward pass is the whole step, takes static ones (14% fewer
    # bytes, the compile about 6 s longer); `peft.model_options` picks them.
    starts = [4 * int(start) for start in starts[:-1]]  # in elements
    if offsets == "runtime" and 4 * int(words_per_row) >= 2**31:
        # int32 offsets (JAX without x64) cannot reach that far into a row; static slices
        # can, and cut the same masks.
        offsets = "static"
    if offsets == "runtime":
        bank, at = jax.lax.optimization_barrier((bank, [jnp.int32(s) for s in starts]))
        cut = lambda k, n: jax.lax.dynamic_slice_in_dim(bank, at[k], n, axis=1)
    else:
        bank = jax.lax.optimization_barrier(bank)
        cut = lambda k, n: bank[:, starts[k] : starts[k] + n]
    masks = [None] * len(shapes)
    for k, (i, n) in enumerate(zip(order, sizes, strict=True)):
        keep = cut(k, n)
        masks[i] = (keep if keep.dtype == jnp.bool_ else keep != 0).reshape(shapes[i])
    return tuple(masks)


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
    # Scaled in float32 and rounded once per element, as PyTorch's dropout does: the scale
    # itself rounded to bf16 (1.109375 for 1/0.9) shrank every kept bf16 activation by 0.16%.
    scaled = (x.astype(jnp.float32) * keep_scale(rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros((), x.dtype))


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """x with elements zeroed at `rate` and the kept ones scaled so the expectation is x."""
    if rate >= 1.0:
        return jnp.zeros_like(x)
    return apply_mask(x, rate, keep_mask(key, rate, x.shape) if rate > 0.0 else None)


def site_masks(
    module: nn.Module, deterministic: bool, sites, offsets: str = "runtime"
) -> list[jax.Array | None]:
    """Keep masks for a block's dropout `sites`, (rate, shape) pairs, from one key of the
    module's "dropout" rng stream and one hash: None for a site that drops nothing (in
    deterministic mode, at rate 0, or with shape None: a site whose dropout cuDNN's kernel
    does itself), all-False at rate 1; for a `SeedSite` its `kernel_seeds`, from the same key.
    Apply each mask with `apply_mask`."""
    masks = [None] * len(sites)
    if deterministic:
        return masks
    seeded = [i for i, (_, shape) in enumerate(sites) if isinstance(shape, SeedSite)]
    masked = [
        (i, rate, shape)
        for i, (rate, shape) in enumerate(sites)
        if shape is not None and not isinstance(shape, SeedSite)
    ]
    drawn = [i for i, rate, _ in masked if 0 < rate < 1]
    for i, rate, shape in masked:
        if rate >= 1:
            masks[i] = jnp.zeros(shape, bool)
    if drawn or seeded:
        rng = module.make_rng("dropout")
        for i in seeded:
            masks[i] = kernel_seeds(rng, i, sites[i][1][0])
    if drawn:
        rates, shapes = [sites[i][0] for i in drawn], [sites[i][1] for i in drawn]
        picked = keep_masks(rng, rates, shapes, offsets)
        for i, keep in zip(drawn, picked, strict=True):
            masks[i] = keep
    return masks


def grouped_site_masks(
    module: nn.Module, deterministic: bool, groups, offsets: str = "runtime"
) -> list[list]:
    """`site_masks` for several groups of sites (a model's blocks), all from one hash when
    traced for a GPU: the masks of each group, as a list per group.

    Elsewhere each group draws from its own hash and cuts its bank at static offsets: on the
    CPU that ran the frozen MiniLM step 3-6% and the T5 step 5% faster than one bank (each
    block's masks are hashed next to their readers; `benchmarks/alternate.py --variants
    default,block_masks` before this switch), and the one bank saves GPU compile time only."""
    if not backend.on_gpu():
        return [site_masks(module, deterministic, group, "static") for group in groups]
    sites = [site for group in groups for site in group]
    flat = site_masks(module, deterministic, sites, offsets)
    ends = np.cumsum([len(group) for group in groups])
    return [flat[end - len(group) : end] for group, end in zip(groups, ends, strict=True)]


class Dropout(nn.Module):
    """`nn.Dropout`'s interface over `dropout`: masks from the "dropout" rng stream, four
    elements per threefry hash. For one site; a block with several draws their masks together
    (`site_masks`)."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        (keep,) = site_masks(self, deterministic, [(self.rate, x.shape)])
        return apply_mask(x, self.rate, keep)
