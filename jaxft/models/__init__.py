"""`from_pretrained`: a Hugging Face model folder -> (Flax module, params)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxft import assets
from jaxft.errors import UserError
from jaxft.models import bert, heads, hf
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
    if model_type not in bert.MODEL_TYPES:
        raise UserError(
            f"{model_dir}/config.json has model_type={model_type!r}; jaxft ports "
            f"{sorted(bert.MODEL_TYPES)}"
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
    return jax.jit(model.init)(rng, ids)["params"]


def from_pretrained(
    path, head=None, num_labels=None, dtype="float32", pooling="cls", head_dropout=None, rng=None
):
    """Load a Hugging Face BERT/RoBERTa folder (or a built-in name such as "all-MiniLM-L6-v2").

    Returns `(model, params)`. `head="classification"` adds a sequence classification head with
    `num_labels` outputs (1 = regression); head weights come from the checkpoint when it has them
    with the right shape, else they are freshly initialised (and logged). `dtype` is the compute
    dtype; parameters are always float32.
    """
    model, model_dir = build_model(path, head, num_labels, dtype, pooling, head_dropout)
    rng = jax.random.key(0) if rng is None else rng
    template = flatten(init_params(model, rng))
    name_map = bert.hf_name_map(model.config)
    backbone_keys = {k for k, _ in name_map.values()}
    if model.head is not None:
        name_map.update(heads.hf_name_map(model.head))
    prefix = bert.MODEL_TYPES[model.config.model_type]
    state = hf.strip_prefix(hf.read_state(model_dir), prefix, backbone_keys)
    loaded, fresh = hf.load_params(
        template,
        name_map,
        state,
        bert.to_flax,
        optional=("head/",),
        ignored=bert.IGNORED_HF_KEYS,
        source=str(model_dir),
    )
    if fresh:
        log.info("new head initialised (not in the checkpoint): %s", ", ".join(fresh))
    params = {p: jnp.asarray(loaded.get(p, np.asarray(v))) for p, v in template.items()}
    return model, unflatten(params)
