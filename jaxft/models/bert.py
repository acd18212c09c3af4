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

from jaxft.models import attention as attention_lib
from jaxft.models import flash
from jaxft.models import heads as heads_lib
from jaxft.models import layers as layers_lib
from jaxft.models.dropout import SeedSite, apply_mask, grouped_site_masks, site_masks
from jaxft.models.layers import Adapter, Dense, Dtype, activation, remat_policy
from jaxft.models.norms import LayerNorm
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
    # Set by strategies, not read from Hugging Face configs:
    lora_dropout: float = 0.0  # dropout on the input of LoRA branches
    adapter_activation: str = "relu"  # nonlinearity inside bottleneck adapters
    # How dropout masks are cut from the model's one bank (dropout.keep_masks): "runtime"
    # (each layer's readers compile once), "static" (no copy: a frozen backbone's choice).
    dropout_offsets: str = "runtime"
    # Speed options, set by the experiment (top-level config keys of the same names):
    # auto | explicit | fused | cudnn_dropout | flash: attention.attention_kernel
    attention: str = "auto"
    dropout_seed: int = 0  # the run's seed, for cuDNN's attention dropout (compile-time seeds)
    scan_layers: bool = False  # one compiled layer body applied by lax.scan
    remat: str = "none"  # none | full | dots: recompute layer activations in the backward pass

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
    """Word + position + token-type embeddings and LayerNorm (their dropout, the model applies
    with its other masks).

    With a `prompt` leaf [n, hidden] (prompt tuning), its n learned vectors are put in front of
    the word embeddings; the caller has already lengthened the position, type and mask inputs.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids):
        c = self.config
        init = nn.initializers.normal(0.02)
        embed = lambda n, size: nn.Embed(size, c.hidden_size, embedding_init=init, name=n)
        words = embed("word_embeddings", c.vocab_size)(input_ids)
        if self.has_variable("params", "prompt"):
            prompt = self.get_variable("params", "prompt").astype(words.dtype)
            prompt = jnp.broadcast_to(prompt, (words.shape[0],) + prompt.shape)
            words = jnp.concatenate([prompt, words], axis=1)
        x = (
            words
            + embed("position_embeddings", c.max_position_embeddings)(position_ids)
            + embed("token_type_embeddings", c.type_vocab_size)(token_type_ids)
        )
        return LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="norm")(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention and its output projection.

    With `prefix_key`/`prefix_value` leaves [n, hidden] (prefix tuning), n learned key/value
    vectors are put in front of every sequence's keys and values, always attended to.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic, probs_keep=None, lora_keeps=None, queries=None):
        """`probs_keep`: the attention probabilities' dropout mask (`layer_dropout_sites`), or
        the examples' seeds for jaxft's flash kernel;
        `lora_keeps`: {(projection,): its LoRA input's dropout mask}; `queries`: the rows that
        attend (default: every row of `x`; keys and values are always every row)."""
        c = self.config
        lora_keeps = lora_keeps or {}
        pruned = queries is not None
        queries = x if queries is None else queries
        dense = lambda n: Dense(
            c.hidden_size, dtype=self.dtype, lora_dropout=c.lora_dropout, name=n
        )
        project = lambda n, t: dense(n)(t, deterministic, lora_keeps.get((n,)))
        heads = lambda t: t.reshape(t.shape[:-1] + (c.num_attention_heads, c.head_dim))
        rate = 0.0 if deterministic else c.attention_probs_dropout_prob
        if self._kernel(rate, x.shape[1], pruned) == "flash":  # probs_keep: the examples' seeds
            qkv, bias = self._packed_projections(x, deterministic, lora_keeps) or (None, None)
            if qkv is None:
                qkv = jnp.stack([heads(project(n, x)) for n in ("query", "key", "value")], 2)
            lengths = attention_lib.key_lengths(mask)
            scale = c.head_dim**-0.5
            context = flash.attention_packed(qkv, lengths, probs_keep, rate, scale, bias=bias)
            return project("output", context.reshape(x.shape))
        q = heads(project("query", queries))
        k, v = (heads(project(n, x)) for n in ("key", "value"))
        if self._prefixed():

            def prefix(name):
                learned = heads(self.get_variable("params", name))
                return layers_lib.rows_of(learned, (x.shape[0],) + learned.shape, k.dtype)

            k = jnp.concatenate([prefix("prefix_key"), k], axis=1)
            v = jnp.concatenate([prefix("prefix_value"), v], axis=1)
        kernel = self._kernel(rate, k.shape[1], pruned)
        if kernel is not None:
            seed = attention_lib.call_seed(c.dropout_seed, self.scope.path)
            lengths = attention_lib.key_lengths(mask)
            context = attention_lib.fused_attention(q, k, v, lengths, kernel, rate, seed)
        else:
            # learned prefixes, in front, are always attended to
            bias = attention_lib.attention_bias(mask)
            bias = jnp.pad(bias, [(0, 0)] * 3 + [(k.shape[1] - bias.shape[-1], 0)])
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
            probs = attention_lib.attention_probs(
                scores, (bias,), c.head_dim**-0.5, rate, probs_keep, self.dtype
            )
            context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return project("output", context.reshape(queries.shape[:2] + (c.hidden_size,)))

    def _packed_projections(self, x, deterministic, lora_keeps):
        """(queries, keys and values [batch, seq, 3, heads, head_dim] before their biases, the
        biases [3, heads, head_dim]) from one matmul of the three projections' kernels side by
        side, for the flash kernel, which adds the biases as it reads them (XLA added each of
        the three in a kernel of its own) and writes the packed gradient whose input gradient
        is one matmul (not three, summed). The same sums as the three `Dense` layers, LoRA
        branches included. None where a projection holds other leaves (IA³) or none yet (at
        init)."""
        c = self.config
        names = ("query", "key", "value")
        params = self.variables.get("params", {})
        leaves = [params.get(n, {}) for n in names]
        plain = {"kernel", "bias"}
        lora = plain | {"lora_a", "lora_b", "lora_scale"}
        if not all(set(t) in (plain, lora) for t in leaves):
            return None
        keeps = [lora_keeps.get((n,)) for n in names]
        own_masks = not deterministic and c.lora_dropout  # a branch without one draws its own
        unmasked = ("lora_a" in t and m is None for t, m in zip(leaves, keeps, strict=True))
        if own_masks and any(unmasked):
            return None
        x = x.astype(self.dtype)
        kernel = jnp.concatenate([t["kernel"] for t in leaves], axis=1)
        y = layers_lib.project(x, kernel.astype(self.dtype))
        if any("lora_a" in t for t in leaves):
            zeros = jnp.zeros(x.shape[:-1] + (c.hidden_size,), self.dtype)
            updates = [
                layers_lib.lora_update(x if m is None else apply_mask(x, c.lora_dropout, m), t,
                                       self.dtype) if "lora_a" in t else zeros
                for t, m in zip(leaves, keeps, strict=True)
            ]  # fmt: skip
            y = y + jnp.concatenate(updates, axis=-1)
        parts = (3, c.num_attention_heads, c.head_dim)
        bias = jnp.concatenate([t["bias"] for t in leaves]).reshape(parts)
        return y.reshape(x.shape[:-1] + parts), bias

    def _prefixed(self) -> bool:
        return self.has_variable("params", "prefix_key")

    def _kernel(self, rate: float, keys: int, pruned: bool = False) -> str | None:
        return attention_kernel_for(self.config, self.dtype, rate, keys, self._prefixed(), pruned)


def attention_kernel_for(
    config, dtype, rate: float, keys: int, prefixed: bool, pruned: bool
) -> str | None:
    """The fused kernel that runs a layer's attention over `keys` keys, if any: none with
    learned prefixes, and a layer whose queries are a few rows (`pruned`) keeps the explicit
    path, a small one there."""
    c = config
    return attention_lib.attention_kernel(
        c.attention,
        dtype,
        c.head_dim,
        rate > 0,
        prefixed or pruned,
        c.scan_layers,
        flash_seq=keys if rate < 1 else None,
    )


def layer_dropout_sites(config, dtype, params, x_shape, deterministic, rows=None) -> list:
    """(rate, shape) of each dropout mask a `Layer` applies, in its order: the attention
    probabilities' [batch, heads, queries, keys] (shape None where nothing or cuDNN's kernel
    drops them, a `SeedSite` where jaxft's flash kernel does), the attention output's, the
    feed-forward output's, then each LoRA branch's input's (`lora_input_widths` order).
    `params`: the layer's; `rows`: as `Layer`."""
    c = config
    out = tuple(x_shape) if rows is None else (x_shape[0], rows, x_shape[-1])
    prefix = params.get("attention", {}).get("prefix_key")
    probs_rate = 0.0 if deterministic else c.attention_probs_dropout_prob
    probs = None
    keys = x_shape[1] + (0 if prefix is None else prefix.shape[0])
    kernel = probs_rate > 0 and attention_kernel_for(
        c, dtype, probs_rate, keys, prefix is not None, rows is not None
    )
    if kernel == "flash":
        probs = SeedSite((x_shape[0],))
    elif probs_rate > 0 and not kernel:
        probs = (x_shape[0], c.num_attention_heads, out[1], keys)
    reads_all_rows = {("attention", "key"), ("attention", "value")}
    lora = [
        (c.lora_dropout, (tuple(x_shape) if path in reads_all_rows else out)[:-1] + (width,))
        for path, width in layers_lib.lora_input_widths(params).items()
    ]
    rate = c.hidden_dropout_prob
    return [(c.attention_probs_dropout_prob, probs), (rate, out), (rate, out)] + lora


class Layer(nn.Module):
    """Post-norm transformer block: x = norm(x + attn(x)); x = norm(x + ffn(x)).

    Bottleneck adapters, when their leaves are present, sit on the attention output
    (`adapter_attention`, Houlsby) and on the feed-forward output (`adapter_output`, Houlsby
    and Pfeiffer), before the residual sum.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic, rows=None, masks=None):
        """With `rows`, only the first `rows` positions attend and come out ([batch, rows,
        hidden]); their keys and values are still every position's. `masks`: the dropout
        masks of `layer_dropout_sites`, drawn by the model with all its others (one hash on a GPU,
        one per block elsewhere); the layer draws its own without them (a scanned layer does,
        each trip)."""
        c = self.config
        queries = None if rows is None else x[:, :rows]
        norm = lambda n: LayerNorm(c.layer_norm_eps, dtype=self.dtype, name=n)
        dense = lambda size, n: Dense(size, dtype=self.dtype, lora_dropout=c.lora_dropout, name=n)
        adapt = lambda t, n: (
            Adapter(c.adapter_activation, self.dtype, name=n)(t)
            if self.has_variable("params", n)
            else t
        )
        attention = SelfAttention(c, self.dtype, name="attention")
        rate = c.hidden_dropout_prob
        out = x if queries is None else queries  # the rows that come out
        params = self.variables.get("params", {})
        if masks is None:
            sites = layer_dropout_sites(c, self.dtype, params, x.shape, deterministic, rows)
            masks = site_masks(self, deterministic, sites, c.dropout_offsets)
        probs_keep, attended_keep, output_keep, *lora_masks = masks
        lora_keeps = dict(zip(layers_lib.lora_input_widths(params), lora_masks, strict=True))
        attended = attention(
            x, mask, deterministic, probs_keep, layers_lib.under(lora_keeps, "attention"), queries
        )
        attended = apply_mask(adapt(attended, "adapter_attention"), rate, attended_keep)
        x = norm("attention_norm")(out + attended)
        project = lambda size, n, t: dense(size, n)(t, deterministic, lora_keeps.get((n,)))
        h = project(c.intermediate_size, "intermediate", x)
        h = project(c.hidden_size, "output", activation(c.hidden_act)(h))
        return norm("output_norm")(x + apply_mask(adapt(h, "adapter_output"), rate, output_keep))


class Encoder(nn.Module):
    """The stack of layers: unrolled (one compiled copy per layer), or with `scan_layers` one
    layer body run by `lax.scan` over the layers' parameters stacked at trace time. The
    parameter tree is the same either way (`layer_{i}/...`), so checkpoints, strategies and the
    Hugging Face name map don't depend on it. `remat` recomputes each layer's activations in the
    backward pass instead of storing them, trading compute for activation memory."""

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic, last_rows=None, masks=None):
        """With `last_rows`, the last layer computes the first `last_rows` positions only (the
        output is [batch, last_rows, hidden]), unless the layers are scanned. `masks`: each
        layer's dropout masks (`dropout_sites`), or None for layers that draw their own."""
        c = self.config
        policy = remat_policy(c.remat)
        names = self._names()
        if self._scanned():
            stacked = stack_layers([self.variables["params"][n] for n in names])
            return self._scan(x, mask, deterministic, stacked, policy)
        block = Layer if policy is None else nn.remat(Layer, policy=policy, static_argnums=(3, 4))
        for i, name in enumerate(names):
            rows = last_rows if i == len(names) - 1 else None
            keeps = None if masks is None else masks[i]
            x = block(c, self.dtype, name=name)(x, mask, deterministic, rows, keeps)
        return x

    def dropout_sites(self, x_shape, deterministic, last_rows=None) -> list[list] | None:
        """Each layer's `layer_dropout_sites` for an input of `x_shape`, or None where the
        layers are scanned: the loop body draws its masks on each trip."""
        if self._scanned():
            return None
        params, names = self.variables.get("params", {}), self._names()
        return [
            layer_dropout_sites(
                self.config,
                self.dtype,
                params.get(name, {}),
                x_shape,
                deterministic,
                last_rows if i == len(names) - 1 else None,
            )
            for i, name in enumerate(names)
        ]

    def _names(self) -> list[str]:
        return [f"layer_{i}" for i in range(self.config.num_hidden_layers)]

    def _scanned(self) -> bool:
        if not self.config.scan_layers or self.is_initializing():
            return False
        params = self.variables.get("params", {})
        return same_layout([params[n] for n in self._names()])

    def _scan(self, x, mask, deterministic, stacked, policy):
        layer = Layer(self.config, self.dtype)  # unbound: applied with each layer's params
        n = self.config.num_hidden_layers
        keys = jnp.zeros((n,)) if deterministic else jax.random.split(self.make_rng("dropout"), n)

        def body(x, inputs):
            params, key = inputs
            rngs = None if deterministic else {"dropout": key}
            return layer.apply({"params": params}, x, mask, deterministic, rngs=rngs), None

        if policy is not None:
            body = jax.checkpoint(body, policy=policy)
        return jax.lax.scan(body, x, (stacked, keys))[0]


def same_layout(layers: list) -> bool:
    """Whether the layers' parameter trees agree in structure, shapes and dtypes: stackable."""

    def signature(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return jax.tree_util.tree_structure(tree), [(x.shape, x.dtype) for x in leaves]

    first = signature(layers[0])
    return all(signature(layer) == first for layer in layers[1:])


def stack_layers(layers: list) -> Any:
    """The layers' parameter trees stacked leaf by leaf, or None when they differ in structure,
    shape or dtype (a strategy that touched some layers only): then the stack stays unrolled."""
    if not same_layout(layers):
        return None
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *layers)


class BertModel(nn.Module):
    """BERT/RoBERTa encoder with an optional task head.

    Returns a `ModelOutput` with `last_hidden_state` [batch, len, hidden], `pooler_output`
    [batch, hidden] (None without a pooler) and `logits` (None without a head), all float32.

    `head_only=True` computes only what the head reads: under a sequence-level head on the
    pooler ([CLS]) output, the last layer runs for the first position alone (its keys and
    values still come from every position): most of one of BERT-base's twelve layers less in
    every train and eval step, with the same logits; `last_hidden_state` is then [batch, 1,
    hidden].
    The train and eval steps ask for it (`jaxft.train.step.forward`).
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
        head_only: bool = False,
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
        n_prompt = self._prompt_length()
        if n_prompt:  # prompt tuning: n virtual tokens in front, always attended to
            batch = input_ids.shape[0]
            front = lambda t, fill: jnp.concatenate(
                [jnp.full((batch, n_prompt), fill, t.dtype), t], axis=1
            )
            attention_mask = front(attention_mask, 1)
            token_type_ids = front(token_type_ids, 0)
            first = c.pad_token_id + 1 if c.is_roberta else 0
            position_ids = jnp.concatenate(
                [
                    jnp.broadcast_to(jnp.arange(n_prompt) + first, (batch, n_prompt)),
                    position_ids + n_prompt,
                ],
                axis=1,
            )

        last_rows = 1 if head_only and self._head_reads_first_position() else None
        encoder = Encoder(c, self.dtype, name="encoder")
        embed_keep, layer_masks, head_keep = self._dropout_masks(
            encoder, input_ids.shape[:1] + attention_mask.shape[1:], deterministic, last_rows
        )
        x = Embeddings(c, self.dtype, name="embeddings")(input_ids, token_type_ids, position_ids)
        x = apply_mask(x, c.hidden_dropout_prob, embed_keep)
        x = encoder(x, attention_mask, deterministic, last_rows, layer_masks)
        pooled = None
        if c.add_pooling_layer:
            pooled = jnp.tanh(Dense(c.hidden_size, dtype=self.dtype, name="pooler")(x[:, 0]))
            pooled = pooled.astype(jnp.float32)
        logits = None
        if self.head is not None:
            features = heads_lib.pool(self.head, x, pooled, attention_mask)
            head = heads_lib.build(self.head, self.dtype, name="head")
            logits = head(features, deterministic, head_keep)
        return ModelOutput(
            last_hidden_state=x.astype(jnp.float32), pooler_output=pooled, logits=logits
        )

    def _dropout_masks(self, encoder, ids_shape, deterministic, last_rows):
        """The embeddings', each layer's and the head's dropout masks, from one hash on a GPU:
        XLA's GPU compiler spends about half a second on every hash (its fusion and code),
        whatever its size; one per block made 14 in a BERT-base train step, a quarter of its
        compile (`benchmarks/gpu_hlo.py`). Layer masks None where the layers draw their own."""
        c = self.config
        x_shape = tuple(ids_shape) + (c.hidden_size,)
        layers = encoder.dropout_sites(x_shape, deterministic, last_rows)
        head = [] if self.head is None else [heads_lib.dropout_site(self.head, x_shape)]
        groups = [[(c.hidden_dropout_prob, x_shape)], *(layers or []), head]
        masks = grouped_site_masks(self, deterministic, groups, c.dropout_offsets)
        embed_keep, head_keep = masks[0][0], (masks[-1] or [None])[0]
        return embed_keep, (None if layers is None else masks[1:-1]), head_keep

    def _head_reads_first_position(self) -> bool:
        h = self.head
        return (
            h is not None
            and h.kind == "classification"
            and h.pooling == "cls"
            and self.config.add_pooling_layer
        )

    def _prompt_length(self) -> int:
        embeddings = self.variables.get("params", {}).get("embeddings", {})
        return embeddings["prompt"].shape[0] if "prompt" in embeddings else 0


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


# Buffers some checkpoints carry that are not parameters.
IGNORED_HF_KEYS = (r"embeddings\.position_ids$",)
