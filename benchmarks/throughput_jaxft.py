"""The jaxft side of `throughput.py`: a row's random-init model with its strategy applied, its
train state and optimizer (built once per kind, on the host CPU beside an accelerator), one
numpy batch, and the train step of an ablation variant. `throughput_hf.py` is the PyTorch side;
`gpu_hlo.py`, `profile_step.py` and `alternate.py` build their steps here too."""

import contextlib

import ablations

# The strategies' settings in every row, jaxft's and PEFT's alike.
LORA = dict(rank=8, alpha=16.0, dropout=0.1, targets=("query", "value"))
ADAPTER_SIZE = 64


def strategy_config(strategy: str):
    from jaxft import peft

    cfg = peft.defaults()
    cfg.name = strategy
    cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout = LORA["rank"], LORA["alpha"], LORA["dropout"]
    cfg.lora.targets = tuple(f"attention/{t}$" for t in LORA["targets"])
    cfg.adapters.size = ADAPTER_SIZE
    cfg.adapters.train_layer_norm = False  # as PEFT-style adapters: the bottlenecks alone
    return cfg


def host_device():
    """The CPU device when the default device is an accelerator and JAX also has its CPU
    backend (JAX_PLATFORMS=cuda,cpu), else None. Built there, a row's random init, strategy and
    optimizer state compile as CPU programs. Built on an H100, where each of some 40 small eager
    ops and the init are GPU compiles, a BERT-base full row spent 61 s outside its step's
    compile; built on the host, 9 s."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:  # no CPU backend in JAX_PLATFORMS
        return None


# A row's train state depends on its architecture, shape, strategy and dtype, not on its variant,
# which changes how the step computes: each kind is built once (on the host beside an
# accelerator) and every row gets its own copy, which its step donates. On the H100 of
# 2026-11-27 building took 9 s of a 45 s BERT-base row.
_built: dict = {}


def build_jaxft(arch: str, shape: dict, strategy: str, settings: dict):
    """(model, train state, optimizer) for a random-init model with the strategy applied, built
    on the host CPU where there is one beside the accelerator, then put on the default device.
    The state is built once per (arch, shape, strategy, dtype), with the default settings, and
    copied for each call."""
    import jax

    host = host_device()
    kind = (arch, tuple(sorted(shape.items())), strategy, settings["dtype"])
    with jax.default_device(host) if host else contextlib.nullcontext():
        if kind not in _built:
            default = ablations.jaxft_settings("default", settings["dtype"])
            _built[kind] = _state(_model(arch, shape, strategy, default), strategy, default)
        state, tx = _built[kind]
        model = _model(arch, shape, strategy, settings)
    if host:
        return model, jax.device_put(state, jax.devices()[0]), tx
    return model, jax.tree_util.tree_map(lambda x: x.copy(), state), tx


def _model(arch: str, shape: dict, strategy: str, settings: dict):
    """The model of a row's settings, with the strategy's modules (LoRA, adapters, ...)."""
    from jaxft import models
    from jaxft.models import bert, heads, t5
    from jaxft.train import loop

    dtype = models.resolve_dtype(settings["dtype"])
    if arch == "bert":
        extra = {}
        if settings["attention_dropout"] is not None:
            extra["attention_probs_dropout_prob"] = settings["attention_dropout"]
        config = bert.BertConfig(
            **shape,
            **extra,
            attention=settings["attention"],
            scan_layers=settings["scan_layers"],
            remat=settings["remat"],
        )
        model = bert.BertModel(config, head=heads.HeadConfig(num_labels=2), dtype=dtype)
    else:
        model = t5.T5Model(t5.T5Config(**shape, attention=settings["attention"]), dtype=dtype)
    return loop.with_strategy(model, strategy_config(strategy))


def _state(model, strategy: str, settings: dict):
    """(train state, optimizer): random init, the strategy applied, AdamW's state."""
    import jax

    from jaxft import models, peft
    from jaxft.config import defaults
    from jaxft.train import loop, optim
    from jaxft.train import state as state_lib

    params = models.init_params(model, jax.random.key(0))
    params, mask = peft.apply(params, strategy_config(strategy), jax.random.key(1))
    if settings["dtype"] != "float32":
        params = loop.store_frozen(params, mask, "bfloat16")  # param_dtype=bfloat16
    optim_cfg = defaults().optim
    tx, _ = optim.make(optim_cfg, peft.paths.split(params, mask)[0], total_steps=1000)
    return state_lib.create(params, mask, tx, jax.random.key(2)), tx


def numpy_batch(arch: str, dims: tuple, vocab: int, seed: int = 0) -> dict:
    """One random batch of full-length sequences, as numpy (the torch child never imports
    JAX: that would take most of the GPU's memory for JAX's allocator)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if arch == "bert":
        batch, seq = dims
        ids = rng.integers(5, vocab, (batch, seq), dtype=np.int32)
        host = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 2, (batch,), dtype=np.int32),
            "weights": np.ones((batch,), np.float32),
        }
    else:
        batch, source, target = dims
        ids = rng.integers(5, vocab, (batch, source), dtype=np.int32)
        host = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "labels": rng.integers(5, vocab, (batch, target), dtype=np.int32),
            "weights": np.ones((batch,), np.float32),
        }
    return host


def build_step(arch: str, shape: dict, strategy: str, variant: str, dtype: str):
    """(train step, state) of a jaxft row: the model, strategy and optimizer of the variant's
    settings, built as `build_jaxft` builds them, and the step with the variant's dropout RNG."""
    from jaxft.train import step as step_lib

    settings = ablations.jaxft_settings(variant, dtype)
    model, state, tx = build_jaxft(arch, shape, strategy, settings)
    return step_lib.make_train_step(model, tx, dropout_rng=settings["dropout_rng"]), state
