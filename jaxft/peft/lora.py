"""LoRA (Hu et al. 2021): a trainable low-rank update `scale * A @ B` beside frozen kernels.

`apply` adds `lora_a` [in, r] (Kaiming-uniform, as HF PEFT), `lora_b` [r, out] (zeros) and
`lora_scale` [] (alpha / r, or alpha / sqrt(r) for rsLoRA) beside every targeted `kernel`. The
shared `Dense` layer computes the update factorized; `merge` folds it into the kernel.
"""

import math
import re

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxft.errors import UserError
from jaxft.peft import paths

LEAVES = ("lora_a", "lora_b", "lora_scale")


def kernel_paths(params, targets) -> list[str]:
    """Paths of the Dense modules (the folder of a 2-D `kernel`) that match any target regex."""
    flat = traverse_util.flatten_dict(params, sep="/")
    modules = [
        p[: -len("/kernel")] for p, v in flat.items() if p.endswith("/kernel") and v.ndim == 2
    ]
    for target in targets:
        if not any(re.search(target, m) for m in modules):
            raise UserError(
                f"LoRA target regex {target!r} matches no dense layer. Nearest: "
                f"{paths.nearest(target, modules)}"
            )
    return [m for m in modules if any(re.search(t, m) for t in targets)]


def apply(params, cfg, rng):
    if cfg.rank <= 0:
        raise UserError(f"strategy.lora.rank must be positive; got {cfg.rank}")
    modules = kernel_paths(params, cfg.targets)
    scale = cfg.alpha / (math.sqrt(cfg.rank) if cfg.rslora else cfg.rank)
    flat = traverse_util.flatten_dict(params, sep="/")
    trainable = []
    for module, key in zip(modules, jax.random.split(rng, len(modules)), strict=True):
        fan_in, fan_out = flat[f"{module}/kernel"].shape
        bound = 1.0 / math.sqrt(fan_in)
        flat[f"{module}/lora_a"] = jax.random.uniform(
            key, (fan_in, cfg.rank), jnp.float32, -bound, bound
        )
        flat[f"{module}/lora_b"] = jnp.zeros((cfg.rank, fan_out), jnp.float32)
        flat[f"{module}/lora_scale"] = jnp.asarray(scale, jnp.float32)
        trainable += [f"{module}/lora_a", f"{module}/lora_b"]
        if cfg.bias == "lora_only" and f"{module}/bias" in flat:
            trainable.append(f"{module}/bias")
    if cfg.bias not in ("none", "lora_only", "all"):
        raise UserError(f"strategy.lora.bias={cfg.bias!r}; use none, lora_only or all")
    if cfg.bias == "all":
        trainable += [p for p in flat if p.endswith("/bias")]
    new = traverse_util.unflatten_dict(flat, sep="/")
    return new, paths.mask_from_paths(new, trainable)


def merge(params):
    """Fold every LoRA update into its kernel and drop the LoRA leaves: plain params again."""
    flat = traverse_util.flatten_dict(params, sep="/")
    for module in [p[: -len("/lora_a")] for p in flat if p.endswith("/lora_a")]:
        a, b, s = (flat.pop(f"{module}/{n}") for n in LEAVES)
        flat[f"{module}/kernel"] = flat[f"{module}/kernel"] + s * (a @ b)
    return traverse_util.unflatten_dict(flat, sep="/")


def extract(params):
    """Only the LoRA leaves of `params` (what `unmerge` needs to undo `merge`)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {p: v for p, v in flat.items() if p.rsplit("/", 1)[-1] in LEAVES}, sep="/"
    )


def unmerge(merged, lora_leaves):
    """Inverse of `merge`: subtract each update from its kernel and put the LoRA leaves back."""
    flat = traverse_util.flatten_dict(merged, sep="/")
    leaves = traverse_util.flatten_dict(lora_leaves, sep="/")
    for module in [p[: -len("/lora_a")] for p in leaves if p.endswith("/lora_a")]:
        a, b, s = (leaves[f"{module}/{n}"] for n in LEAVES)
        flat[f"{module}/kernel"] = flat[f"{module}/kernel"] - s * (a @ b)
    flat.update(leaves)
    return traverse_util.unflatten_dict(flat, sep="/")
