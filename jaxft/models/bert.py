"""BERT family (BERT, RoBERTa, MiniLM) in Flax linen, with the Hugging Face name map.

Parameter paths (what strategies select with regexes):

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/norm/{scale,bias}
    encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}
    encoder/layer_{i}/attention_norm/{scale,bias}
    encoder/layer_{i}/{intermediate,output}/{kernel,bias}
    encoder/layer_{i}/output_norm/{scale,bias}
    pooler/{kernel,bias}
    head/...                               (task head, see heads.py)
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxft.models import heads as heads_lib
from jaxft.models.layers import (
    Dense,
    Dtype,
    LayerNorm,
    activation,
    attention_bias,
    attention_weights,
)
from jaxft.models.outputs import ModelOutput

# model_type values in config.json that this port reads, and the prefix their task checkpoints
# put in front of backbone keys ("bert.encoder.layer.0..." in BertForSequenceClassification).
MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"
    # Whether the checkpoint has a pooler (Dense + tanh over the first token).
    add_pooling_layer: bool = True

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> "BertConfig":
        """From the dict of a Hugging Face `config.json` (unknown fields are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in fields and v is not None}
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf['position_embedding_type']!r} is not supported; "
                "jaxft's BERT port implements absolute position embeddings only"
            )
        return cls(**kwargs)

    @property
    def is_roberta(self) -> bool:
        return MODEL_TYPES.get(self.model_type) == "roberta"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def roberta_position_ids(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """RoBERTa numbers real tokens from pad_token_id + 1; padding keeps pad_token_id."""
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=1) * not_pad + pad_token_id


class Embeddings(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic):
        c = self.config
        init = nn.initializers.normal(0.02)
        embed = lambda n, size: nn.Embed(size, c.hidden_size, embedding_init=init, name=n)
        x = (
            embed("word_embeddings", c.vocab_size)(input_ids)
            + embed("position_embeddings", c.max_position_embeddings)(position_ids)
            + embed("token_type_embeddings", c.type_vocab_size)(token_type_ids)
        )
        x = LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="norm")(x)
        return nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic):
        c = self.config
        dense = lambda n: Dense(c.hidden_size, dtype=self.dtype, name=n)
        heads = lambda t: t.reshape(t.shape[:2] + (c.num_attention_heads, c.head_dim))
        q, k, v = (heads(dense(n)(x)) for n in ("query", "key", "value"))
        probs = attention_weights(q, k, bias)
        probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
        return dense("output")(context.reshape(x.shape[:2] + (c.hidden_size,)))


class Layer(nn.Module):
    """Post-norm transformer block: x = norm(x + attn(x)); x = norm(x + ffn(x))."""

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic):
        c = self.config
        drop = lambda t: nn.Dropout(c.hidden_dropout_prob)(t, deterministic=deterministic)
        norm = lambda n: LayerNorm(c.layer_norm_eps, dtype=self.dtype, name=n)
        attended = SelfAttention(c, self.dtype, name="attention")(x, bias, deterministic)
        x = norm("attention_norm")(x + drop(attended))
        h = Dense(c.intermediate_size, dtype=self.dtype, name="intermediate")(x)
        h = Dense(c.hidden_size, dtype=self.dtype, name="output")(activation(c.hidden_act)(h))
        return norm("output_norm")(x + drop(h))


class Encoder(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic):
        for i in range(self.config.num_hidden_layers):
            x = Layer(self.config, self.dtype, name=f"layer_{i}")(x, bias, deterministic)
        return x


class BertModel(nn.Module):
    """BERT/RoBERTa encoder with an optional task head.

    Returns a `ModelOutput` with `last_hidden_state` [batch, len, hidden], `pooler_output`
    [batch, hidden] (None without a pooler) and `logits` (None without a head), all float32.
    """

    config: BertConfig
    head: heads_lib.HeadConfig | None = None
    dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        deterministic: bool = True,
    ) -> ModelOutput:
        c = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            if c.is_roberta:
                position_ids = roberta_position_ids(input_ids, c.pad_token_id)
            else:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)

        x = Embeddings(c, self.dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, deterministic
        )
        x = Encoder(c, self.dtype, name="encoder")(x, attention_bias(attention_mask), deterministic)
        pooled = None
        if c.add_pooling_layer:
            pooled = jnp.tanh(Dense(c.hidden_size, dtype=self.dtype, name="pooler")(x[:, 0]))
            pooled = pooled.astype(jnp.float32)
        logits = None
        if self.head is not None:
            logits = heads_lib.build(self.head, self.dtype, name="head")(
                x, pooled, attention_mask, deterministic
            )
        return ModelOutput(
            last_hidden_state=x.astype(jnp.float32), pooler_output=pooled, logits=logits
        )


# --- Hugging Face name map ------------------------------------------------------------------
# Each entry: our '/'-joined path -> (HF key without the model prefix, kind). The kind says how
# the tensor is laid out: torch Linear stores [out, in], Flax kernels are [in, out].

LINEAR, COPY = "linear", "copy"


def hf_name_map(config: BertConfig) -> dict[str, tuple[str, str]]:
    names = {
        "embeddings/word_embeddings/embedding": ("embeddings.word_embeddings.weight", COPY),
        "embeddings/position_embeddings/embedding": ("embeddings.position_embeddings.weight", COPY),
        "embeddings/token_type_embeddings/embedding": (
            "embeddings.token_type_embeddings.weight",
            COPY,
        ),
        "embeddings/norm/scale": ("embeddings.LayerNorm.weight", COPY),
        "embeddings/norm/bias": ("embeddings.LayerNorm.bias", COPY),
    }
    ours_to_hf = {
        "attention/query": "attention.self.query",
        "attention/key": "attention.self.key",
        "attention/value": "attention.self.value",
        "attention/output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }
    norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
    for i in range(config.num_hidden_layers):
        for ours, theirs in ours_to_hf.items():
            names[f"encoder/layer_{i}/{ours}/kernel"] = (
                f"encoder.layer.{i}.{theirs}.weight",
                LINEAR,
            )
            names[f"encoder/layer_{i}/{ours}/bias"] = (f"encoder.layer.{i}.{theirs}.bias", COPY)
        for ours, theirs in norms.items():
            names[f"encoder/layer_{i}/{ours}/scale"] = (f"encoder.layer.{i}.{theirs}.weight", COPY)
            names[f"encoder/layer_{i}/{ours}/bias"] = (f"encoder.layer.{i}.{theirs}.bias", COPY)
    if config.add_pooling_layer:
        names["pooler/kernel"] = ("pooler.dense.weight", LINEAR)
        names["pooler/bias"] = ("pooler.dense.bias", COPY)
    return names


def to_flax(array: np.ndarray, kind: str) -> np.ndarray:
    return array.T if kind == LINEAR else array


def to_hf(array: np.ndarray, kind: str) -> np.ndarray:
    return array.T if kind == LINEAR else array


# Buffers some checkpoints carry that are not parameters.
IGNORED_HF_KEYS = (r"embeddings\.position_ids$",)
