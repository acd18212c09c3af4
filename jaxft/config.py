"""Experiment files and their overrides.

An experiment file is a Python file with `get_config(arg=None) -> ConfigDict`. Its fields are laid
over `defaults()`, so a key that is not in the defaults is an error, whether it comes from the
file or from a `--config.a.b=value` override; the message names the closest valid keys.
"""

import ast
import importlib.util
import json
from pathlib import Path

import ml_collections

from jaxft import peft
from jaxft.data import tasks
from jaxft.errors import UserError, closest
from jaxft.models.attention import ATTENTION_OPTIONS
from jaxft.models.layers import REMAT_POLICIES


def defaults() -> ml_collections.ConfigDict:
    """Every key an experiment may set, with its default."""
    c = ml_collections.ConfigDict()
    c.model = "all-MiniLM-L6-v2"  # built-in model, built-in architecture or an HF model folder
    c.model_config = ml_collections.ConfigDict()  # config.json fields to override (any key)
    c.random_init = False  # random weights from the model's config instead of its checkpoint
    c.tokenizer = ""  # tokenizer folder or built-in name ("t5"); "" = the model folder's
    c.dtype = "float32"  # compute dtype: float32 | bfloat16 (loss, softmax, norms stay float32)
    c.param_dtype = "float32"  # storage of frozen leaves: float32 | bfloat16 (trained: float32)
    c.seed = 0  # seeds init, dropout and data order
    # Speed options (results equal up to float rounding, dropout masks aside; scan_layers and
    # remat: BERT family). auto (BERT: cuDNN flash on GPU in bf16 where no dropout; T5: explicit)
    # | explicit | fused | cudnn_dropout (cuDNN flash with cuDNN's dropout masks in training too)
    # | flash (BERT family: jaxft's Pallas flash kernel in training, its dropout in the kernel)
    c.attention = "auto"
    c.scan_layers = False  # compile one layer body and run it with lax.scan over the layers
    c.remat = "none"  # none | full | dots: recompute activations in backward (less memory)
    c.compile_cache = "~/.cache/jaxft/xla"  # compiled steps kept for later runs; "" = off

    c.task = ml_collections.ConfigDict()
    # classification | regression | seq2seq | token_classification | question_answering
    c.task.kind = "classification"
    c.task.label_names = ()  # names in index order; () = dataset's, else sorted train labels
    c.task.pooling = "cls"  # cls (pooler over [CLS], as HF) | mean (masked mean of hidden states)
    c.task.head_dropout = -1.0  # dropout before the classifier; < 0 = the model config's
    c.task.label_smoothing = 0.0  # seq2seq: share of target probability spread over the vocab
    c.task.source_prefix = ""  # seq2seq: text put before every source, e.g. "summarize: "
    c.task.label_subtokens = False  # token classification: train on every sub-token of a word
    c.task.doc_stride = 128  # QA: tokens shared by consecutive windows of a long context
    c.task.max_answer_length = 30  # QA: longest answer span decoded, in tokens
    c.task.n_best = 20  # QA: start and end candidates per window
    c.task.squad_v2 = False  # QA: questions may have no answer (SQuAD v2.0)
    c.task.null_threshold = 0.0  # QA v2: answer nothing when null score > best span + this

    c.data = ml_collections.ConfigDict()
    # a built-in dataset, "files", "disk" (save_to_disk folder), "function", "glue:<task>" or
    # "squad" (SQuAD v1.1/v2.0 JSON in data.files)
    c.data.source = "rotten_tomatoes"
    c.data.files = ml_collections.ConfigDict({"train": "", "validation": "", "test": ""})
    c.data.path = ""  # folder of source disk, or of glue:<task> (the GLUE root)
    c.data.function = ""  # source "function": path/to/file.py:name returning {split: rows}
    c.data.text_column = "text"  # column of the (first) text, for source="files"
    c.data.text_pair_column = ""  # column of the second text of a pair; "" = single sentences
    c.data.label_column = "label"  # column of the label (the target text for seq2seq)
    c.data.max_length = 128  # tokens per example after truncation (truncations are counted)
    c.data.buckets = ()  # padded lengths; () = powers of two from 16 up to max_length
    c.data.max_target_length = 128  # seq2seq: target tokens after truncation (counted)
    c.data.target_buckets = ()  # seq2seq: padded target lengths; () = as for buckets
    c.data.max_train_examples = 0  # if > 0, train on the first N train examples only
    c.data.sort_window = 64  # train batches length-sorted in windows of N batches; 1 = random

    c.generate = ml_collections.ConfigDict()
    c.generate.num_beams = 1  # 1 = greedy; > 1 = beam search
    c.generate.max_new_tokens = 128  # generated tokens per sequence, at most
    c.generate.length_penalty = 1.0  # beam score = logprob / length**length_penalty
    c.generate.early_stopping = False  # beam search stops once num_beams hypotheses finished

    c.mesh = ml_collections.ConfigDict()  # used when more than one device is visible
    c.mesh.data = -1  # data-parallel size; -1 = all devices the fsdp axis leaves
    c.mesh.fsdp = 1  # fully-sharded size: params and optimizer state split over it
    c.mesh.rules = ()  # "REGEX=SPEC" overrides, e.g. "embedding$=none fsdp" (see sharding.py)

    c.strategy = peft.defaults()  # name and per-strategy settings: see jaxft/peft/__init__.py

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5  # peak learning rate
    c.optim.schedule = "linear"  # decay after warmup: linear | cosine | constant
    c.optim.warmup_ratio = 0.06  # share of all steps spent warming up linearly from 0
    c.optim.warmup_steps = 0  # if > 0, overrides warmup_ratio
    c.optim.weight_decay = 0.01  # decoupled AdamW decay; never on biases or LayerNorm
    c.optim.b1 = 0.9  # Adam beta1
    c.optim.b2 = 0.999  # Adam beta2
    c.optim.eps = 1e-8  # Adam epsilon
    c.optim.clip_norm = 1.0  # global gradient-norm clip; 0 = off
    c.optim.layer_decay = 1.0  # layer-wise LR decay: layer i of L gets lr * decay**(L - i)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # examples per optimizer step
    c.train.grad_accum_steps = 1  # micro-batches per step (batch_size must divide by it)
    c.train.epochs = 3  # passes over the train split
    c.train.eval_batch_size = 128  # examples per eval step
    c.train.log_every = 50  # steps between loss logs (the only host syncs in the loop)
    c.train.eval_every_epoch = True  # evaluate the validation split after every epoch
    c.train.eval_before = False  # also evaluate the validation split before the first step
    c.train.eval_splits = ("validation", "test")  # splits scored at the end into eval.json
    c.train.max_steps = 0  # if > 0, stop after this many steps (smoke tests)
    c.train.eval_examples = 0  # if > 0, score the first N examples of a split (generation)
    c.train.progress = True  # show a tqdm progress bar
    c.train.checkpoint_every = 200  # steps between resumable checkpoints (0 = only on SIGTERM)
    c.train.allow_config_change = False  # resume a workdir even if the settings changed
    c.train.keep_checkpoints = 2  # resumable checkpoints kept (the latest ones)
    c.train.best_metric = ""  # e.g. accuracy: keep the best validated params, score those
    c.train.prefetch = 2  # batches built and placed ahead by a background thread
    c.train.parallel = "mesh"  # with several devices: mesh (jit, sharded) | pmap (replicated)
    c.train.dropout_rng = "threefry"  # threefry | rbg: per-step dropout bits from XLA's RNG
    c.train.xla_options = ""  # XLA compile options of the train step: "name=value,name=value"
    return c


def flat_keys(config, prefix="") -> list[str]:
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, name + "."))
        else:
            keys.append(name)
    return keys


def flat_items(tree: dict, prefix: str = "") -> dict:
    """{"a.b": value} for every leaf of a nested dict (tuples and lists compared as lists)."""
    items = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            items.update(flat_items(v, f"{prefix}{k}."))
        else:
            items[f"{prefix}{k}"] = list(v) if isinstance(v, tuple | list) else v
    return items


def _unknown(key: str) -> UserError:
    hint = closest(key, flat_keys(defaults()))
    return UserError(
        f"unknown config key {key!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")
    )


# Sections whose keys are free (they override a model's config.json, whose fields vary by family).
OPEN_SECTIONS = ("model_config",)


def _set(config, key: str, value):
    node = config
    parts = key.split(".")
    if parts[0] in OPEN_SECTIONS and len(parts) == 2:
        config[parts[0]][parts[1]] = value
        return
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise _unknown(key)
        node = node[part]
    if parts[-1] not in node:
        raise _unknown(key)
    node[parts[-1]] = _coerce(key, value, node[parts[-1]])


def _coerce(key, value, current):
    """Give a value the type of the default it replaces (int -> float, list -> tuple, ...)."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, int):
            if float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
    except (TypeError, ValueError) as e:
        kind = type(current).__name__
        raise UserError(f"config key {key!r} expects a {kind}; got {value!r}") from e
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        elif not isinstance(value, list | tuple):  # --config.data.buckets=48: one item
            value = [value]
        return tuple(value)
    if isinstance(current, str):
        return "" if value is None else str(value)
    return value


def xla_options(text: str) -> dict:
    """`train.xla_options` text -> the dict `jax.jit(compiler_options=...)` takes: comma-separated
    `name=value` pairs, each value a bool (true/false), an int, a float or else a string."""
    options = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UserError(
                f"train.xla_options={text!r}: {item!r} is not name=value; write e.g. "
                "train.xla_options=xla_gpu_autotune_level=0,xla_gpu_dot_merger_threshold_mb=0"
            )
        if value.lower() in ("true", "false"):
            options[name] = value.lower() == "true"
        else:
            literal = parse_value(value)
            options[name] = literal if isinstance(literal, int | float) else value
    return options


def parse_value(text: str):
    """Command-line text -> Python value: literals where they parse, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def overlay(base, updates, prefix=""):
    """Lay the (nested) `updates` over `base`, rejecting keys `base` does not have."""
    for k, v in updates.items():
        key = f"{prefix}{k}"
        if k not in base:
            raise _unknown(key)
        if key in OPEN_SECTIONS:
            base[k] = ml_collections.ConfigDict(dict(v))
            continue
        if isinstance(base[k], ml_collections.ConfigDict):
            if not isinstance(v, dict | ml_collections.ConfigDict):
                raise UserError(f"config key {key!r} is a section; set its fields ({key}.…)")
            overlay(base[k], v, key + ".")
        else:
            base[k] = _coerce(key, v, base[k])
    return base


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """`path/to/experiment.py[:arg]` -> the experiment's config over the defaults."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"experiment file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"jaxft_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path} defines no get_config(arg=None)")
    experiment = module.get_config(arg or None)
    return overlay(defaults(), experiment)


def apply_overrides(config, overrides: list[tuple[str, str]]):
    for key, text in overrides:
        _set(config, key, parse_value(text))
    return config


def validate(config) -> None:
    c = config
    if c.task.kind not in tasks.TASKS:
        raise UserError(f"task.kind={c.task.kind!r}; use one of {', '.join(tasks.TASKS)}")
    if not 0.0 <= c.task.label_smoothing < 1.0:
        raise UserError(f"task.label_smoothing must be in [0, 1); got {c.task.label_smoothing}")
    positive = ("train.batch_size", "train.epochs", "train.eval_batch_size", "data.max_length")
    positive += ("data.max_target_length", "generate.num_beams", "generate.max_new_tokens")
    for key in positive:
        section, name = key.split(".")
        if int(c[section][name]) <= 0:
            raise UserError(f"{key} must be positive; got {c[section][name]}")
    accum = c.train.grad_accum_steps
    if accum < 1 or c.train.batch_size % accum:
        raise UserError(
            f"train.batch_size={c.train.batch_size} must split into train.grad_accum_steps="
            f"{accum} equal micro-batches; pick a divisor of the batch size"
        )
    if c.optim.lr <= 0:
        raise UserError(f"optim.lr must be positive; got {c.optim.lr}")
    choices = (
        ("dtype", c.dtype, ("float32", "bfloat16", "float16")),
        ("param_dtype", c.param_dtype, ("float32", "bfloat16")),
        ("train.parallel", c.train.parallel, ("mesh", "pmap")),
        ("train.dropout_rng", c.train.dropout_rng, ("threefry", "rbg")),
        ("attention", c.attention, ATTENTION_OPTIONS),
        ("remat", c.remat, tuple(REMAT_POLICIES)),
    )
    for key, value, allowed in choices:
        if value not in allowed:
            raise UserError(f"{key}={value!r}; use one of {', '.join(allowed)}")
    xla_options(c.train.xla_options)  # raises on malformed text; unknown names: make_runner
    if c.train.prefetch < 1:
        raise UserError(f"train.prefetch must be at least 1; got {c.train.prefetch}")
    if c.train.keep_checkpoints < 1:
        raise UserError(
            f"train.keep_checkpoints must be at least 1; got {c.train.keep_checkpoints}"
        )
    if c.train.best_metric and not c.train.eval_every_epoch:
        raise UserError(
            f"train.best_metric={c.train.best_metric!r} picks among the per-epoch validation "
            "scores; set train.eval_every_epoch=true"
        )


def to_json(config) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def from_json_file(path) -> ml_collections.ConfigDict:
    with open(path) as f:
        return overlay(defaults(), json.load(f))
