"""Strategy invariants on a tiny random BERT (no torch needed)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxft import peft
from jaxft.errors import UserError
from jaxft.models import bert, heads
from jaxft.peft import paths
from jaxft.train import optim, step
from jaxft.train import state as state_lib

CONFIG = bert.BertConfig(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
HEAD = heads.HeadConfig(num_labels=3, dropout=0.0)


@pytest.fixture(scope="module")
def base():
    model = bert.BertModel(CONFIG, head=HEAD)
    ids = jnp.ones((1, 8), jnp.int32)
    params = model.init(jax.random.key(1), ids)["params"]
    # Non-trivial biases and norms so strategies that touch them are really exercised.
    params = jax.tree_util.tree_map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), params
    )
    return model, params


def _batch(seed=0, b=4, n=10):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(b, n)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 3, size=b).astype(np.int32),
        "weights": np.ones(b, np.float32),
    }


def _logits(model, params, batch):
    return step.forward(model, params, batch, deterministic=True).logits


def _cfg(name, **settings):
    cfg = peft.defaults()
    cfg.name = name
    for key, value in settings.items():
        section, field = key.split(".")
        cfg[section][field] = value
    return cfg


@pytest.mark.parametrize("name", ["lora", "adapters", "ia3", "lora+bitfit", "adapters:pfeiffer"])
def test_fresh_strategies_leave_outputs_bitwise_equal(base, name):
    model, params = base
    name, _, kind = name.partition(":")
    cfg = _cfg(name, **({"adapters.kind": kind} if kind else {}))
    new, mask = peft.apply(params, cfg, jax.random.key(0))
    assert paths.count(new) > paths.count(params) or name == "bitfit"
    batch = _batch()
    np.testing.assert_array_equal(_logits(model, params, batch), _logits(model, new, batch))


def test_merged_lora_equals_unmerged(base):
    model, params = base
    new, _ = peft.apply(params, _cfg("lora", **{"lora.targets": (".*",)}), jax.random.key(0))
    # A trained-looking LoRA: random B instead of zeros.
    new = jax.tree_util.tree_map_with_path(
        lambda kp, x: (
            0.1 * jax.random.normal(jax.random.key(3), x.shape)
            if paths.path_of(kp).endswith("lora_b")
            else x
        ),
        new,
    )
    batch = _batch()
    merged = peft.merge(new)
    assert not any(p.endswith(("lora_a", "lora_b")) for p in paths.paths(merged))
    assert paths.paths(merged) == paths.paths(params)
    np.testing.assert_allclose(_logits(model, merged, batch), _logits(model, new, batch), atol=1e-5)
    restored = peft.unmerge(merged, peft.lora.extract(new))
    chex.assert_trees_all_close(restored, new, atol=1e-6)


def test_ia3_fold_equals_unfolded(base):
    model, params = base
    new, _ = peft.apply(params, "ia3", jax.random.key(0))
    new = jax.tree_util.tree_map_with_path(
        lambda kp, x: (
            x * (1 + 0.3 * jax.random.normal(jax.random.key(4), x.shape))
            if "ia3" in paths.path_of(kp)
            else x
        ),
        new,
    )
    folded = peft.ia3.fold(new)
    assert paths.paths(folded) == paths.paths(params)
    np.testing.assert_allclose(
        _logits(model, folded, _batch()), _logits(model, new, _batch()), atol=1e-5
    )


STRATEGY_TRAINS = {
    "full": lambda p: True,
    "frozen": lambda p: p.startswith("head/"),
    "lora": lambda p: p.startswith("head/") or p.endswith(("lora_a", "lora_b")),
    "adapters": lambda p: p.startswith("head/") or "adapter_" in p or "_norm/" in p,
    "bitfit": lambda p: p.startswith("head/") or p.endswith("/bias"),
    "ia3": lambda p: p.startswith("head/") or "/ia3_" in p,
    "unfreeze_top_k": lambda p: p.startswith(("head/", "encoder/layer_1/", "encoder/layer_2/")),
    "prompt": lambda p: p.startswith("head/") or p == "embeddings/prompt",
    "prefix": lambda p: p.startswith("head/") or "/prefix_" in p,
    "lora+bitfit": lambda p: p.startswith("head/") or p.endswith(("lora_a", "lora_b", "/bias")),
}


@pytest.mark.parametrize("name", sorted(STRATEGY_TRAINS))
def test_a_step_changes_exactly_the_masked_leaves(base, name):
    model, params = base
    cfg = _cfg(name)
    params, mask = peft.apply(params, cfg, jax.random.key(0))
    expected = {p for p in paths.paths(params) if STRATEGY_TRAINS[name](p)}
    assert {p for p, v in paths.flatten(mask).items() if v} == expected
    model = model.clone(config=dataclasses.replace(model.config, **peft.model_options(cfg)))
    trainable, _ = paths.split(params, mask)
    tx = optax.adamw(1e-2, weight_decay=0.0)
    state = state_lib.create(params, mask, tx, jax.random.key(0))
    # Optimizer state holds exactly the trainable leaves (Adam's mu and nu mirror them).
    mu = state.opt_state[0].mu
    assert sorted(paths.paths(mu)) == sorted(paths.paths(trainable))
    train_step = jax.jit(step.make_train_step(model, tx, regression=False))
    new_state, _ = train_step(state, _batch())
    new_state, _ = train_step(new_state, _batch(1))
    before, after = paths.flatten(params), paths.flatten(new_state.params)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    # LoRA's B starts at zero, so A's gradient is zero on the first step; both move by step 2.
    assert changed == expected


def test_target_regex_matching_nothing_lists_nearest_paths(base):
    _, params = base
    with pytest.raises(
        UserError, match=r"'attention/qeury' matches no dense layer.*attention/query"
    ):
        peft.apply(params, _cfg("lora", **{"lora.targets": ("attention/qeury",)}))


@pytest.mark.parametrize(
    "name, setting, message",
    [
        ("loraa", {}, "unknown strategy 'loraa'"),
        ("lora", {"lora.rank": 0}, "rank must be positive"),
        ("adapters", {"adapters.kind": "x"}, "adapters.kind='x'"),
        ("unfreeze_top_k", {"unfreeze_top_k.k": 9}, r"k must be in 1\.\.3"),
    ],
)
def test_bad_strategy_settings(base, name, setting, message):
    with pytest.raises(UserError, match=message):
        peft.apply(base[1], _cfg(name, **setting))


def test_rslora_scale_and_lora_bias_options(base):
    _, params = base
    new, mask = peft.apply(
        params, _cfg("lora", **{"lora.rslora": True, "lora.rank": 4, "lora.bias": "lora_only"})
    )
    layer = new["encoder"]["layer_0"]["attention"]
    assert float(layer["query"]["lora_scale"]) == pytest.approx(16.0 / 2.0)
    assert mask["encoder"]["layer_0"]["attention"]["query"]["bias"]
    assert not mask["encoder"]["layer_0"]["attention"]["key"]["bias"]


def test_layer_decay_scales():
    scales = optim.layer_scales(
        {
            "embeddings": {"a": 0},
            "encoder": {f"layer_{i}": {"w": 0} for i in range(3)},
            "head": {"b": 0},
        },
        0.5,
    )
    assert scales["encoder"]["layer_2"]["w"] == 0.5 and scales["encoder"]["layer_0"]["w"] == 0.125
    assert scales["embeddings"]["a"] == 0.0625 and scales["head"]["b"] == 1.0


def test_summary_counts(base):
    _, params = base
    new, mask = peft.apply(params, "frozen")
    text = peft.summary(new, mask)
    assert text.splitlines()[0].startswith(f"trainable params: {32 * 3 + 3:,} / ")
    assert "head" in text


def test_prompt_and_prefix_change_outputs_and_keep_shapes(base):
    model, params = base
    batch = _batch()
    reference = _logits(model, params, batch)
    for name in ("prompt", "prefix"):
        new, _ = peft.apply(params, _cfg(name, **{f"{name}.length": 5}), jax.random.key(0))
        logits = _logits(model, new, batch)
        assert logits.shape == reference.shape and np.isfinite(np.asarray(logits)).all()
        assert not np.allclose(logits, reference)


def test_layer_decay_scales_the_whole_adamw_update():
    import ml_collections

    params = {
        "embeddings": {"w": jnp.ones((2,))},
        "encoder": {f"layer_{i}": {"kernel": jnp.ones((2,))} for i in range(2)},
        "head": {"kernel": jnp.ones((2,))},
    }
    grads = jax.tree_util.tree_map(lambda x: 0.3 * x, params)

    def first_updates(decay):
        cfg = ml_collections.ConfigDict(
            dict(
                lr=1e-2,
                schedule="constant",
                warmup_ratio=0.0,
                warmup_steps=1,
                clip_norm=0.0,
                b1=0.9,
                b2=0.999,
                eps=1e-8,
                weight_decay=0.1,
                layer_decay=decay,
            )
        )
        tx, _ = optim.make(cfg, params, total_steps=10)
        state = tx.init(params)
        _, state = tx.update(grads, state, params)  # step 0 has lr 0 (warmup)
        updates, _ = tx.update(grads, state, params)
        return updates

    plain, decayed = first_updates(1.0), first_updates(0.5)
    ratio = jax.tree_util.tree_map(lambda a, b: float(b[0] / a[0]), plain, decayed)
    assert ratio == {
        "embeddings": {"w": pytest.approx(0.125)},
        "encoder": {
            "layer_0": {"kernel": pytest.approx(0.25)},
            "layer_1": {"kernel": pytest.approx(0.5)},
        },
        "head": {"kernel": pytest.approx(1.0)},
    }
