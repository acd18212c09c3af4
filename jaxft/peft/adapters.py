"""Bottleneck adapters: Houlsby (after attention and after the FFN) or Pfeiffer (after the FFN).

Each adapter is `x + up(act(down(x)))` with `up` zero-initialised, so a fresh adapter is the
identity. The leaves go under `encoder/layer_i/adapter_attention` and `.../adapter_output`, where
the BERT layer applies them when present.
"""

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxft.errors import UserError
from jaxft.peft import paths

PLACES = {"houlsby": ("adapter_attention", "adapter_output"), "pfeiffer": ("adapter_output",)}


def _layers(params) -> list[str]:
    layers = [f"encoder/{name}" for name in params.get("encoder", {}) if name.startswith("layer_")]
    if not layers:
        raise UserError("adapters need an encoder with encoder/layer_i blocks; none found")
    return sorted(layers, key=lambda p: int(p.rsplit("_", 1)[1]))


def apply(params, cfg, rng):
    if cfg.kind not in PLACES:
        raise UserError(f"strategy.adapters.kind={cfg.kind!r}; use one of {sorted(PLACES)}")
    if cfg.size <= 0:
        raise UserError(f"strategy.adapters.size must be positive; got {cfg.size}")
    flat = traverse_util.flatten_dict(params, sep="/")
    hidden = flat["embeddings/norm/scale"].shape[0]
    trainable = []
    layers = _layers(params)
    keys = jax.random.split(rng, len(layers) * len(PLACES[cfg.kind]))
    for i, (layer, place) in enumerate((lay, pl) for lay in layers for pl in PLACES[cfg.kind]):
        prefix = f"{layer}/{place}"
        # Near-identity start: small down-projection, zero up-projection (Houlsby et al.).
        flat[f"{prefix}/down/kernel"] = cfg.init_scale * jax.random.normal(
            keys[i], (hidden, cfg.size), jnp.float32
        )
        flat[f"{prefix}/down/bias"] = jnp.zeros((cfg.size,), jnp.float32)
        flat[f"{prefix}/up/kernel"] = jnp.zeros((cfg.size, hidden), jnp.float32)
        flat[f"{prefix}/up/bias"] = jnp.zeros((hidden,), jnp.float32)
        trainable += [f"{prefix}/{m}/{n}" for m in ("down", "up") for n in ("kernel", "bias")]
    if cfg.train_layer_norm:
        trainable += [p for p in flat if p.startswith("encoder/") and "_norm/" in p]
    new = traverse_util.unflatten_dict(flat, sep="/")
    return new, paths.mask_from_paths(new, trainable)
