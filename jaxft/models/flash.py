"""jaxft's own fused attention with dropout: a flash-attention kernel written in Pallas (Triton
on a GPU) that draws its dropout decisions inside the kernel from per-example seeds
(`dropout.kernel_seeds`), so the attention matrix is never written out and the backward pass
redraws the same decisions.

cuDNN's flash kernel drops with Philox counters whose seed is fixed when the step compiles and
whose offset follows the executions of this process (`attention.fused_attention`); these masks
are a function of the step's dropout key, the example's index in the batch, the layer, the head
and the (query, key) position only: a resumed run draws what an uninterrupted one would, and
data-parallel devices draw different masks for their different examples.

Each element's decision hashes its (head, query, key) counter with the example's two seed words
(two rounds of a 32-bit integer mixer) and drops it when the top 16 bits fall below the rate's
16-bit threshold, the rounding `dropout.drop_threshold` gives the rest of jaxft. `reference`
is the same computation in plain jnp (the masks written out), for tests and for the CPU.

Layout: queries, keys and values packed [batch, seq, 3, heads, head_dim], as one fused projection
writes them (`attention_packed`; BERT's three projections side by side reshaped, no transposes
or slices), the output [batch, seq, heads, head_dim]; the backward pass writes the packed
gradient, which the fused projection's input gradient reads as one matmul; the projections'
biases are added as the kernels read each block. Padding as per-example key lengths (right
padding); no bias on the scores, not causal: the BERT family's attention.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

try:  # Pallas's Triton backend, deprecated as of jax 0.11: without it, no flash kernel on a GPU
    from jax.experimental.pallas import triton as plt
except ImportError:
    plt = None

from jaxft.models import backend
from jaxft.models.dropout import drop_threshold, keep_scale, mix32

_MASKED = float(np.finfo(np.float32).min)  # a masked key's logit, as attention_bias adds


def _keep(s0, s1, h, rows, cols, seq, threshold):
    """True where the element at (head h, query row, key col) of a `seq`-long self-attention
    is kept, for an example whose seed words are s0, s1."""
    counter = (h * seq + rows) * seq + cols
    bits = mix32(mix32(counter ^ s0) ^ s1)
    return jax.lax.shift_right_logical(bits, 16) >= threshold


def keep_masks(seeds, heads: int, queries: int, keys: int, rate: float) -> jax.Array:
    """bool [batch, heads, queries, keys]: the kernel's dropout decisions, written out."""
    h, i, j = (
        jax.lax.broadcasted_iota(jnp.int32, (heads, queries, keys), axis) for axis in range(3)
    )
    s0, s1 = seeds[:, 0, None, None, None], seeds[:, 1, None, None, None]
    return _keep(s0, s1, h[None], i[None], j[None], keys, drop_threshold(rate))


def reference(q, k, v, lengths, seeds, rate: float, scale: float | None = None) -> jax.Array:
    """What `attention` computes, in plain jnp: softmax(scale q·k) over each row's first
    `lengths` keys, dropped at `rate` with the kernel's masks, times v. [b, s, h, d] in and out."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    cols = jnp.arange(k.shape[1])[None, None, None, :]
    logits = jnp.where(cols < lengths[:, None, None, None], logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1)
    if rate > 0:
        keep = keep_masks(seeds, q.shape[2], q.shape[1], k.shape[1], rate)
        probs = jnp.where(keep, probs * keep_scale(rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v).astype(q.dtype)


# Sequences up to this long (a power of two) take every key in one block: the forward pass is
# one step of its loop and the backward pass one kernel per (example, head), over query blocks
# of _ONE_PASS_ROWS with 8 warps. Register counts from ptxas for an H100 (head_dim 64, the
# biases added in the kernels): the forward at 128 keys 128 registers a thread with 4 warps, the
# one-pass backward 180 with 8 (over blocks of 64 rows it spilled, 255 registers); at 256 keys
# both spilled, so longer sequences take the blocked kernels (forward 168, key and query
# gradients apart: 237 and 196 registers).
_ONE_BLOCK = 128
_ONE_PASS_ROWS = 32


def blocks(seq: int) -> tuple[int, int] | None:
    """(query block, key block) of the kernels for a sequence length, None where they take
    none: Triton's blocks are powers of two, so a length that is not a multiple of 16."""
    if seq <= _ONE_BLOCK and seq >= 16 and seq & (seq - 1) == 0:
        return min(seq, 64), seq
    for block in (64, 32, 16):
        if seq % block == 0:
            return block, block
    return None


def supports(seq: int, head_dim: int) -> bool:
    """Whether the kernel takes this sequence length and head size (on a GPU, with this jax:
    one without Pallas's Triton backend has no GPU kernel to compile)."""
    compiles = plt is not None or not backend.on_gpu()
    return compiles and _takes(seq, head_dim)


def _takes(seq: int, head_dim: int) -> bool:
    return blocks(seq) is not None and head_dim in (16, 32, 64, 128)


def attention(q, k, v, lengths, seeds, rate: float, scale=None, interpret: bool | None = None):
    """softmax(scale q·k) v over each row's first `lengths` keys, dropped at `rate` inside the
    kernel with the masks of `keep_masks(seeds, ...)`. q, k, v [batch, seq, heads, head_dim]
    (one length for queries and keys), lengths int32 [batch], seeds int32 [batch, 2]
    (`dropout.kernel_seeds`). `interpret` runs the kernels in Pallas's interpreter, on any
    backend (slow: for tests); by default wherever the step is not traced for a GPU.

    Stacks q, k and v for `attention_packed`, a copy that a caller whose one projection writes
    them packed does without."""
    qkv = jnp.stack([q, k, v], axis=2)
    return attention_packed(qkv, lengths, seeds, rate, scale, interpret)


def attention_packed(qkv, lengths, seeds, rate: float, scale=None, interpret=None, bias=None):
    """`attention` of queries, keys and values packed [batch, seq, 3, heads, head_dim]; its
    gradient comes back packed too. `bias` [3, heads, head_dim] (the projections' biases, any
    float dtype), when given, is added inside the kernels as a `Dense` adds it (rounded to
    qkv's dtype, then added), so the projection's matmul needs no kernel of its own to add it;
    its gradient is the float32 sum of the packed gradient's rows, as `layers.rows_of` gives."""
    batch, seq, parts, heads, head_dim = qkv.shape
    if parts != 3:
        raise ValueError(
            f"packed attention takes [batch, seq, 3, heads, head_dim]; got {qkv.shape}"
        )
    bias = jnp.zeros((3, heads, head_dim), jnp.float32) if bias is None else bias
    if bias.shape != (3, heads, head_dim):
        raise ValueError(f"the packed bias is [3, {heads}, {head_dim}]; got {bias.shape}")
    interpret = not backend.on_gpu() if interpret is None else interpret
    if not interpret and plt is None:
        raise ValueError(
            f"jax {jax.__version__} has no Pallas Triton backend to compile flash attention "
            "for a GPU: use attention='cudnn_dropout' or 'explicit'"
        )
    if not _takes(seq, head_dim):
        raise ValueError(
            f"flash attention takes a sequence length that is a multiple of 16 and a head size "
            f"of 16, 32, 64 or 128, not {seq} and {head_dim}: use attention='explicit'"
        )
    if not 0 <= rate < 1:
        raise ValueError(f"flash attention's dropout rate must be in [0, 1); got {rate}")
    scale = head_dim**-0.5 if scale is None else float(scale)
    meta = jnp.concatenate([seeds.astype(jnp.int32), lengths.astype(jnp.int32)[:, None]], -1)
    meta = jnp.pad(meta, ((0, 0), (0, 1)))  # [batch, 4]: seed words, length, unused
    # [batch, seq, 3 heads, head_dim]: query head h is part h, its key part h + heads, its
    # value part h + 2 heads (a reshape, no copy)
    packed = qkv.reshape(batch, seq, 3 * heads, head_dim)
    bias = bias.reshape(3 * heads, head_dim)
    return _attention(packed, bias, meta, float(rate), scale, bool(interpret))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _attention(packed, bias, meta, rate, scale, interpret):
    return _forward(packed, bias, meta, rate, scale, interpret)[0]


def _params(rate):
    return (drop_threshold(rate), keep_scale(rate)) if rate > 0 else (0, 1.0)


def _call(
    kernel, grid, in_specs, out_specs, out_shape, name, interpret, warps=4, aliases=None, **params
):
    return pl.pallas_call(
        functools.partial(kernel, **params),
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=None if interpret else plt.CompilerParams(num_warps=warps, num_stages=1),
        interpret=interpret,
        name=name,
        input_output_aliases=aliases or {},
    )


class _Specs:
    """BlockSpecs over a grid (batch, head, block) of arrays [b, s, parts, d]: the packed
    queries, keys and values (parts 3 heads) or an output and its gradient (parts = heads)."""

    def __init__(self, seq, heads, head_dim, block):
        self.seq, self.heads, self.head_dim, self.block = seq, heads, head_dim, block
        self.meta = pl.BlockSpec((None, 4), lambda b, h, i: (b, 0))
        self.stat = pl.BlockSpec((None, None, block), lambda b, h, i: (b, h, i))
        self.stat_full = pl.BlockSpec((None, None, seq), lambda b, h, i: (b, h, 0))
        # an example's whole packed gradient: each head's program writes its three parts
        self.packed = pl.BlockSpec((None, seq, 3 * heads, head_dim), lambda b, h, i: (b, 0, 0, 0))

    def inputs(self, q, k, v):
        """The kernels' leading inputs' specs, in `_operands`' order: the meta row, the
        queries', keys' and values' blocks (`rows` or `full` of parts 0, 1, 2), then head h's
        bias of each part in the [3 heads, head_dim] biases."""
        biases = [
            pl.BlockSpec((None, self.head_dim), lambda b, h, i, at=part * self.heads: (at + h, 0))
            for part in range(3)
        ]
        return [self.meta, q, k, v, *biases]

    def rows(self, part=0):
        """A block of rows of head h of `part` (0 queries or the output, 1 keys, 2 values)."""
        at = part * self.heads
        return pl.BlockSpec(
            (None, self.block, None, self.head_dim), lambda b, h, i: (b, i, at + h, 0)
        )

    def full(self, part=0):
        """All rows of head h of `part`."""
        at = part * self.heads
        return pl.BlockSpec(
            (None, self.seq, None, self.head_dim), lambda b, h, i: (b, 0, at + h, 0)
        )


# dot_general dimensions of a·bᵀ and of aᵀ·b
_NT = (((1,), (1,)), ((), ()))
_TN = (((0,), (0,)), ((), ()))


def _scores(q, k, scale, cols, length):
    """Masked float32 logits of a block: scale q·kᵀ, keys at or past `length` at _MASKED."""
    s = jax.lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32)
    return jnp.where(cols < length, s * scale, _MASKED)


def _operands(meta, packed, bias):
    """The kernels' leading inputs (`_Specs.inputs`): the packed array once per part, so each
    reads its own heads of one buffer, and the biases likewise."""
    return (meta, *(packed,) * 3, *(bias,) * 3)


def _biased(block, bias_ref):
    """A block of queries, keys or values with its head's bias added, as `Dense` adds it: the
    bias rounded to the block's dtype, the sum rounded once."""
    bias = bias_ref[...].astype(block.dtype).astype(jnp.float32)
    return (block.astype(jnp.float32) + bias[None, :]).astype(block.dtype)


def _block_keep(meta_ref, h, rows, cols, seq, threshold):
    return _keep(meta_ref[0], meta_ref[1], h, rows, cols, seq, threshold)


def _iotas(block_q, block_k):
    return tuple(jax.lax.broadcasted_iota(jnp.int32, (block_q, block_k), a) for a in (0, 1))


def _forward_kernel(
    meta_ref, q_ref, k_ref, v_ref, qb_ref, kb_ref, vb_ref, o_ref, lse_ref, *, rate, scale, seq,
    tiles,
):  # fmt: skip
    block_q, block_k = tiles
    threshold, kept = _params(rate)
    h, qi = pl.program_id(1), pl.program_id(2)
    q = _biased(q_ref[...], qb_ref)
    length = meta_ref[2]
    iota_rows, iota_cols = _iotas(block_q, block_k)
    rows = qi * block_q + iota_rows

    def step(kb, carry):
        acc, top, total = carry
        start = pl.multiple_of(kb * block_k, block_k)
        k = _biased(k_ref[pl.ds(start, block_k), :], kb_ref)
        v = _biased(v_ref[pl.ds(start, block_k), :], vb_ref)
        cols = start + iota_cols
        s = _scores(q, k, scale, cols, length)
        new_top = jnp.maximum(top, jnp.max(s, axis=1))
        p = jnp.exp(s - new_top[:, None])
        alpha = jnp.exp(top - new_top)
        total = total * alpha + jnp.sum(p, axis=1)
        if rate > 0:
            p = jnp.where(_block_keep(meta_ref, h, rows, cols, seq, threshold), p * kept, 0.0)
        pv = jax.lax.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc * alpha[:, None] + pv, new_top, total

    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((block_q,), _MASKED, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    acc, top, total = jax.lax.fori_loop(0, seq // block_k, step, init)
    o_ref[...] = (acc / total[:, None]).astype(o_ref.dtype)
    lse_ref[...] = top + jnp.log(total)


def _forward(packed, bias, meta, rate, scale, interpret):
    out, lse = _forward_jit((rate, scale, interpret), packed, bias, meta)
    return out, (packed, bias, meta, out, lse)


def _forward_call(params, packed, bias, meta):
    rate, scale, interpret = params
    batch, seq, parts, head_dim = packed.shape
    heads = parts // 3
    block_q, block_k = blocks(seq)
    spec = _Specs(seq, heads, head_dim, block_q)
    out, lse = _call(
        _forward_kernel,
        (batch, heads, seq // block_q),
        spec.inputs(spec.rows(0), spec.full(1), spec.full(2)),
        (spec.rows(), spec.stat),
        (
            jax.ShapeDtypeStruct((batch, seq, heads, head_dim), packed.dtype),
            jax.ShapeDtypeStruct((batch, heads, seq), jnp.float32),
        ),
        "jaxft_flash_forward",
        interpret,
        rate=rate,
        scale=scale,
        seq=seq,
        tiles=(block_q, block_k),
    )(*_operands(meta, packed, bias))
    return out, lse


def _backward_block(meta_ref, h, q, k, v, do, lse, delta, rows, cols, rate, scale, seq):
    """(p with dropout applied, the logits' gradient ds) of one block."""
    threshold, kept = _params(rate)
    s = _scores(q, k, scale, cols, meta_ref[2])
    p = jnp.exp(s - lse[:, None])
    d_dropped = jax.lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
    if rate > 0:
        keep = _block_keep(meta_ref, h, rows, cols, seq, threshold)
        dropped = jnp.where(keep, p * kept, 0.0)
        dp = jnp.where(keep, d_dropped * kept, 0.0)
    else:
        dropped, dp = p, d_dropped
    return dropped, p * (dp - delta[:, None])


def _add_key_grads(carry, q, do, dropped, ds):
    """(dK, dV) after one query block: dK += dsᵀ·q (unscaled), dV += droppedᵀ·dO."""
    dk, dv = carry
    f32 = dict(preferred_element_type=jnp.float32)
    dv = dv + jax.lax.dot_general(dropped.astype(do.dtype), do, _TN, **f32)
    return dk + jax.lax.dot_general(ds.astype(q.dtype), q, _TN, **f32), dv


def _key_grads_loop(step, shape, trips, write, scale):
    """Runs `step` over the query blocks from zero key and value gradients, then writes them
    (`write(dk, dv)`, in float32)."""
    zeros = jnp.zeros(shape, jnp.float32)
    dk, dv = jax.lax.fori_loop(0, trips, step, (zeros, zeros))
    write(dk * scale, dv)


def _put(ref, rows, part, grad):
    """Writes a head's gradient block into an example's packed gradient (`_Specs.packed`)."""
    ref[rows, part, :] = grad.astype(ref.dtype)


def _one_pass_kernel(
    meta_ref, q_ref, k_ref, v_ref, qb_ref, kb_ref, vb_ref, o_ref, do_ref, lse_ref, dqkv_ref, *,
    rate, scale, seq, block, heads,
):  # fmt: skip
    """The backward pass of one (example, head) whose keys are one block: each query block's
    gradient is whole after its one visit, and the key and value gradients add up over them."""
    h = pl.program_id(1)
    k, v = _biased(k_ref[...], kb_ref), _biased(v_ref[...], vb_ref)
    iota_rows, cols = _iotas(block, seq)

    def step(qb, carry):
        start = pl.multiple_of(qb * block, block)
        q = _biased(q_ref[pl.ds(start, block), :], qb_ref)
        do = do_ref[pl.ds(start, block), :]
        o = o_ref[pl.ds(start, block), :]
        # rowsum(dO ∘ O) = rowsum(p ∘ dp) of the softmax backward, dropout included
        delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=1)
        dropped, ds = _backward_block(
            meta_ref, h, q, k, v, do, lse_ref[pl.ds(start, block)], delta, start + iota_rows,
            cols, rate, scale, seq,
        )  # fmt: skip
        dq = jax.lax.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
        _put(dqkv_ref, pl.ds(start, block), h, dq * scale)
        return _add_key_grads(carry, q, do, dropped, ds)

    def write(dk, dv):
        _put(dqkv_ref, slice(None), heads + h, dk)
        _put(dqkv_ref, slice(None), 2 * heads + h, dv)

    _key_grads_loop(step, k.shape, seq // block, write, scale)


def _key_grads_kernel(
    meta_ref, q_ref, k_ref, v_ref, qb_ref, kb_ref, vb_ref, do_ref, lse_ref, delta_ref, dqkv_ref, *,
    rate, scale, seq, block, heads,
):  # fmt: skip
    h, ki = pl.program_id(1), pl.program_id(2)
    k, v = _biased(k_ref[...], kb_ref), _biased(v_ref[...], vb_ref)
    iota_rows, iota_cols = _iotas(block, block)
    cols = ki * block + iota_cols

    def step(qb, carry):
        start = pl.multiple_of(qb * block, block)
        q = _biased(q_ref[pl.ds(start, block), :], qb_ref)
        do = do_ref[pl.ds(start, block), :]
        lse, delta = lse_ref[pl.ds(start, block)], delta_ref[pl.ds(start, block)]
        dropped, ds = _backward_block(
            meta_ref, h, q, k, v, do, lse, delta, start + iota_rows, cols, rate, scale, seq
        )
        return _add_key_grads(carry, q, do, dropped, ds)

    def write(dk, dv):
        rows = pl.ds(pl.multiple_of(ki * block, block), block)
        _put(dqkv_ref, rows, heads + h, dk)
        _put(dqkv_ref, rows, 2 * heads + h, dv)

    _key_grads_loop(step, k.shape, seq // block, write, scale)


def _query_grads_kernel(
    meta_ref, q_ref, k_ref, v_ref, qb_ref, kb_ref, vb_ref, do_ref, lse_ref, delta_ref, _,
    dqkv_ref, *, rate, scale, seq, block, heads,
):  # fmt: skip
    """The queries' gradient, written into the packed gradient that `_key_grads_kernel` made
    (the unused input before `dqkv_ref`, aliased to it)."""
    h, qi = pl.program_id(1), pl.program_id(2)
    q, do = _biased(q_ref[...], qb_ref), do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    iota_rows, iota_cols = _iotas(block, block)
    rows = qi * block + iota_rows

    def step(kb, dq):
        start = pl.multiple_of(kb * block, block)
        k = _biased(k_ref[pl.ds(start, block), :], kb_ref)
        v = _biased(v_ref[pl.ds(start, block), :], vb_ref)
        cols = start + iota_cols
        _, ds = _backward_block(meta_ref, h, q, k, v, do, lse, delta, rows, cols, rate, scale, seq)
        return dq + jax.lax.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = jax.lax.fori_loop(0, seq // block, step, jnp.zeros(q.shape, jnp.float32))
    _put(dqkv_ref, pl.ds(pl.multiple_of(qi * block, block), block), h, dq * scale)


def _backward(rate, scale, interpret, saved, d_out):
    packed, bias, meta, out, lse = saved
    params = (rate, scale, interpret)
    d_packed = _backward_jit(params, packed, bias, meta, out, lse, d_out)
    # the bias gradient: the packed gradient's rows summed in float32 (`layers.rows_of`)
    d_bias = jnp.sum(d_packed, axis=(0, 1), dtype=jnp.float32).astype(bias.dtype)
    return d_packed, d_bias, None


def _backward_call(params, packed, bias, meta, out, lse, d_out):
    rate, scale, interpret = params
    batch, seq, parts, head_dim = packed.shape
    heads = parts // 3
    block_q, block_k = blocks(seq)
    grad = jax.ShapeDtypeStruct(packed.shape, packed.dtype)
    spec = _Specs(seq, heads, head_dim, block_q)
    operands = _operands(meta, packed, bias)
    common = dict(rate=rate, scale=scale, seq=seq, block=block_q, heads=heads)
    if block_k == seq:  # one kernel per (example, head)
        common["block"] = min(_ONE_PASS_ROWS, seq)
        full = spec.full()
        return _call(
            _one_pass_kernel,
            (batch, heads, 1),
            [*spec.inputs(full, spec.full(1), spec.full(2)), full, full, spec.stat_full],
            spec.packed,
            grad,
            "jaxft_flash_backward",
            interpret,
            warps=8,
            **common,
        )(*operands, out, d_out, lse)
    # rowsum(dO ∘ O) = rowsum(p ∘ dp) of the softmax backward, dropout included
    delta = jnp.einsum("bshd,bshd->bhs", d_out.astype(jnp.float32), out.astype(jnp.float32))
    grid = (batch, heads, seq // block_q)
    dqkv = _call(
        _key_grads_kernel,
        grid,
        [
            *spec.inputs(spec.full(0), spec.rows(1), spec.rows(2)),
            spec.full(),
            *[spec.stat_full] * 2,
        ],
        spec.packed,
        grad,
        "jaxft_flash_key_grads",
        interpret,
        **common,
    )(*operands, d_out, lse, delta)
    return _call(
        _query_grads_kernel,
        grid,
        [
            *spec.inputs(spec.rows(0), spec.full(1), spec.full(2)),
            spec.rows(),
            *[spec.stat] * 2,
            spec.packed,
        ],
        spec.packed,
        grad,
        "jaxft_flash_query_grads",
        interpret,
        aliases={10: 0},  # dqkv, whose query parts it writes
        **common,
    )(*operands, d_out, lse, delta, dqkv)


def _batch_partitioned(call, rule: str):
    """`call(params, *arrays)` for XLA's SPMD partitioner: each device runs it on its own
    examples (every operand and result split along its first, batch, axis as the first
    operand's is; the rest of each replicated). Without it XLA gathers a batch-sharded
    operand of a kernel onto every device and runs the whole batch there. The masks stay those
    of the whole batch: each example's seeds travel with it in `meta`."""

    def batch_split(mesh, shapes, first):
        spec = first.sharding.spec
        batch = spec[0] if len(spec) else None
        split = lambda x: NamedSharding(mesh, PartitionSpec(batch, *(None,) * (len(x.shape) - 1)))
        return jax.tree_util.tree_map(split, shapes)

    def infer(params, mesh, arg_shapes, result_shape):
        return batch_split(mesh, result_shape, arg_shapes[0])

    def partition(params, mesh, arg_shapes, result_shape):
        lower = functools.partial(call, params)
        shardings = (batch_split(mesh, s, arg_shapes[0]) for s in (result_shape, arg_shapes))
        return (mesh, lower, *shardings)

    partitioned = custom_partitioning(call, static_argnums=(0,))
    # every factor but the batch, in the order the rule names them first (Shardy wants it)
    names = rule.replace(",", " ").replace("->", " ").split()
    replicated = tuple(f for f in dict.fromkeys(names) if f != "b")
    partitioned.def_partition(
        partition,
        infer_sharding_from_operands=infer,
        sharding_rule=rule,
        need_replication_factors=replicated,
    )
    return partitioned


# p: the packed parts (3 heads)
_forward_partitioned = _batch_partitioned(_forward_call, "b s p d, p d, b m -> b s h d, b h s")
_backward_partitioned = _batch_partitioned(
    _backward_call, "b s p d, p d, b m, b s h d, b h s, b s h d -> b s p d"
)
# jitted, so that every layer's call of the same shapes lowers its kernels once
_forward_jit = jax.jit(_forward_partitioned, static_argnums=0)
_backward_jit = jax.jit(_backward_partitioned, static_argnums=0)
_attention.defvjp(_forward, _backward)
