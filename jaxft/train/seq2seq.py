"""Seq2seq data preparation and scoring: source/target tokenization with the bad-input checks,
generation over a split, and BLEU/ROUGE against the reference texts."""

import logging

import numpy as np

from jaxft import generate
from jaxft.data import batching
from jaxft.data.sources import Examples
from jaxft.errors import UserError

log = logging.getLogger(__name__)


def check_tokenizer(tokenizer, model_config, where: str) -> None:
    """A tokenizer must fit the model: every id inside the embedding table, and the same
    padding and end-of-sequence ids the model generates with."""
    size = len(tokenizer)
    if size > model_config.vocab_size:
        raise UserError(
            f"the tokenizer ({where}) has {size:,} tokens but the model's vocabulary has "
            f"{model_config.vocab_size:,}: ids past it have no embedding. Use the tokenizer the "
            "checkpoint was trained with (config key `tokenizer`), or set "
            f"model_config.vocab_size >= {size} for a random-init model."
        )
    for name in ("pad_token_id", "eos_token_id"):
        ours, theirs = getattr(tokenizer, name), getattr(model_config, name)
        if ours is not None and ours != theirs:
            raise UserError(
                f"the tokenizer ({where}) has {name}={ours} but the model config says {theirs}: "
                "they were not made for each other. Use the checkpoint's own tokenizer."
            )


def prepare_split(split: str, examples: Examples, tokenizer, config):
    """(Encoded, reference texts) of one split; rows with an empty source or target are dropped
    with a warning, and truncations are counted in the log."""
    prefix = config.task.source_prefix
    # A blank csv cell reads as None.
    sources = ["" if t is None else str(t) for t in examples.text]
    targets = ["" if t is None else str(t) for t in examples.label]
    keep = [
        i for i, (s, t) in enumerate(zip(sources, targets, strict=True)) if s.strip() and t.strip()
    ]
    if len(keep) < len(sources):
        kept = set(keep)
        dropped = [i for i in range(len(sources)) if i not in kept]
        log.warning(
            "%s: dropped %d of %d examples with an empty source or target (rows %s%s)",
            split,
            len(dropped),
            len(sources),
            dropped[:5],
            " ..." if len(dropped) > 5 else "",
        )
    if not keep:
        raise UserError(f"the {split!r} split has no example with both a source and a target")
    sources = [prefix + sources[i] for i in keep]
    targets = [targets[i] for i in keep]
    d = config.data
    encoded = batching.tokenize_seq2seq(
        tokenizer, sources, targets, d.max_length, d.max_target_length
    )
    for what, count, key in (
        ("sources", encoded.truncated, "max_length"),
        ("targets", encoded.target_truncated, "max_target_length"),
    ):
        if count:
            log.warning(
                "%s: %d of %d %s truncated to data.%s=%d",
                split,
                count,
                len(encoded),
                what,
                key,
                d[key],
            )
    return encoded, targets


def generate_texts(model, params, data, tokenizer, config, buckets) -> list[str]:
    """Generated text for every example of `data`, in order."""
    texts = [""] * len(data)
    pad = tokenizer.pad_token_id or 0
    for indices, batch in batching.batches(data, config.train.eval_batch_size, buckets, pad):
        ids = generate.generate(
            model, params, batch["input_ids"], batch["attention_mask"], config.generate
        )
        decoded = tokenizer.batch_decode(ids[: len(indices)], skip_special_tokens=True)
        for i, text in zip(indices, decoded, strict=True):
            texts[i] = text.strip()
    return texts


def first(data: batching.Encoded, references: list[str], n: int):
    """The first n examples (all when n <= 0): generation is the slow part of an evaluation."""
    if n <= 0 or n >= len(data):
        return data, references
    return (
        batching.Encoded(
            input_ids=data.input_ids[:n],
            token_type_ids=data.token_type_ids[:n],
            labels=None,
            truncated=0,
            targets=data.targets[:n],
        ),
        references[:n],
    )


def score(exp, params, split: str, eval_step) -> dict:
    """Teacher-forced loss per target token, and BLEU / ROUGE of generated text (greedy or beam
    per `config.generate`) against the references."""
    from jaxft.metrics import generation as metrics

    c = exp.config
    data, references = first(exp.data[split], exp.references[split], c.train.eval_examples)
    pad = exp.tokenizer.pad_token_id or 0
    total = count = 0.0
    for _, batch in batching.batches(
        data, c.train.eval_batch_size, exp.buckets, pad, target_lengths=exp.target_buckets
    ):
        batch_total, batch_count = eval_step(params, batch)
        total, count = total + float(batch_total), count + float(batch_count)
    hypotheses = generate_texts(exp.model, params, data, exp.tokenizer, c, exp.buckets)
    result = {"loss": total / max(count, 1.0)}
    result.update(metrics.seq2seq(hypotheses, references))
    result["gen_len"] = float(np.mean([len(h.split()) for h in hypotheses]))
    return result


def predict(config, model, params, tokenizer, texts: list[str]) -> list[dict]:
    """Generated text for each source text (`jaxft predict` on a seq2seq workdir)."""
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise UserError(f"input {empty[0] + 1} of {len(texts)} is empty: a source needs text")
    sources = [config.task.source_prefix + t for t in texts]
    input_ids, truncated = batching.encode(tokenizer, sources, config.data.max_length)
    if truncated:
        log.warning("%d of %d inputs truncated to data.max_length", truncated, len(texts))
    data = batching.Encoded(input_ids, [np.zeros_like(x) for x in input_ids], None, truncated)
    buckets = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    generated = generate_texts(model, params, data, tokenizer, config, buckets)
    return [{"text": t, "generated": g} for t, g in zip(texts, generated, strict=True)]
