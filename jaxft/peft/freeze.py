"""Strategies that only choose what trains: full, frozen, BitFit, top-k unfreezing."""

import jax

from jaxft.errors import UserError
from jaxft.peft import paths

HEAD = "^head/"


def full(params, cfg, rng):
    """Every parameter trains."""
    return params, jax.tree_util.tree_map(lambda _: True, params)


def frozen(params, cfg, rng):
    """Nothing trains here; `apply` adds the task head."""
    return params, jax.tree_util.tree_map(lambda _: False, params)


def bitfit(params, cfg, rng):
    """Biases only (Ben Zaken et al. 2022), optionally LayerNorm parameters too."""
    patterns = [r"/bias$"] + ([r"norm/scale$"] if cfg.layer_norm else [])
    return params, paths.mask_from_regexes(params, patterns, what="BitFit")


def unfreeze_top_k(params, cfg, rng):
    """The last k encoder layers train (the head is added by `apply`)."""
    layers = sorted(int(n.split("_")[1]) for n in params["encoder"] if n.startswith("layer_"))
    if not 0 < cfg.k <= len(layers):
        raise UserError(f"strategy.unfreeze_top_k.k must be in 1..{len(layers)}; got {cfg.k}")
    top = [rf"^encoder/layer_{i}/" for i in layers[-cfg.k :]]
    return params, paths.mask_from_regexes(params, top, what="unfreeze_top_k")
