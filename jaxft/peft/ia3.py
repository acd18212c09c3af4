"""IA³ (Liu et al. 2022): learned vectors that rescale keys, values and FFN activations.

Ones-initialised, so a fresh IA³ model computes exactly the base model. `ia3_out` scales a dense
layer's output (keys, values); `ia3_in` scales its input (the FFN activations entering
`layer_i/output`).
"""

import jax.numpy as jnp
from flax import traverse_util

from jaxft.peft import lora, paths


def apply(params, cfg, rng):
    flat = traverse_util.flatten_dict(params, sep="/")
    trainable = []
    for leaf, targets in (("ia3_out", cfg.output_targets), ("ia3_in", cfg.input_targets)):
        if not targets:
            continue
        for module in lora.kernel_paths(params, targets):
            fan_in, fan_out = flat[f"{module}/kernel"].shape
            flat[f"{module}/{leaf}"] = jnp.ones((fan_out if leaf == "ia3_out" else fan_in,))
            trainable.append(f"{module}/{leaf}")
    new = traverse_util.unflatten_dict(flat, sep="/")
    return new, paths.mask_from_paths(new, trainable)


def fold(params):
    """Fold IA³ vectors into the kernels (and biases) they scale: plain params again."""
    flat = traverse_util.flatten_dict(params, sep="/")
    for path in [p for p in flat if p.endswith(("/ia3_out", "/ia3_in"))]:
        module, leaf = path.rsplit("/", 1)
        vector = flat.pop(path)
        if leaf == "ia3_out":  # (x W + b) * l = x (W * l) + b * l
            flat[f"{module}/kernel"] = flat[f"{module}/kernel"] * vector[None, :]
            if f"{module}/bias" in flat:
                flat[f"{module}/bias"] = flat[f"{module}/bias"] * vector
        else:  # (x * l) W = x (l[:, None] * W)
            flat[f"{module}/kernel"] = flat[f"{module}/kernel"] * vector[:, None]
    return traverse_util.unflatten_dict(flat, sep="/")
