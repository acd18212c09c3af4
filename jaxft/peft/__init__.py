"""Fine-tuning strategies as pure functions: (params, strategy config, rng) -> (params, mask).

The mask is a tree of bools with the structure of the returned params: True marks a leaf that
trains. Strategies compose: `name="lora+bitfit"` applies both and trains the union of their
masks. Every strategy but `full` also trains the task head (`head/...`).

| name | adds | trains |
|---|---|---|
| full | - | everything |
| frozen | - | the head |
| features | - | the head, on pooled features of the frozen encoder computed once |
| lora | lora_a, lora_b, lora_scale beside targeted kernels | lora_a, lora_b (+ biases) |
| adapters | adapter_{attention,output}/{down,up} per layer | adapters (+ LayerNorms) |
| bitfit | - | biases (+ LayerNorms) |
| ia3 | ia3_out on keys/values, ia3_in on FFN outputs | the IA³ vectors |
| unfreeze_top_k | - | the last k layers |
| prompt | embeddings/prompt | the soft prompt |
| prefix | attention/prefix_{key,value} per layer | the prefixes |
"""

import jax
import ml_collections

from jaxft.errors import UserError
from jaxft.peft import adapters, freeze, ia3, lora, paths, prompt
from jaxft.peft.lora import merge, unmerge

STRATEGIES = {
    "full": freeze.full,
    "frozen": freeze.frozen,
    "features": freeze.frozen,
    "lora": lora.apply,
    "adapters": adapters.apply,
    "bitfit": freeze.bitfit,
    "ia3": ia3.apply,
    "unfreeze_top_k": freeze.unfreeze_top_k,
    "prompt": prompt.prompt,
    "prefix": prompt.prefix,
}


def defaults() -> ml_collections.ConfigDict:
    """Every strategy setting with its default (also the `strategy` section of the config)."""
    c = ml_collections.ConfigDict()
    c.name = "full"  # one of STRATEGIES, or several joined by '+', e.g. "lora+bitfit"
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 8  # r: inner dimension of the low-rank update
    c.lora.alpha = 16.0  # update scale is alpha / r (alpha / sqrt(r) with rslora)
    c.lora.dropout = 0.1  # dropout on the input of the LoRA branch
    c.lora.rslora = False  # rank-stabilised scaling alpha / sqrt(r)
    c.lora.targets = ("attention/query$", "attention/value$")  # regexes over dense-layer paths
    c.lora.bias = "none"  # none | lora_only (biases of targeted layers) | all (every bias)
    c.adapters = ml_collections.ConfigDict()
    c.adapters.kind = "houlsby"  # houlsby (after attention and FFN) | pfeiffer (after FFN)
    c.adapters.size = 64  # bottleneck width
    c.adapters.activation = "relu"  # nonlinearity inside the bottleneck
    c.adapters.init_scale = 1e-3  # std of the down-projection init; up starts at zero
    c.adapters.train_layer_norm = True  # train the encoder's LayerNorms too, as Houlsby et al.
    c.bitfit = ml_collections.ConfigDict()
    c.bitfit.layer_norm = False  # also train LayerNorm scales and biases
    c.ia3 = ml_collections.ConfigDict()
    c.ia3.output_targets = ("attention/key$", "attention/value$")  # layers whose output is scaled
    c.ia3.input_targets = ("layer_\\d+/output$",)  # layers whose input (FFN activation) is scaled
    c.unfreeze_top_k = ml_collections.ConfigDict()
    c.unfreeze_top_k.k = 2  # how many of the last encoder layers train
    c.prompt = ml_collections.ConfigDict()
    c.prompt.length = 20  # learned virtual tokens in front of the input
    c.prefix = ml_collections.ConfigDict()
    c.prefix.length = 10  # learned key/value vectors per layer
    c.features = ml_collections.ConfigDict()
    c.features.epochs = 30  # head epochs over the cached features
    return c


def names(cfg) -> list[str]:
    name = cfg if isinstance(cfg, str) else cfg.name
    parts = [p.strip() for p in name.split("+") if p.strip()]
    for part in parts:
        if part not in STRATEGIES:
            raise UserError(f"unknown strategy {part!r}; choose from {sorted(STRATEGIES)}")
    if not parts:
        raise UserError("strategy.name is empty; choose from " + ", ".join(sorted(STRATEGIES)))
    if "features" in parts and len(parts) > 1:
        raise UserError("the features strategy does not compose with others")
    return parts


def _resolve(cfg):
    if isinstance(cfg, str):
        resolved = defaults()
        resolved.name = cfg
        return resolved
    return cfg


def apply(params, cfg, rng=None):
    """Rewrite `params` for the strategy `cfg.name` and return `(params, trainable_mask)`."""
    cfg = _resolve(cfg)
    rng = jax.random.key(0) if rng is None else rng
    parts = names(cfg)
    mask = None
    for part, key in zip(parts, jax.random.split(rng, len(parts)), strict=True):
        params, part_mask = STRATEGIES[part](params, cfg.get(part), key)
        mask = part_mask if mask is None else paths.union(_widen(mask, params), part_mask)
    if "head" in params and parts != ["full"]:
        mask = paths.union(mask, paths.mask_from_regexes(params, [freeze.HEAD], what="head"))
    return params, mask


def _widen(mask, params):
    """An earlier mask over the (possibly larger) tree a later strategy returned."""
    flat = paths.flatten(mask)
    return paths.mask_from_paths(params, [p for p, v in flat.items() if v])


def model_options(cfg) -> dict:
    """Model-config fields a strategy needs (for `dataclasses.replace` on the model config)."""
    cfg = _resolve(cfg)
    parts = names(cfg)
    return {
        "lora_dropout": float(cfg.lora.dropout) if "lora" in parts else 0.0,
        "adapter_activation": cfg.adapters.activation,
        # A backbone that is not differentiated reads each dropout mask once, in a step that is
        # its forward pass: masks cut at static offsets, without a copy (dropout.keep_masks).
        "dropout_offsets": "static" if parts in (["frozen"], ["features"]) else "runtime",
    }


def summary(params, mask) -> str:
    """Trainable / total parameters, overall and by top-level module."""
    trainable, _ = paths.split(params, mask)
    n, total = paths.count(trainable), paths.count(params)
    lines = [f"trainable params: {n:,} / {total:,} ({100.0 * n / max(total, 1):.3g}%)"]
    for module in params:
        sub_total = paths.count(params[module])
        sub = paths.count(trainable.get(module, {}))
        lines.append(f"  {module:<12} {sub:>12,} / {sub_total:>12,}")
    return "\n".join(lines)


__all__ = ["STRATEGIES", "apply", "defaults", "merge", "model_options", "summary", "unmerge"]
