"""The Flax T5 port against Hugging Face PyTorch on tiny random configs, in float32."""

import numpy as np
import pytest

import jaxft
from jaxft.models import t5
from tests.conftest import needs_torch

pytestmark = needs_torch
TOL = 1e-4
VERSIONS = {
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def _save(tmp_path, version, encoder_only=False, decoder_layers=3):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=99,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_decoder_layers=decoder_layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        **VERSIONS[version],
    )
    cls = transformers.T5EncoderModel if encoder_only else transformers.T5ForConditionalGeneration
    model = cls(config).eval()
    with torch.no_grad():  # norms away from 1, so a mapping slip cannot hide
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path / f"t5-{version}-{'enc' if encoder_only else 'seq2seq'}"
    model.save_pretrained(folder)
    return folder, model


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 99, size=(3, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids = np.where(mask == 1, ids, 0)
    labels = rng.integers(2, 99, size=(3, 6)).astype(np.int64)
    labels[1, 4:] = -100  # ignored positions, as HF pads labels
    return ids, mask, labels


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_seq2seq_matches_hf(tmp_path, version):
    import optax
    import torch

    folder, hf_model = _save(tmp_path, version)
    ids, mask, labels = _inputs()
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    decoder_ids = np.asarray(
        t5.shift_right(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    )
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(decoder_ids),
            labels=torch.tensor(labels),
        )
    out = model.apply({"params": params}, ids, attention_mask=mask, decoder_input_ids=decoder_ids)
    keep = mask.astype(bool)
    encoder_ref = ref.encoder_last_hidden_state.numpy()
    assert np.max(np.abs(np.asarray(out.last_hidden_state)[keep] - encoder_ref[keep])) <= TOL
    assert np.max(np.abs(np.asarray(out.logits) - ref.logits.numpy())) <= TOL
    valid = labels != -100
    losses = optax.softmax_cross_entropy_with_integer_labels(out.logits, np.where(valid, labels, 0))
    loss = float(np.sum(np.asarray(losses) * valid) / valid.sum())
    assert abs(loss - float(ref.loss)) <= TOL


def test_untied_lm_head_checkpoint(tmp_path):
    """A v1.1-style file (own lm_head.weight, tie_word_embeddings false) loads an untied head."""
    import json

    from safetensors.numpy import load_file, save_file

    folder, _ = _save(tmp_path, "v1.1")  # transformers 5 saves v1.1 tied, without scaling
    ids, mask, labels = _inputs()
    tied, tied_params = jaxft.from_pretrained(folder, head="seq2seq")
    decoder_ids = t5.shift_right(labels, 0, 0)
    reference = tied.apply(
        {"params": tied_params}, ids, attention_mask=mask, decoder_input_ids=decoder_ids
    ).logits
    state = load_file(str(folder / "model.safetensors"))
    state["lm_head.weight"] = state["shared.weight"].copy()
    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config.update(tie_word_embeddings=False)
    config.pop("scale_decoder_outputs", None)
    (folder / "config.json").write_text(json.dumps(config))
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    assert not model.config.tie_word_embeddings and not model.config.scale_decoder_outputs
    assert params["lm_head"]["kernel"].shape == (32, 99)
    logits = model.apply(
        {"params": params}, ids, attention_mask=mask, decoder_input_ids=decoder_ids
    ).logits
    np.testing.assert_allclose(np.asarray(logits), np.asarray(reference), atol=1e-5)


def test_encoder_only_matches_hf(tmp_path):
    import torch

    folder, hf_model = _save(tmp_path, "v1.1", encoder_only=True)
    ids, mask, _ = _inputs(1)
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    model, params = jaxft.from_pretrained(folder)
    assert model.encoder_only and "decoder" not in params
    out = model.apply({"params": params}, ids, attention_mask=mask)
    keep = mask.astype(bool)
    diff = np.abs(np.asarray(out.last_hidden_state)[keep] - ref.last_hidden_state.numpy()[keep])
    assert diff.max() <= TOL


def test_relative_position_buckets_match_hf():
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-300, 300)
    for bidirectional in (True, False):
        ours = t5.relative_position_bucket(rel, bidirectional, 32, 128)
        theirs = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional, 32, 128)
        np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def _randomise(hf_model, folder):
    """Large random weights (std 0.6) give varied generations, with an early EOS for v1.1."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if "layer_norm" not in name:
                p.normal_(0, 0.6)
    hf_model.save_pretrained(folder)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_greedy_generation_matches_hf(tmp_path, version):
    import torch

    from jaxft import generate

    # HF's generation cache sizes itself by num_layers, so keep the decoder as deep here.
    folder, hf_model = _save(tmp_path, version, decoder_layers=2)
    _randomise(hf_model, folder)
    ids, mask, _ = _inputs(2)
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    with torch.no_grad():
        ref = hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            max_new_tokens=12,
            do_sample=False,
            num_beams=1,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    ours = generate.trim(generate.greedy(model, params, ids, mask, 12), eos_id=1)
    if version == "v1.1":
        assert len(np.unique(ref.numpy())) > 10 and 1 in ref.numpy()  # varied, with an EOS
    np.testing.assert_array_equal(ours, ref.numpy())


def test_cached_decoding_equals_full_decoding(tmp_path):
    """Step-by-step logits with the cache equal one teacher-forced pass over the same tokens."""
    folder, _ = _save(tmp_path, "v1.0")
    ids, mask, labels = _inputs(3)
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    decoder_ids = np.asarray(t5.shift_right(np.where(labels < 0, 0, labels), 0, 0))
    full = model.apply(
        {"params": params}, ids, attention_mask=mask, decoder_input_ids=decoder_ids
    ).logits
    memory = model.apply({"params": params}, ids, mask, method=t5.T5Model.encode)
    _, variables = model.apply(
        {"params": params},
        np.zeros_like(decoder_ids),
        memory,
        mask,
        decode=True,
        method=t5.T5Model.decode,
        mutable=["cache"],
    )
    cache = variables["cache"]
    for t in range(decoder_ids.shape[1]):
        logits, variables = model.apply(
            {"params": params, "cache": cache},
            decoder_ids[:, t : t + 1],
            memory,
            mask,
            decode=True,
            method=t5.T5Model.decode,
            mutable=["cache"],
        )
        cache = variables["cache"]
        np.testing.assert_allclose(np.asarray(logits[:, 0]), np.asarray(full[:, t]), atol=1e-5)


@pytest.mark.parametrize(
    "early_stopping, length_penalty", [(False, 1.0), (True, 0.6), ("never", 1.5)]
)
def test_beam_search_matches_hf(tmp_path, early_stopping, length_penalty):
    import torch

    from jaxft import generate

    folder, hf_model = _save(tmp_path, "v1.1", decoder_layers=2)
    _randomise(hf_model, folder)
    ids, mask, _ = _inputs(2)
    with torch.no_grad():
        ref = hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            max_new_tokens=10,
            do_sample=False,
            num_beams=4,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    model, params = jaxft.from_pretrained(folder, head="seq2seq")
    ours = generate.trim_beams(
        generate.beam_search(
            model,
            params,
            ids,
            mask,
            max_new_tokens=10,
            num_beams=4,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
        )
    )
    np.testing.assert_array_equal(ours, ref.numpy())
