"""AdamW over the trainable leaves: warmup + decay schedule, clipping, weight-decay mask."""

import math
import re

import jax
import optax
from flax import traverse_util

from jaxft.errors import UserError

NO_DECAY = ("bias", "scale")  # biases and LayerNorm parameters, as in Hugging Face's Trainer


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
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
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
