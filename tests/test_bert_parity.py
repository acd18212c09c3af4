"""The Flax BERT/RoBERTa port against Hugging Face PyTorch, in float32 (max abs diff <= 1e-4)."""

import numpy as np
import pytest

import jaxft
from tests.conftest import needs_torch

pytestmark = needs_torch
TOL = 1e-4


def _batch(vocab, pad_id=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(pad_id + 3, vocab, size=(3, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # padded rows exercise the attention mask
    mask[2, 4:] = 0
    ids = np.where(mask == 1, ids, pad_id)
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def _torch_out(model, ids, mask, types=None):
    import torch

    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        return model(**kwargs)


def _max_diff(a, b, mask=None):
    a, b = np.asarray(a), np.asarray(b.detach().numpy() if hasattr(b, "detach") else b)
    if mask is not None:  # hidden states of padding positions are not compared
        keep = mask.astype(bool)
        a, b = a[keep], b[keep]
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_backbone_matches_hf(tmp_path, kind):
    from tests.hf_fixtures import save_tiny

    folder, hf_model = save_tiny(tmp_path, kind)
    model, params = jaxft.from_pretrained(folder)
    pad = hf_model.config.pad_token_id
    ids, mask, types = _batch(hf_model.config.vocab_size, pad)
    if kind == "roberta":
        types = np.zeros_like(types)
    ref = _torch_out(hf_model, ids, mask, types)
    out = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
    assert _max_diff(out.last_hidden_state, ref.last_hidden_state, mask) <= TOL
    assert _max_diff(out.pooler_output, ref.pooler_output) <= TOL


def test_sequence_classification_logits_match_hf(tmp_path):
    from tests.hf_fixtures import save_tiny

    folder, hf_model = save_tiny(tmp_path, "bert", task="classification", num_labels=3)
    model, params = jaxft.from_pretrained(folder, head="classification", num_labels=3)
    # The head came from the checkpoint ("classifier.*"), not a fresh init.
    np.testing.assert_array_equal(
        params["head"]["classifier"]["bias"], hf_model.classifier.bias.detach().numpy()
    )
    ids, mask, types = _batch(hf_model.config.vocab_size)
    ref = _torch_out(hf_model, ids, mask, types)
    out = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
    assert _max_diff(out.logits, ref.logits) <= TOL


def test_real_minilm_matches_hf(minilm_dir):
    import transformers

    hf_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    enc = tok(
        [
            "a gorgeous, witty, seductive movie.",
            "the plot is nothing but boilerplate clichés from start to finish, " * 3,
            "meh",
        ],
        padding=True,
        return_tensors="np",
    )
    ref = _torch_out(hf_model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    model, params = jaxft.from_pretrained(minilm_dir)
    out = model.apply(
        {"params": params},
        enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=enc["token_type_ids"],
    )
    assert _max_diff(out.last_hidden_state, ref.last_hidden_state, enc["attention_mask"]) <= TOL
    assert _max_diff(out.pooler_output, ref.pooler_output) <= TOL
