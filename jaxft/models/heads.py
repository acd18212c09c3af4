"""Task heads on top of an encoder: sequence classification and regression, token
classification (a label per token, for NER) and extractive question answering (a start and an
end logit per token).

A head sees the encoder's last hidden state, its pooler output and the attention mask, and
returns float32 logits: [batch, num_labels], [batch, tokens, num_labels] per token, or
[batch, tokens, 2] for spans. Its parameters live under `head/` so strategies can select them.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from jaxft.models.dropout import Dropout, apply_mask
from jaxft.models.layers import Dense, Dtype

HEAD_KINDS = ("classification", "token_classification", "question_answering")
POOLINGS = ("cls", "mean")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    kind: str = "classification"
    # Number of outputs; 1 means regression (mean squared error), as in Hugging Face.
    num_labels: int = 2
    # "cls": the pooler output (Dense+tanh over [CLS]), as BertForSequenceClassification;
    # "mean": the mask-weighted mean of the last hidden state (sentence-transformers models).
    pooling: str = "cls"
    dropout: float = 0.1

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head {self.kind!r}; known: {HEAD_KINDS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; known: {POOLINGS}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")


def mean_pool(hidden, attention_mask):
    """Average of the hidden states of real (mask=1) tokens, in float32."""
    weights = attention_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


def pool(config: HeadConfig, hidden, pooled, attention_mask):
    """The head's input: every token's hidden state (token classification), else the pooler
    output ("cls") or the masked mean of hidden states."""
    if config.kind in ("token_classification", "question_answering"):
        return hidden
    if config.pooling == "mean" or pooled is None:
        return mean_pool(hidden, attention_mask)
    return pooled


def dropout_site(config: HeadConfig, hidden_shape: tuple) -> tuple:
    """(rate, shape) of the head's dropout mask over its input (`pool`'s output) for an encoder
    output of `hidden_shape`, so the model draws it with its other masks (`dropout.site_masks`);
    shape None for a head without dropout."""
    if config.kind == "question_answering":
        return (0.0, None)
    per_token = config.kind == "token_classification"
    return (config.dropout, hidden_shape if per_token else (hidden_shape[0], hidden_shape[-1]))


class ClassificationHead(nn.Module):
    """dropout -> Dense(num_labels) over pooled features (BertForSequenceClassification) or over
    every token's hidden state (BertForTokenClassification): the same layers either way."""

    config: HeadConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features, deterministic, keep=None):
        """`keep`: the dropout mask, of `dropout_site`'s shape, drawn by the model; without it
        the head draws its own."""
        if keep is None:
            features = Dropout(self.config.dropout)(features, deterministic=deterministic)
        else:
            features = apply_mask(features, self.config.dropout, keep)
        logits = Dense(self.config.num_labels, dtype=self.dtype, name="classifier")(features)
        return logits.astype(jnp.float32)


class SpanHead(nn.Module):
    """Dense(2) on every hidden state: start and end logits, as BertForQuestionAnswering's
    `qa_outputs` (no dropout). Logits [batch, tokens, 2]."""

    config: HeadConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden, deterministic, keep=None):
        del deterministic, keep
        return Dense(2, dtype=self.dtype, name="qa_outputs")(hidden).astype(jnp.float32)


def build(config: HeadConfig, dtype, name: str) -> nn.Module:
    if config.kind == "question_answering":
        return SpanHead(config, dtype, name=name)
    return ClassificationHead(config, dtype, name=name)


def hf_name_map(config: HeadConfig) -> dict[str, tuple[str, str]]:
    """Head paths -> keys in a Hugging Face *ForSequenceClassification or
    *ForTokenClassification checkpoint (both name the layer `classifier`), or a
    *ForQuestionAnswering one (`qa_outputs`)."""
    layer = "qa_outputs" if config.kind == "question_answering" else "classifier"
    return {
        f"head/{layer}/kernel": (f"{layer}.weight", "linear"),
        f"head/{layer}/bias": (f"{layer}.bias", "copy"),
    }
