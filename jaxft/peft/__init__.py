"""Fine-tuning strategies as pure functions: (params, strategy config, rng) -> (params, mask).

The mask is a tree of bools with the structure of params: True marks a leaf that trains.
"""

import jax

from jaxft.errors import UserError
from jaxft.peft import paths

HEAD = r"^head/"


def full(params, cfg, rng):
    """Every parameter trains."""
    return params, jax.tree_util.tree_map(lambda _: True, params)


def frozen(params, cfg, rng):
    """The backbone is frozen; only the task head trains."""
    return params, paths.mask_from_regexes(params, [HEAD], what="head")


STRATEGIES = {"full": full, "frozen": frozen}


def apply(params, cfg, rng=None):
    """Rewrite `params` for the strategy `cfg.name` and return `(params, trainable_mask)`."""
    name = cfg if isinstance(cfg, str) else cfg.name
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    return STRATEGIES[name](params, cfg, rng)


def summary(params, mask) -> str:
    """One line: trainable / total parameters and the percentage."""
    trainable, _ = paths.split(params, mask)
    n, total = paths.count(trainable), paths.count(params)
    return f"trainable params: {n:,} / {total:,} ({100.0 * n / max(total, 1):.2f}%)"
