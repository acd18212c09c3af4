"""`from_pretrained`: a Hugging Face model folder -> (Flax module, params)."""

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


def build_model(
    model_dir, head=None, num_labels=None, dtype="float32", pooling="cls", head_dropout=None
):
    """The Flax module for a model folder, without weights."""
    model_dir = assets.model_dir(str(model_dir))
    hf_config = hf.read_config(model_dir)
    model_type = hf_config.get("model_type")
    if model_type in t5.MODEL_TYPES:
        if head not in (None, "seq2seq"):
            raise UserError(f"T5 models take head=None (encoder only) or 'seq2seq'; got {head!r}")
        config = t5.T5Config.from_hf_config(hf_config)
        model = t5.T5Model(config, encoder_only=head is None, dtype=resolve_dtype(dtype))
        return model, model_dir
    if model_type not in bert.MODEL_TYPES:
        raise UserError(
            f"{model_dir}/config.json has model_type={model_type!r}; jaxft ports "
            f"{sorted(bert.MODEL_TYPES) + list(t5.MODEL_TYPES)}"
        )
    config = bert.BertConfig.from_hf_config(hf_config)
    head_config = None
    if head is not None:
        if head not in HEAD_KINDS:
            raise UserError(f"unknown head {head!r}; choose from {list(HEAD_KINDS)} or None")
        if num_labels is None:
            num_labels = len(hf_config.get("id2label") or {}) or 2
        dropout = hf_config.get("classifier_dropout") or config.hidden_dropout_prob
        head_config = HeadConfig(
            kind=head,
            num_labels=int(num_labels),
            pooling=pooling,
            dropout=dropout if head_dropout is None else head_dropout,
        )
    return bert.BertModel(config, head=head_config, dtype=resolve_dtype(dtype)), model_dir


def init_params(model, rng, seq_len: int = 8):
    ids = jnp.zeros((1, seq_len), jnp.int32)
    if isinstance(model, t5.T5Model) and not model.encoder_only:
        return jax.jit(lambda r: model.init(r, ids, decoder_input_ids=ids))(rng)["params"]
    return jax.jit(model.init)(rng, ids)["params"]


def _checkpoint_names(model):
    """(name map, task prefix, backbone HF keys, ignored-key regexes) of a model family."""
    if isinstance(model, t5.T5Model):
        name_map = t5.hf_name_map(model.config, model.encoder_only)
        return name_map, None, set(), t5.IGNORED_HF_KEYS
    name_map = bert.hf_name_map(model.config)
    backbone_keys = {k for k, _ in name_map.values()}
    if model.head is not None:
        name_map.update(heads.hf_name_map(model.head))
    return name_map, bert.MODEL_TYPES[model.config.model_type], backbone_keys, bert.IGNORED_HF_KEYS


def from_pretrained(
    path, head=None, num_labels=None, dtype="float32", pooling="cls", head_dropout=None, rng=None
):
    """Load a Hugging Face BERT/RoBERTa/T5 folder (or a built-in name such as "all-MiniLM-L6-v2").

    Returns `(model, params)`. `head="classification"` adds a sequence classification head with
    `num_labels` outputs (1 = regression); head weights come from the checkpoint when it has them
    with the right shape, else they are freshly initialised (and logged). `dtype` is the compute
    dtype; parameters are always float32. For T5, `head="seq2seq"` is the encoder-decoder with its
    LM head and `head=None` the encoder alone.
    """
    model, model_dir = build_model(path, head, num_labels, dtype, pooling, head_dropout)
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
