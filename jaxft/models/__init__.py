"""`from_pretrained`: a Hugging Face model folder -> (Flax module, params)."""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxft import assets
from jaxft.errors import UserError
from jaxft.models import bert, heads, hf, t5
from jaxft.models.heads import HEAD_KINDS, HeadConfig

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Built-in architectures without weights (no T5 weights exist offline): for random-init runs.
# The values are those of the published Hugging Face configs of the same names.
_T5_COMMON = dict(
    model_type="t5",
    vocab_size=32128,
    d_kv=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
ARCHITECTURES = {
    # BERT-base's shape (bert-base-uncased's config.json values), for random-init runs and
    # memory or speed measurements without its weights.
    "bert-base": dict(
        model_type="bert",
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    ),
    "t5-small": dict(
        _T5_COMMON,
        d_model=512,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    ),
    "t5-v1_1-small": dict(
        _T5_COMMON,
        d_model=512,
        d_ff=1024,
        num_layers=8,
        num_decoder_layers=8,
        num_heads=6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}


def flatten(params) -> dict:
    return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: dict):
    return traverse_util.unflatten_dict(flat, sep="/")


def resolve_dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UserError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    return dtype


def hf_config(name_or_path, overrides=None) -> dict:
    """The Hugging Face config dict of a model folder, built-in model or built-in architecture,
    with `overrides` (e.g. a smaller `d_model` for a random-init run) laid over it."""
    if str(name_or_path) in ARCHITECTURES:
        config = dict(ARCHITECTURES[str(name_or_path)])
    else:
        config = hf.read_config(assets.model_dir(str(name_or_path)))
    return {**config, **dict(overrides or {})}


def has_weights(name_or_path) -> bool:
    return str(name_or_path) not in ARCHITECTURES


def _head_config(head, hf_cfg, num_labels, pooling, head_dropout, default_dropout):
    if head not in HEAD_KINDS:
        raise UserError(f"unknown head {head!r}; choose from {list(HEAD_KINDS)} or None")
    if num_labels is None:
        num_labels = len(hf_cfg.get("id2label") or {}) or 2
    dropout = hf_cfg.get("classifier_dropout")
    if dropout is None:  # HF's heads fall back to the hidden dropout only when it is unset
        dropout = default_dropout
    return HeadConfig(
        kind=head,
        num_labels=int(num_labels),
        pooling=pooling,
        dropout=dropout if head_dropout is None else head_dropout,
    )


def build_model(
    name_or_path,
    head=None,
    num_labels=None,
    dtype="float32",
    pooling="cls",
    head_dropout=None,
    config_overrides=None,
):
    """The Flax module for a model folder or built-in architecture, without weights.

    T5 takes `head="seq2seq"` (encoder-decoder with its LM head), None (the encoder alone) or
    "classification" (the encoder with a mean-pooled classification/regression head)."""
    hf_cfg = hf_config(name_or_path, config_overrides)
    model_type = hf_cfg.get("model_type")
    if model_type in t5.MODEL_TYPES:
        config = t5.T5Config.from_hf_config(hf_cfg)
        if head == "seq2seq":
            return t5.T5Model(config, dtype=resolve_dtype(dtype))
        head_config = None
        if head is not None:
            # T5 has no pooler: its encoder head always pools by the masked mean.
            head_config = _head_config(
                head, hf_cfg, num_labels, "mean", head_dropout, config.dropout_rate
            )
        return t5.T5Model(config, encoder_only=True, head=head_config, dtype=resolve_dtype(dtype))
    if model_type not in bert.MODEL_TYPES:
        raise UserError(
            f"{name_or_path}: config.json has model_type={model_type!r}; jaxft ports "
            f"{sorted(bert.MODEL_TYPES) + list(t5.MODEL_TYPES)}"
        )
    config = bert.BertConfig.from_hf_config(hf_cfg)
    if head in ("token_classification", "question_answering"):  # as HF's: no pooler
        config = dataclasses.replace(config, add_pooling_layer=False)
    head_config = None
    if head is not None:
        head_config = _head_config(
            head, hf_cfg, num_labels, pooling, head_dropout, config.hidden_dropout_prob
        )
    return bert.BertModel(config, head=head_config, dtype=resolve_dtype(dtype))


def init_params(model, rng, seq_len: int = 8):
    ids = jnp.zeros((1, seq_len), jnp.int32)
    if isinstance(model, t5.T5Model) and not model.encoder_only:
        return jax.jit(lambda r: model.init(r, ids, decoder_input_ids=ids))(rng)["params"]
    return jax.jit(model.init)(rng, ids)["params"]


def _checkpoint_names(model):
    """(name map, task prefix, backbone HF keys, ignored-key regexes) of a model family."""
    if isinstance(model, t5.T5Model):
        name_map = t5.hf_name_map(model.config, model.encoder_only)
        if model.head is not None:
            name_map.update(heads.hf_name_map(model.head))
        return name_map, None, set(), t5.IGNORED_HF_KEYS
    name_map = bert.hf_name_map(model.config)
    backbone_keys = {k for k, _ in name_map.values()}
    if model.head is not None:
        name_map.update(heads.hf_name_map(model.head))
    return name_map, bert.MODEL_TYPES[model.config.model_type], backbone_keys, bert.IGNORED_HF_KEYS


def from_pretrained(
    path,
    head=None,
    num_labels=None,
    dtype="float32",
    pooling="cls",
    head_dropout=None,
    rng=None,
    config_overrides=None,
):
    """Load a Hugging Face BERT/RoBERTa/T5 folder (or a built-in name such as "all-MiniLM-L6-v2").

    Returns `(model, params)`. `head="classification"` adds a sequence classification head with
    `num_labels` outputs (1 = regression); head weights come from the checkpoint when it has them
    with the right shape, else they are freshly initialised (and logged). `dtype` is the compute
    dtype; parameters are always float32. For T5, `head="seq2seq"` is the encoder-decoder with its
    LM head, `head=None` the encoder alone and `head="classification"` the encoder with a
    mean-pooled head. `config_overrides` replaces config.json fields (e.g. dropout rates).
    """
    if not has_weights(path):
        raise UserError(
            f"{path!r} is a built-in architecture without weights (no pretrained T5 exists "
            "offline): set random_init=True in the experiment, or give a checkpoint folder"
        )
    model = build_model(path, head, num_labels, dtype, pooling, head_dropout, config_overrides)
    model_dir = assets.model_dir(str(path))
    rng = jax.random.key(0) if rng is None else rng
    template = flatten(init_params(model, rng))
    name_map, prefix, backbone_keys, ignored = _checkpoint_names(model)
    state = hf.read_state(model_dir)
    if prefix:
        state = hf.strip_prefix(state, prefix, backbone_keys)
    loaded, fresh = hf.load_params(
        template,
        name_map,
        state,
        bert.to_flax,
        optional=("head/",),
        ignored=ignored,
        source=str(model_dir),
    )
    if fresh:
        log.info("new head initialised (not in the checkpoint): %s", ", ".join(fresh))
    params = {p: jnp.asarray(loaded.get(p, np.asarray(v))) for p, v in template.items()}
    return model, unflatten(params)
