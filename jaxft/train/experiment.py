"""An experiment made ready to run: `prepare(config)` reads and tokenizes the data, and builds
the model with a head sized for its labels and the pretrained weights; `score` evaluates params
on one of its splits with the task's metric.
"""

import dataclasses
import logging

import jax
import numpy as np

from jaxft import config as config_lib
from jaxft import models
from jaxft.data import batching, sources, tasks
from jaxft.errors import UserError
from jaxft.metrics import classification as metrics_lib
from jaxft.models import t5
from jaxft.train import qa, seq2seq, tokens

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Experiment:
    """Everything a run needs besides the optimizer: model, params, tokenizer and data."""

    config: object
    model: object
    params: dict
    tokenizer: object
    label_names: list[str] | None
    data: dict[str, batching.Encoded]
    buckets: list[int]
    # Seq2seq only: padded target lengths, and each split's reference texts (for BLEU/ROUGE).
    target_buckets: list[int] | None = None
    references: dict[str, list[str]] | None = None
    # Question answering only: each split's questions, and their windows (data holds these).
    raw: dict | None = None
    windows: dict | None = None

    @property
    def regression(self) -> bool:
        return self.config.task.kind == "regression"

    @property
    def seq2seq(self) -> bool:
        return self.config.task.kind == "seq2seq"


def load_tokenizer(config):
    """The run's tokenizer: `config.tokenizer` (a folder or built-in name), else the model's."""
    from transformers import AutoTokenizer

    from jaxft import assets

    if config.tokenizer:
        folder = assets.tokenizer_dir(config.tokenizer)
    elif not models.has_weights(config.model):
        raise UserError(
            f"{config.model!r} is a built-in architecture without tokenizer files: set the "
            "config key `tokenizer` (e.g. tokenizer='t5', the real T5 vocabulary)"
        )
    else:
        folder = assets.model_dir(str(config.model))
    options = {}
    model_type = models.hf_config(config.model, config.model_config.to_dict()).get("model_type")
    if config.task.kind == "token_classification" and model_type == "roberta":
        options["add_prefix_space"] = True  # byte-level BPE needs it for pre-split words
    return AutoTokenizer.from_pretrained(str(folder), **options)


def build_model(config, num_labels, rng=None, load_weights=True):
    """(model, params) for the config's task: pretrained weights, random ones when
    `config.random_init`, or None when `load_weights=False` (a workdir restores them)."""
    head = {k: k for k in ("seq2seq", "token_classification", "question_answering")}
    kwargs = dict(
        head=head.get(config.task.kind, "classification"),
        num_labels=num_labels,
        dtype=config.dtype,
        pooling=config.task.pooling,
        head_dropout=None if config.task.head_dropout < 0 else config.task.head_dropout,
        config_overrides=config.model_config.to_dict(),
    )
    if config.task.kind == "seq2seq":
        model_type = models.hf_config(config.model, kwargs["config_overrides"]).get("model_type")
        if model_type not in t5.MODEL_TYPES:
            raise UserError(
                f"task.kind=seq2seq needs an encoder-decoder model (T5); {config.model!r} is a "
                f"{model_type!r} encoder"
            )
    if load_weights and not config.random_init:
        return models.from_pretrained(config.model, rng=rng, **kwargs)
    model = models.build_model(config.model, **kwargs)
    if not load_weights:
        return model, None
    return model, models.init_params(model, jax.random.key(config.seed) if rng is None else rng)


def num_outputs(config, label_names) -> int | None:
    if config.task.kind == "seq2seq":
        return None
    if config.task.kind == "question_answering":
        return 2  # start and end logits
    return 1 if config.task.kind == "regression" else len(label_names)


def prepare(config, splits=None, load_weights=True) -> Experiment:
    """Read and tokenize the data, then build the model with a head sized for its labels
    (with its pretrained weights unless `load_weights=False`, for restoring a workdir)."""
    config_lib.validate(config)
    if config.task.kind == "question_answering":
        return _prepare_qa(config, splits, load_weights)
    raw, dataset_labels = sources.load(config.data)
    if config.data.max_train_examples and "train" in raw:
        raw["train"] = _first_examples(raw["train"], config.data.max_train_examples)
    if config.task.kind == "seq2seq":
        return _prepare_seq2seq(config, raw, splits, load_weights)
    label_names = tasks.label_names_for(
        config.task.kind, raw, config.task.label_names or dataset_labels
    )
    tokenizer = load_tokenizer(config)
    data = {}
    for split in splits or raw:
        _check_split(raw, split)
        if config.task.kind == "token_classification":
            data[split] = tokens.prepare_split(split, raw[split], tokenizer, config, label_names)
            continue
        labels = tasks.encode_labels(config.task.kind, split, raw[split], label_names)
        data[split] = batching.tokenize(tokenizer, raw[split], labels, config.data.max_length)
        if data[split].truncated:
            log.warning(
                "%s: %d of %d examples truncated to max_length=%d",
                split,
                data[split].truncated,
                len(data[split]),
                config.data.max_length,
            )
    model, params = build_model(
        config, num_outputs(config, label_names), jax.random.key(config.seed), load_weights
    )
    buckets = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    return Experiment(config, model, params, tokenizer, label_names, data, buckets)


def _first_examples(examples: sources.Examples, n: int) -> sources.Examples:
    """The first n examples, every field cut (NER's words too)."""
    fields = {f.name: getattr(examples, f.name) for f in dataclasses.fields(examples)}
    return sources.Examples(**{k: v if v is None else v[:n] for k, v in fields.items()})


def _check_split(raw, split):
    if split not in raw:
        raise UserError(f"the data source has no {split!r} split (it has {sorted(raw)})")


def _prepare_qa(config, splits, load_weights) -> Experiment:
    from jaxft.data import squad

    if config.data.source != "squad":
        raise UserError(
            "task.kind=question_answering reads SQuAD-format JSON: set data.source=squad and "
            "data.files.<split>"
        )
    raw = squad.load(dict(config.data.files))
    if config.data.max_train_examples and "train" in raw:
        q, n = raw["train"], config.data.max_train_examples
        raw["train"] = squad.Questions(q.ids[:n], q.questions[:n], q.contexts[:n], q.answers[:n])
    qa.check_version(raw, config.task.squad_v2)
    tokenizer = load_tokenizer(config)
    windows = {}
    for split in splits or raw:
        _check_split(raw, split)
        windows[split] = qa.make_windows(tokenizer, raw[split], config)
        log.info(
            "%s: %d questions in %d windows", split, len(raw[split]), len(windows[split].question)
        )
    model, params = build_model(config, 2, jax.random.key(config.seed), load_weights)
    return Experiment(
        config,
        model,
        params,
        tokenizer,
        None,
        {split: w.encoded for split, w in windows.items()},
        batching.bucket_lengths(config.data.max_length, config.data.buckets),
        raw=raw,
        windows=windows,
    )


def _prepare_seq2seq(config, raw, splits, load_weights) -> Experiment:
    tokenizer = load_tokenizer(config)
    model, params = build_model(config, None, jax.random.key(config.seed), load_weights)
    seq2seq.check_tokenizer(tokenizer, model.config, config.tokenizer or config.model)
    data, references = {}, {}
    for split in splits or raw:
        _check_split(raw, split)
        data[split], references[split] = seq2seq.prepare_split(split, raw[split], tokenizer, config)
    d = config.data
    return Experiment(
        config,
        model,
        params,
        tokenizer,
        None,
        data,
        batching.bucket_lengths(d.max_length, d.buckets),
        target_buckets=batching.bucket_lengths(d.max_target_length, d.target_buckets or d.buckets),
        references=references,
    )


def all_logits(data, params, eval_step, batch_size, buckets, pad_id, num_outputs) -> np.ndarray:
    """`eval_step(params, batch)` [examples, num_outputs] for every example of `data`, in order
    (logits, or any per-example vector such as pooled features)."""
    logits = np.zeros((len(data), num_outputs), np.float32)
    for indices, batch in batching.batches(data, batch_size, buckets, pad_id):
        logits[indices] = np.asarray(eval_step(params, batch))[: len(indices)]
    return logits


def score(exp: Experiment, params, split: str, eval_step) -> dict:
    """Metrics of `params` on one split (every example counted once; padding rows dropped)."""
    if exp.seq2seq:
        return seq2seq.score(exp, params, split, eval_step)
    if exp.config.task.kind == "token_classification":
        return tokens.score(exp, params, split, eval_step)
    if exp.config.task.kind == "question_answering":
        return qa.score(exp, params, split, eval_step)
    data = exp.data[split]
    logits = all_logits(
        data,
        params,
        eval_step,
        exp.config.train.eval_batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
        num_outputs(exp.config, exp.label_names),
    )
    return metrics_lib.from_logits(data.labels, logits, exp.regression)


def resolved_config(exp: Experiment):
    """The config as run: label names filled in, so eval/predict rebuild the same head."""
    config = exp.config.copy_and_resolve_references()
    if exp.label_names is not None:
        config.task.label_names = tuple(exp.label_names)
    return config
