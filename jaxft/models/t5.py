"""T5 (v1.0, v1.1 / flan) in Flax linen: encoder-decoder and encoder-only, with the HF name map.

Parameter paths:

    shared/embedding                                   token embeddings (tied LM head in v1.0)
    {encoder,decoder}/relative_attention_bias/embedding [buckets, heads], first layer's in HF
    {encoder,decoder}/layer_{i}/self_attention/{q,k,v,o}/kernel
    decoder/layer_{i}/cross_attention/{q,k,v,o}/kernel
    {encoder,decoder}/layer_{i}/{self_attention,cross_attention,ff}_norm/scale
    {encoder,decoder}/layer_{i}/ff/{wi,wo}/kernel      (v1.0, ReLU)
    {encoder,decoder}/layer_{i}/ff/{wi_0,wi_1,wo}/kernel (v1.1, gated GELU)
    {encoder,decoder}/final_norm/scale
    lm_head/kernel                                     (untied heads only)
    head/classifier/{kernel,bias}                      (encoder-only with a task head)

Random init follows Hugging Face's `T5PreTrainedModel` (factor 1.0), so random-init runs train as
HF's would. No dense layer has a bias; norms are RMS norms computed in float32; attention logits
are not scaled by 1/sqrt(d) (T5 folds that into its initialisation); softmax runs in float32.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxft.models import attention as attention_lib
from jaxft.models import heads as heads_lib
from jaxft.models import layers as layers_lib
from jaxft.models.dropout import apply_mask, grouped_site_masks
from jaxft.models.layers import Dense, Dtype, activation
from jaxft.models.norms import RMSNorm

MODEL_TYPES = ("t5",)


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (v1.0) or "gated-gelu" (v1.1, flan)
    tie_word_embeddings: bool = True  # LM head shares `shared`; False: its own lm_head/kernel
    # Multiply decoder outputs by d_model**-0.5 before the head (v1.0). transformers 5 writes this
    # key; older configs imply it by tie_word_embeddings (v1.1 checkpoints set both false).
    scale_decoder_outputs: bool = True
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    model_type: str = "t5"
    # Set by strategies, not read from Hugging Face configs:
    lora_dropout: float = 0.0
    adapter_activation: str = "relu"
    dropout_offsets: str = "runtime"  # as BertConfig's
    # Set by the experiment: explicit (also what auto means for T5) | fused | cudnn_dropout, see
    # attention.attention_kernel; the run's seed, for cuDNN's attention dropout
    attention: str = "auto"
    dropout_seed: int = 0

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> "T5Config":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in fields and v is not None}
        kwargs.setdefault("num_decoder_layers", kwargs.get("num_layers", cls.num_layers))
        kwargs.setdefault("scale_decoder_outputs", kwargs.get("tie_word_embeddings", True))
        return cls(**kwargs)

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act(self) -> str:
        name = self.feed_forward_proj.split("-")[-1]
        # HF maps "gated-gelu" to the tanh approximation (gelu_new), as the original T5 v1.1.
        return "gelu_new" if name == "gelu" and self.gated else name

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv


def relative_position_bucket(
    relative_position, bidirectional: bool, num_buckets: int, max_distance: int
):
    """T5's bucketing of key-minus-query distances: exact for small ones, log-spaced beyond."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        relative_position = jnp.abs(relative_position)
    else:
        relative_position = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # Clamp before the log so position 0 (taken from the other branch) gives no -inf.
    scaled = jnp.log(jnp.maximum(relative_position, 1).astype(jnp.float32) / max_exact)
    large = max_exact + (
        scaled / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, relative_position, large)


def mask_bias(keep):
    """Bool keep-mask -> additive float32 bias (0 or the float32 minimum)."""
    return jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min)


class Masking(NamedTuple):
    """What one attention of a stack attends to, for either path: additive `biases` for the
    explicit softmax, or for a fused kernel the keys' `lengths` (right padding; None where only
    the explicit path applies, in a decode cache), T5's `position_bias` and `causal`."""

    biases: tuple
    lengths: jax.Array | None = None
    position_bias: jax.Array | None = None
    causal: bool = False


class Attention(nn.Module):
    """Multi-head attention over `kv` (self-attention when kv is x).

    With `decode=True` (generation) it keeps a cache: self-attention appends this step's key and
    value at the cache index; cross-attention projects the encoder memory once, on the call that
    creates the cache, and reuses it at every step.
    """

    config: T5Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x,
        kv,
        masking: Masking,
        deterministic,
        decode=False,
        cross=False,
        probs_keep=None,
        lora_keeps=None,
    ):
        """`probs_keep`: the attention probabilities' dropout mask (`block_dropout_sites`);
        `lora_keeps`: {(projection,): its LoRA input's dropout mask}."""
        c = self.config
        lora_keeps = lora_keeps or {}
        # Hugging Face's T5 init: q carries the 1/sqrt(d_kv) that T5 leaves out of attention.
        stds = {
            "q": (c.d_model * c.d_kv) ** -0.5,
            "k": c.d_model**-0.5,
            "v": c.d_model**-0.5,
            "o": c.inner_dim**-0.5,
        }
        dense = lambda size, n: Dense(
            size,
            use_bias=False,
            dtype=self.dtype,
            lora_dropout=c.lora_dropout,
            kernel_init=nn.initializers.normal(stds[n]),
            name=n,
        )
        project = lambda n, t: dense(c.inner_dim if n != "o" else c.d_model, n)(
            t, deterministic, lora_keeps.get((n,))
        )
        heads = lambda t: t.reshape(t.shape[:-1] + (c.num_heads, c.d_kv))
        q = heads(project("q", x))
        if decode and cross:
            k = self.variable(
                "cache", "cross_key", lambda: heads(dense(c.inner_dim, "k")(kv))
            ).value
            v = self.variable(
                "cache", "cross_value", lambda: heads(dense(c.inner_dim, "v")(kv))
            ).value
        else:
            k, v = heads(project("k", kv)), heads(project("v", kv))
        if decode and not cross:
            primed = self.has_variable("cache", "key")
            cached_k = self.variable("cache", "key", jnp.zeros, k.shape, k.dtype)
            cached_v = self.variable("cache", "value", jnp.zeros, v.shape, v.dtype)
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            if primed:  # one new token: write it at the index, attend over the whole cache
                at = (0, index.value, 0, 0)
                cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, at)
                cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, at)
                index.value = index.value + k.shape[1]
                k, v = cached_k.value, cached_v.value
        rate = 0.0 if deterministic else c.dropout_rate
        kernel = self._kernel(rate, q.shape[1], k.shape[1], masking, decode)
        if kernel is not None:
            context = attention_lib.fused_attention(
                q,
                k,
                v,
                masking.lengths,
                kernel,
                rate,
                attention_lib.call_seed(c.dropout_seed, self.scope.path),
                bias=masking.position_bias,
                causal=masking.causal,
                scale=1.0,
            )
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
            probs = attention_lib.attention_probs(
                scores, masking.biases, 1.0, rate, probs_keep, self.dtype
            )
            context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return project("o", context.reshape(x.shape[:2] + (c.inner_dim,)))

    def _kernel(self, rate, q_len, k_len, masking: Masking, decode) -> str | None:
        return attention_kernel_for(self.config, self.dtype, rate, q_len, k_len, masking, decode)


def attention_kernel_for(config, dtype, rate, q_len, k_len, masking: Masking, decode):
    """The fused kernel that runs an attention call, if any (cuDNN when asked for)."""
    c = config
    # jaxft's flash kernel takes no position bias: "flash" is T5's "auto", explicit
    option = "explicit" if c.attention in ("auto", "flash") else c.attention
    # cuDNN trains with a bias only over even lengths
    odd = bool(q_len % 2 or k_len % 2) and masking.position_bias is not None
    explicit_only = decode or masking.lengths is None or odd
    return attention_lib.attention_kernel(option, dtype, c.d_kv, rate > 0, explicit_only)


def block_dropout_sites(
    config, dtype, params, x_shape, self_masking, memory_shape, cross_masking, deterministic
) -> list:
    """(rate, shape) of each dropout mask a `Block` applies, in its order: the self-attention
    probabilities' [batch, heads, queries, keys] (shape None where nothing or cuDNN's kernel
    drops them), the feed-forward inner activation's, each residual branch's, in a decoder block
    the cross-attention probabilities' and output's, then each LoRA branch's input's
    (`lora_input_widths` order; cross-attention keys and values read the encoder's memory).
    `params`: the block's; `memory_shape`/`cross_masking`: None in an encoder block."""
    c = config
    rate = c.dropout_rate

    def probs(kv_shape, masking):
        train_rate = 0.0 if deterministic else rate
        if train_rate <= 0 or attention_kernel_for(
            c, dtype, train_rate, x_shape[1], kv_shape[1], masking, False
        ):
            return None
        return (x_shape[0], c.num_heads, x_shape[1], kv_shape[1])

    shape = tuple(x_shape)
    sites = [
        (rate, probs(shape, self_masking)),
        (rate, shape[:-1] + (c.d_ff,)),
        (rate, shape),
        (rate, shape),
    ]
    if memory_shape is not None:
        sites += [(rate, probs(memory_shape, cross_masking)), (rate, shape)]
    reads_memory = {("cross_attention", "k"), ("cross_attention", "v")}
    return sites + [
        (c.lora_dropout, tuple(memory_shape if path in reads_memory else shape)[:-1] + (width,))
        for path, width in layers_lib.lora_input_widths(params).items()
    ]


class FeedForward(nn.Module):
    config: T5Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic, inner_keep=None, lora_keeps=None):
        """`inner_keep`: the dropout mask of the inner activation [batch, len, d_ff];
        `lora_keeps`: {(projection,): its LoRA input's dropout mask}."""
        c = self.config
        lora_keeps = lora_keeps or {}
        dense = lambda size, n: Dense(
            size,
            use_bias=False,
            dtype=self.dtype,
            lora_dropout=c.lora_dropout,
            kernel_init=nn.initializers.normal((c.d_ff if n == "wo" else c.d_model) ** -0.5),
            name=n,
        )
        project = lambda n, t: dense(c.d_model if n == "wo" else c.d_ff, n)(
            t, deterministic, lora_keeps.get((n,))
        )
        act = activation(c.act)
        h = act(project("wi_0", x)) * project("wi_1", x) if c.gated else act(project("wi", x))
        return project("wo", apply_mask(h, c.dropout_rate, inner_keep))


class Block(nn.Module):
    """Pre-norm block: x += attn(norm(x)); [x += cross(norm(x), memory)]; x += ff(norm(x))."""

    config: T5Config
    is_decoder: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, self_masking, memory, cross_masking, deterministic, decode, masks):
        """`masks`: the dropout masks of `block_dropout_sites`, which the stack draws for all
        its blocks at once (one hash on a GPU)."""
        c = self.config
        norm = lambda n: RMSNorm(c.layer_norm_epsilon, self.dtype, name=n)
        self_attention = Attention(c, self.dtype, name="self_attention")
        cross_attention = None
        if self.is_decoder:
            cross_attention = Attention(c, self.dtype, name="cross_attention")
        rate = c.dropout_rate
        lora = layers_lib.lora_input_widths(self.variables.get("params", {}))
        n_sites = len(masks) - len(lora)  # the LoRA inputs' masks come last
        probs_keep, inner_keep, attended_keep, ff_keep, *cross_keep = masks[:n_sites]
        lora_keeps = dict(zip(lora, masks[n_sites:], strict=True))
        h = norm("self_attention_norm")(x)
        attended = self_attention(
            h,
            h,
            self_masking,
            deterministic,
            decode=decode,
            probs_keep=probs_keep,
            lora_keeps=layers_lib.under(lora_keeps, "self_attention"),
        )
        x = x + apply_mask(attended, rate, attended_keep)
        if cross_attention is not None:
            cross_probs_keep, cross_attended_keep = cross_keep
            h = norm("cross_attention_norm")(x)
            attended = cross_attention(
                h,
                memory,
                cross_masking,
                deterministic,
                decode=decode,
                cross=True,
                probs_keep=cross_probs_keep,
                lora_keeps=layers_lib.under(lora_keeps, "cross_attention"),
            )
            x = x + apply_mask(attended, rate, cross_attended_keep)
        h = norm("ff_norm")(x)
        fed = FeedForward(c, self.dtype, name="ff")(
            h, deterministic, inner_keep, layers_lib.under(lora_keeps, "ff")
        )
        return x + apply_mask(fed, rate, ff_keep)


class Stack(nn.Module):
    """The encoder (bidirectional) or decoder (causal, cross-attending) stack of blocks."""

    config: T5Config
    is_decoder: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, embedded, mask, memory=None, memory_mask=None, deterministic=True, decode=False
    ):
        c = self.config
        length = embedded.shape[1]
        table = nn.Embed(
            c.relative_attention_num_buckets,
            c.num_heads,
            embedding_init=nn.initializers.normal(c.d_model**-0.5),
            name="relative_attention_bias",
        )
        bucket = lambda rel: relative_position_bucket(
            rel,
            bidirectional=not self.is_decoder,
            num_buckets=c.relative_attention_num_buckets,
            max_distance=c.relative_attention_max_distance,
        )
        primed = decode and self.has_variable("cache", "position")
        if primed:
            # One generated token at `position` attends to every cache slot up to itself.
            position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            slots = self.variable("cache", "slots", jnp.zeros, (0,), jnp.int32).value.shape[0]
            keys = jnp.arange(slots)
            rel = (keys - position.value)[None, :]  # [1 query, slots]
            keep = (keys <= position.value)[None, None, None, :]
            position.value = position.value + length
        else:
            if decode:  # the call that creates the cache: remember its length
                self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
                self.variable("cache", "slots", jnp.zeros, (length,), jnp.int32)
            positions = jnp.arange(length)
            rel = positions[None, :] - positions[:, None]  # key - query
            keep = mask[:, None, None, :].astype(bool)
            if self.is_decoder:
                keep = keep & jnp.tril(jnp.ones((length, length), bool))[None, None]
        position_bias = jnp.transpose(table(bucket(rel)), (2, 0, 1))[None].astype(jnp.float32)
        # One bias for every layer: relative positions (first layer's table) plus the mask, as
        # two addends (attention.attention_probs adds them to the scores).
        self_masking = Masking(
            (position_bias, mask_bias(keep)),
            None if primed else attention_lib.key_lengths(mask),
            position_bias,
            causal=self.is_decoder,
        )
        cross_masking = None
        if memory is not None:
            cross_keep = memory_mask[:, None, None, :].astype(bool)
            cross_lengths = attention_lib.key_lengths(memory_mask)
            cross_masking = Masking((mask_bias(cross_keep),), cross_lengths)
        layers = c.num_decoder_layers if self.is_decoder else c.num_layers
        names = [f"layer_{i}" for i in range(layers)]
        # The embeddings', every block's and the final norm's dropout masks from one hash on a
        # GPU (one per block elsewhere): XLA's GPU compiler spends about half a second on every
        # hash, whatever its size.
        rate, shape = c.dropout_rate, embedded.shape
        params = self.variables.get("params", {})
        block_sites = [
            block_dropout_sites(
                c,
                self.dtype,
                params.get(name, {}),
                shape,
                self_masking,
                None if memory is None else memory.shape,
                cross_masking,
                deterministic,
            )
            for name in names
        ]
        embed_keep, *block_masks, final_keep = grouped_site_masks(
            self, deterministic, [[(rate, shape)], *block_sites, [(rate, shape)]], c.dropout_offsets
        )
        x = apply_mask(embedded.astype(self.dtype), rate, embed_keep[0])
        for name, masks in zip(names, block_masks, strict=True):
            x = Block(c, self.is_decoder, self.dtype, name=name)(
                x, self_masking, memory, cross_masking, deterministic, decode, masks
            )
        x = RMSNorm(c.layer_norm_epsilon, self.dtype, name="final_norm")(x)
        return apply_mask(x, rate, final_keep[0])


def shift_right(labels, start_id: int, pad_id: int):
    """Decoder inputs from labels: start token first, labels shifted, -100 (ignored) -> pad."""
    shifted = jnp.concatenate([jnp.full_like(labels[:, :1], start_id), labels[:, :-1]], axis=1)
    return jnp.where(shifted == -100, pad_id, shifted)


def tied_logits(h, embedding, dtype) -> jax.Array:
    """The tied LM head: h · embeddingᵀ in the compute dtype, as the untied head's Dense and
    PyTorch's autocast run it (float32 had made T5-base's largest matmul, 32,128-way, and its
    logits float32)."""
    return jnp.dot(h.astype(dtype), embedding.astype(dtype).T)


class T5Model(nn.Module):
    """T5 encoder-decoder with an LM head (`encoder_only=True`: the encoder alone).

    `__call__(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)` returns a
    ModelOutput with `last_hidden_state` (the encoder output) and `logits` (float32, decoder).
    `encode` and `decode` are the two halves, for generation.
    """

    config: T5Config
    encoder_only: bool = False
    # Encoder-only models may carry a classification/regression head over the mean-pooled
    # encoder output (T5 has no pooler).
    head: heads_lib.HeadConfig | None = None
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.shared = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(1.0))
        self.encoder = Stack(c, is_decoder=False, dtype=self.dtype)
        if self.head is not None:
            if not self.encoder_only:
                raise ValueError("a classification head needs encoder_only=True")
            self.task_head = heads_lib.build(self.head, self.dtype, name="head")
        if not self.encoder_only:
            self.decoder = Stack(c, is_decoder=True, dtype=self.dtype)
            if not c.tie_word_embeddings:
                self.lm_head = Dense(
                    c.vocab_size,
                    use_bias=False,
                    dtype=self.dtype,
                    kernel_init=nn.initializers.normal(1.0),
                )

    def encode(self, input_ids, attention_mask=None, deterministic=True):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        return self.encoder(self.shared(input_ids), attention_mask, deterministic=deterministic)

    def decode(
        self,
        decoder_input_ids,
        memory,
        memory_mask,
        decoder_attention_mask=None,
        deterministic=True,
        decode=False,
    ):
        """Decoder logits [batch, len, vocab]. `decode=True` uses and updates the "cache"
        collection: the first such call (with [batch, max_len] ids) creates it, each later call
        feeds one new token."""
        if decoder_attention_mask is None:
            decoder_attention_mask = jnp.ones_like(decoder_input_ids)
        h = self.decoder(
            self.shared(decoder_input_ids),
            decoder_attention_mask,
            memory,
            memory_mask,
            deterministic=deterministic,
            decode=decode,
        )
        if self.config.scale_decoder_outputs:
            h = h * (self.config.d_model**-0.5)
        if self.config.tie_word_embeddings:
            logits = tied_logits(h, self.shared.embedding, self.dtype)
        else:
            logits = self.lm_head(h)
        return logits.astype(jnp.float32)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        deterministic=True,
    ):
        from jaxft.models.outputs import ModelOutput

        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        memory = self.encode(input_ids, attention_mask, deterministic)
        if self.head is not None:
            features = heads_lib.pool(self.head, memory, None, attention_mask)
            logits = self.task_head(features, deterministic)
            return ModelOutput(last_hidden_state=memory.astype(jnp.float32), logits=logits)
        if self.encoder_only or decoder_input_ids is None:
            return ModelOutput(last_hidden_state=memory.astype(jnp.float32))
        logits = self.decode(
            decoder_input_ids, memory, attention_mask, decoder_attention_mask, deterministic
        )
        return ModelOutput(last_hidden_state=memory.astype(jnp.float32), logits=logits)


# --- Hugging Face name map ------------------------------------------------------------------

LINEAR, COPY = "linear", "copy"


def hf_name_map(config: T5Config, encoder_only: bool = False) -> dict[str, tuple[str, str]]:
    names = {"shared/embedding": ("shared.weight", COPY)}
    stacks = [("encoder", config.num_layers)]
    if not encoder_only:
        stacks.append(("decoder", config.num_decoder_layers))
    ff = ("wi_0", "wi_1", "wo") if config.gated else ("wi", "wo")
    for stack, layers in stacks:
        names[f"{stack}/relative_attention_bias/embedding"] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            COPY,
        )
        names[f"{stack}/final_norm/scale"] = (f"{stack}.final_layer_norm.weight", COPY)
        for i in range(layers):
            ours, theirs = f"{stack}/layer_{i}", f"{stack}.block.{i}.layer"
            parts = [("self_attention", "0.SelfAttention", "0.layer_norm")]
            if stack == "decoder":
                parts.append(("cross_attention", "1.EncDecAttention", "1.layer_norm"))
            for name, module, norm in parts:
                for p in ("q", "k", "v", "o"):
                    names[f"{ours}/{name}/{p}/kernel"] = (f"{theirs}.{module}.{p}.weight", LINEAR)
                names[f"{ours}/{name}_norm/scale"] = (f"{theirs}.{norm}.weight", COPY)
            ff_index = 2 if stack == "decoder" else 1
            for p in ff:
                names[f"{ours}/ff/{p}/kernel"] = (
                    f"{theirs}.{ff_index}.DenseReluDense.{p}.weight",
                    LINEAR,
                )
            names[f"{ours}/ff_norm/scale"] = (f"{theirs}.{ff_index}.layer_norm.weight", COPY)
    if not encoder_only and not config.tie_word_embeddings:
        names["lm_head/kernel"] = ("lm_head.weight", LINEAR)
    return names


# Tied copies of shared.weight that some checkpoints also store.
IGNORED_HF_KEYS = (r"^(encoder|decoder)\.embed_tokens\.weight$", r"^lm_head\.weight$")
