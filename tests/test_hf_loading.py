"""Checkpoint import: prefixes, legacy names, .bin files, and the errors for bad checkpoints."""

import json
import logging

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxft
from jaxft.errors import UserError
from tests.conftest import needs_torch

pytestmark = needs_torch


@pytest.fixture
def tiny(tmp_path):
    from tests.hf_fixtures import save_tiny

    folder, _ = save_tiny(tmp_path, "bert")
    return folder


def _rewrite(folder, edit):
    state = load_file(str(folder / "model.safetensors"))
    save_file(edit(dict(state)), str(folder / "model.safetensors"))


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is not a directory.*config.json"):
        jaxft.from_pretrained(tmp_path / "nope")
    with pytest.raises(UserError, match="has no config.json"):
        jaxft.from_pretrained(tmp_path)


def test_wrong_shape_names_the_key_and_both_shapes(tiny):
    key = "encoder.layer.1.intermediate.dense.weight"
    _rewrite(tiny, lambda s: {**s, key: np.zeros((5, 32), np.float32)})
    with pytest.raises(UserError, match=rf"{key}: checkpoint \(32, 5\), model \(32, 37\)"):
        jaxft.from_pretrained(tiny)


def test_missing_key_is_named(tiny):
    _rewrite(tiny, lambda s: {k: v for k, v in s.items() if "pooler" not in k})
    with pytest.raises(UserError, match="lacks 2 expected key.*pooler.dense"):
        jaxft.from_pretrained(tiny)


def test_unexpected_keys_are_logged_and_legacy_names_read(tiny, caplog):
    reference = jaxft.from_pretrained(tiny)[1]

    def legacy(state):
        out = {}
        for k, v in state.items():
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            )
            out["bert." + k] = v  # a BertForPreTraining-style prefixed checkpoint
        out["cls.predictions.bias"] = np.zeros(3, np.float32)
        return out

    _rewrite(tiny, legacy)
    with caplog.at_level(logging.WARNING):
        params = jaxft.from_pretrained(tiny)[1]
    assert "cls.predictions.bias" in caplog.text
    np.testing.assert_array_equal(
        params["embeddings"]["norm"]["scale"], reference["embeddings"]["norm"]["scale"]
    )


def test_torch_bin_checkpoint(tiny):
    import torch

    reference = jaxft.from_pretrained(tiny)[1]
    state = {k: torch.tensor(v) for k, v in load_file(str(tiny / "model.safetensors")).items()}
    torch.save(state, tiny / "pytorch_model.bin")
    (tiny / "model.safetensors").unlink()
    params = jaxft.from_pretrained(tiny)[1]
    np.testing.assert_array_equal(
        params["encoder"]["layer_0"]["attention"]["query"]["kernel"],
        reference["encoder"]["layer_0"]["attention"]["query"]["kernel"],
    )


def test_unsupported_model_type(tiny):
    config = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UserError, match="model_type='gpt2'"):
        jaxft.from_pretrained(tiny)


def test_new_head_is_initialised_and_logged(tiny, caplog):
    with caplog.at_level(logging.INFO):
        model, params = jaxft.from_pretrained(tiny, head="classification", num_labels=4)
    assert "new head initialised" in caplog.text
    assert params["head"]["classifier"]["kernel"].shape == (32, 4)
    out = model.apply({"params": params}, np.ones((2, 5), np.int32))
    assert out.logits.shape == (2, 4)


def test_bfloat16_compute_keeps_float32_params_and_stays_close(tiny):
    model32, params = jaxft.from_pretrained(tiny)
    model16, params16 = jaxft.from_pretrained(tiny, dtype="bfloat16")
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(params16))
    ids = np.arange(2, 26).reshape(2, 12)
    a = model32.apply({"params": params}, ids).last_hidden_state
    b = model16.apply({"params": params16}, ids).last_hidden_state
    assert np.isfinite(np.asarray(b)).all()
    assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) < 0.1


@pytest.mark.parametrize(("classifier_dropout", "expected"), [(0.0, 0.0), (0.3, 0.3), (None, 0.1)])
def test_head_dropout_follows_classifier_dropout(tiny, classifier_dropout, expected):
    """As HF's heads: `classifier_dropout` when set (0.0 included), else the hidden dropout."""
    config_path = tiny / "config.json"
    config = json.loads(config_path.read_text())
    config.update(classifier_dropout=classifier_dropout, hidden_dropout_prob=0.1)
    config_path.write_text(json.dumps(config))
    model, _ = jaxft.from_pretrained(tiny, head="classification", num_labels=2)
    assert model.head.dropout == expected
