"""`BertModel(head_only=True)`: under a [CLS]-pooled sequence head the last layer computes the
first position only. Logits and gradients must not change, for every strategy's extra leaves."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft import peft
from jaxft.models import bert, heads
from jaxft.train import step

CONFIG = bert.BertConfig(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
)


def _batch(b=3, n=10):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(b, n)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _model(strategy="full", config=CONFIG, head=None, **settings):
    cfg = peft.defaults()
    cfg.name = strategy
    for key, value in settings.items():
        section, field = key.split(".")
        cfg[section][field] = value
    config = dataclasses.replace(config, **peft.model_options(cfg))
    model = bert.BertModel(config, head=head or heads.HeadConfig(num_labels=3))
    params = model.init(jax.random.key(1), jnp.ones((1, 8), jnp.int32))["params"]
    params = jax.tree_util.tree_map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), params
    )
    params, _ = peft.apply(params, cfg, jax.random.key(3))
    # Non-zero LoRA B, adapter up-projections and prefixes, so every branch is exercised.
    params = jax.tree_util.tree_map(lambda x: x + 0.01, params)
    return model, params


def _run(model, params, head_only):
    batch = _batch()
    return model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        head_only=head_only,
    )


@pytest.mark.parametrize(
    "strategy, settings",
    [
        ("full", {}),
        ("lora", {"lora.targets": (".*",)}),
        ("adapters", {}),
        ("ia3", {}),
        ("prefix", {"prefix.length": 3}),
        ("prompt", {"prompt.length": 2}),
    ],
)
def test_the_logits_and_their_gradients_are_the_same(strategy, settings):
    model, params = _model(strategy, **settings)
    full, pruned = _run(model, params, False), _run(model, params, True)
    assert full.last_hidden_state.shape[1] > 1 and pruned.last_hidden_state.shape[1] == 1
    np.testing.assert_allclose(pruned.logits, full.logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(pruned.pooler_output, full.pooler_output, atol=1e-5, rtol=1e-5)
    grad = lambda head_only: jax.grad(lambda p: jnp.sum(_run(model, p, head_only).logits ** 2))
    for a, b in zip(
        jax.tree_util.tree_leaves(grad(True)(params)),
        jax.tree_util.tree_leaves(grad(False)(params)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_only_heads_that_read_the_first_position_prune():
    for head in (
        heads.HeadConfig(num_labels=2, pooling="mean"),
        heads.HeadConfig(kind="token_classification", num_labels=4),
        heads.HeadConfig(kind="question_answering", num_labels=2),
    ):
        model, params = _model(head=head)
        out = _run(model, params, True)
        assert out.last_hidden_state.shape[1] == 10
        np.testing.assert_allclose(out.logits, _run(model, params, False).logits, atol=1e-6)
    no_pooler = dataclasses.replace(CONFIG, add_pooling_layer=False)
    model, params = _model(config=no_pooler)
    assert _run(model, params, True).last_hidden_state.shape[1] == 10


@pytest.mark.parametrize("variant", ["remat", "scan"])
def test_remat_and_scanned_layers(variant):
    config = dataclasses.replace(
        CONFIG, remat="dots" if variant == "remat" else "none", scan_layers=variant == "scan"
    )
    model, params = _model(config=config)
    full, pruned = _run(model, params, False), _run(model, params, True)
    np.testing.assert_allclose(pruned.logits, full.logits, atol=1e-5, rtol=1e-5)
    rows = 1 if variant == "remat" else 10  # scanned layers share one body: no pruning
    assert pruned.last_hidden_state.shape[1] == rows


def test_the_train_step_prunes_and_drops_out():
    """In training the pruned layer's dropout masks take its one row; the step's loss moves
    with the dropout key and matches the unpruned model's without dropout."""
    model, params = _model("lora", **{"lora.dropout": 0.1})
    batch = dict(_batch(), labels=np.array([0, 1, 2], np.int32), weights=np.ones(3, np.float32))

    def loss(p, rng, deterministic):
        out = step.forward(model, p, batch, deterministic=deterministic, rng=rng)
        return step.loss_fn(out.logits, batch["labels"], batch["weights"], False), out

    first, out = loss(params, jax.random.key(0), False)
    second, _ = loss(params, jax.random.key(1), False)
    assert out.last_hidden_state.shape[1] == 1 and float(first) != float(second)
    plain, _ = loss(params, None, True)
    full = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    expected = step.loss_fn(full.logits, batch["labels"], batch["weights"], False)
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
