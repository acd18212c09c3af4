"""Tiny random Hugging Face checkpoints written with `save_pretrained`, for parity tests."""

import torch
import transformers

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)


def save_tiny(tmp_path, kind="bert", task=None, num_labels=3, **overrides):
    """Save a random tiny BERT/RoBERTa (optionally a ...ForSequenceClassification) and return
    (folder, torch model in eval mode)."""
    torch.manual_seed(0)
    cfg = dict(TINY, **overrides)
    if kind == "roberta":
        cfg.update(
            pad_token_id=1,
            max_position_embeddings=cfg["max_position_embeddings"] + 2,
            type_vocab_size=1,
        )
        config = transformers.RobertaConfig(**cfg)
        cls = transformers.RobertaForSequenceClassification if task else transformers.RobertaModel
    else:
        config = transformers.BertConfig(**cfg)
        cls = transformers.BertForSequenceClassification if task else transformers.BertModel
    if task:
        config.num_labels = num_labels
    model = cls(config).eval()
    # Non-trivial LayerNorm and bias values, so a mapping slip cannot hide behind ones/zeros.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path / f"{kind}-{task or 'base'}"
    model.save_pretrained(folder)
    return folder, model
