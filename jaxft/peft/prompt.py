"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021).

`prompt` learns n input vectors put in front of the word embeddings (`embeddings/prompt`),
initialised from the embeddings of random vocabulary tokens. `prefix` learns n key and n value
vectors per layer (`encoder/layer_i/attention/prefix_{key,value}`) that every token attends to.
"""

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxft.errors import UserError
from jaxft.peft import paths


def _check_length(n, what):
    if n <= 0:
        raise UserError(f"strategy.{what}.length must be positive; got {n}")


def prompt(params, cfg, rng):
    _check_length(cfg.length, "prompt")
    table = params["embeddings"]["word_embeddings"]["embedding"]
    rows = jax.random.randint(rng, (cfg.length,), 0, table.shape[0])
    new = jax.tree_util.tree_map(lambda x: x, params)
    new["embeddings"] = dict(new["embeddings"], prompt=jnp.asarray(table[rows]))
    return new, paths.mask_from_paths(new, ["embeddings/prompt"])


def prefix(params, cfg, rng):
    _check_length(cfg.length, "prefix")
    flat = traverse_util.flatten_dict(params, sep="/")
    hidden = flat["embeddings/norm/scale"].shape[0]
    modules = sorted({p.rsplit("/", 2)[0] for p in flat if p.endswith("attention/query/kernel")})
    trainable = []
    for module, key in zip(modules, jax.random.split(rng, len(modules)), strict=True):
        k1, k2 = jax.random.split(key)
        flat[f"{module}/prefix_key"] = 0.02 * jax.random.normal(k1, (cfg.length, hidden))
        flat[f"{module}/prefix_value"] = 0.02 * jax.random.normal(k2, (cfg.length, hidden))
        trainable += [f"{module}/prefix_key", f"{module}/prefix_value"]
    new = traverse_util.unflatten_dict(flat, sep="/")
    return new, paths.mask_from_paths(new, trainable)
