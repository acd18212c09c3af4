"""AdamW over the trainable leaves: warmup + decay schedule, clipping, weight-decay mask."""

import math
import re

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxft.errors import UserError
from jaxft.train import sharding

NO_DECAY = ("bias", "scale")  # biases and LayerNorm parameters, as in Hugging Face's Trainer


# Leaves under this many elements have their squares summed together: one kernel for the
# biases, norms and LoRA factors instead of one each. FSDP keeps such leaves whole on every
# device, so their concatenation gathers nothing.
SMALL_LEAF = sharding.MIN_SHARDED_SIZE


def global_norm(tree) -> jax.Array:
    """The L2 norm of all leaves together, as `optax.global_norm`, with the small leaves'
    squares summed in one reduction over their concatenation.

    XLA cannot fuse reductions of different shapes, so a norm taken leaf by leaf is a kernel
    per leaf: 201 in the BERT-base full step, 126 of them over a few thousand elements each,
    where a GPU spends a few microseconds launching and finishing a kernel however little it
    reads. A big leaf is summed along its rows, not to a scalar: XLA's GPU compiler splits a
    reduction of a million elements to one number into two kernels, the second summing a few
    hundred partial sums, so the big leaves' row sums are summed together with the small
    leaves' squares, once."""
    leaves = [x.astype(jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
    rows = lambda x: x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    parts = [jnp.sum(jnp.square(rows(x)), axis=1) for x in leaves if x.size >= SMALL_LEAF]
    small = [x.ravel() for x in leaves if x.size < SMALL_LEAF]
    if small:
        parts.append(jnp.square(jnp.concatenate(small)))
    if not parts:
        return jnp.zeros((), jnp.float32)
    # The barrier keeps XLA from rewriting the sum of the concatenation into one sum per part.
    return jnp.sqrt(jnp.sum(jax.lax.optimization_barrier(jnp.concatenate(parts))))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm` over `global_norm`: updates scaled by max_norm / norm when
    their norm exceeds max_norm."""

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)
        clipped = norm >= max_norm
        scale = lambda u: jnp.where(clipped, u / norm.astype(u.dtype) * max_norm, u)
        return jax.tree_util.tree_map(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def warmup_steps(cfg, total_steps: int) -> int:
    if cfg.get("warmup_steps"):
        return int(cfg.warmup_steps)
    return math.ceil(total_steps * cfg.warmup_ratio)


def schedule(cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to cfg.lr, then linear (or cosine, or constant) decay to 0."""
    warmup = warmup_steps(cfg, total_steps)
    rest = max(total_steps - warmup, 1)
    decays = {
        "linear": lambda: optax.linear_schedule(cfg.lr, 0.0, rest),
        "cosine": lambda: optax.cosine_decay_schedule(cfg.lr, rest),
        "constant": lambda: optax.constant_schedule(cfg.lr),
    }
    if cfg.schedule not in decays:
        raise UserError(f"unknown optim.schedule {cfg.schedule!r}; choose from {sorted(decays)}")
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), decays[cfg.schedule]()], [warmup]
    )


def decay_mask(params):
    """True for leaves that get weight decay: everything but biases and LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, _: str(getattr(kp[-1], "key", kp[-1])) not in NO_DECAY, params
    )


def layer_scales(params, decay: float):
    """Per-leaf learning-rate multipliers for layer-wise decay (Clark et al. 2020).

    With L encoder layers, `encoder/layer_i` gets decay**(L - i), the embeddings decay**(L + 1),
    and everything above the encoder (pooler, head) 1.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    layer_ids = [int(m.group(1)) for p in flat if (m := re.match(r"encoder/layer_(\d+)/", p))]
    depth = max(layer_ids) + 1 if layer_ids else 0

    def scale(path):
        if m := re.match(r"encoder/layer_(\d+)/", path):
            return decay ** (depth - int(m.group(1)))
        if path.startswith("embeddings/"):
            return decay ** (depth + 1)
        return 1.0

    return traverse_util.unflatten_dict({p: scale(p) for p in flat}, sep="/")


def make(cfg, trainable_params, total_steps: int):
    """The optimizer for the trainable subtree and its learning-rate schedule.

    It is built over the trainable leaves only, so frozen leaves have no Adam moments and are
    never differentiated (the train step takes gradients w.r.t. the trainable subtree alone).
    """
    lr = schedule(cfg, total_steps)
    parts = []
    if cfg.clip_norm:
        parts.append(clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            lr,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask(trainable_params),
        )
    )
    if cfg.get("layer_decay", 1.0) != 1.0:
        # Scaling the whole AdamW update scales its decoupled weight decay too, as a per-group
        # learning rate does in PyTorch.
        scales = layer_scales(trainable_params, cfg.layer_decay)
        parts.append(
            optax.stateless(
                lambda updates, _: jax.tree_util.tree_map(lambda u, s: u * s, updates, scales)
            )
        )
    return optax.chain(*parts), lr
