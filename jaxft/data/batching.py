"""Tokenization and static-shape batches.

Every batch is padded to one of a few bucket lengths, and to the full batch size with rows of
weight 0, so a run compiles at most `len(buckets)` train steps and drops no example.
"""

import dataclasses
import logging

import numpy as np

from jaxft.data.sources import Examples

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Encoded:
    """Token ids of one split (ragged: one array per example) and its targets."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray
    truncated: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), np.int64, len(self.input_ids))


def tokenize(tokenizer, examples: Examples, labels: np.ndarray, max_length: int) -> Encoded:
    pair = examples.text_pair
    args = (examples.text, pair) if pair is not None else (examples.text,)
    full = tokenizer(
        *args, truncation=False, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]
    enc = tokenizer(
        *args,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    truncated = sum(len(f) > max_length for f in full)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Encoded(
        input_ids=[np.asarray(x, np.int32) for x in enc["input_ids"]],
        token_type_ids=[np.asarray(x, np.int32) for x in types],
        labels=labels,
        truncated=truncated,
    )


def bucket_lengths(max_length: int, buckets=None) -> list[int]:
    """The padded lengths in use: given ones (capped at max_length) or powers of two from 16."""
    if buckets:
        lengths = sorted({min(int(b), max_length) for b in buckets} | {max_length})
    else:
        lengths, b = [], 16
        while b < max_length:
            lengths.append(b)
            b *= 2
        lengths.append(max_length)
    return lengths


def _bucket(length: int, lengths: list[int]) -> int:
    return next(b for b in lengths if b >= length)


def batch_order(lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int, epoch: int):
    """Example indices grouped into batches.

    Training shuffles, then sorts by length inside windows of 64 batches so batches are short
    without losing randomness, then shuffles the batch order; evaluation just sorts by length.
    """
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 64
    chunks = []
    for start in range(0, len(order), window):
        part = order[start : start + window]
        part = part[np.argsort(lengths[part], kind="stable")]
        chunks.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [chunks[i] for i in rng.permutation(len(chunks))]


def make_batch(data: Encoded, indices, batch_size: int, lengths: list[int], pad_id: int):
    """A padded numpy batch; rows past len(indices) are padding with weight 0."""
    width = _bucket(max(len(data.input_ids[i]) for i in indices), lengths)
    ids = np.full((batch_size, width), pad_id, np.int32)
    types = np.zeros((batch_size, width), np.int32)
    mask = np.zeros((batch_size, width), np.int32)
    labels = np.zeros((batch_size,), data.labels.dtype)
    weights = np.zeros((batch_size,), np.float32)
    for row, i in enumerate(indices):
        n = len(data.input_ids[i])
        ids[row, :n] = data.input_ids[i]
        types[row, :n] = data.token_type_ids[i]
        mask[row, :n] = 1
        labels[row] = data.labels[i]
        weights[row] = 1.0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "labels": labels,
        "weights": weights,
    }


def batches(data: Encoded, batch_size, lengths, pad_id, shuffle=False, seed=0, epoch=0):
    """Yield (indices, batch) over one pass of `data`."""
    for indices in batch_order(data.lengths, batch_size, shuffle, seed, epoch):
        yield indices, make_batch(data, indices, batch_size, lengths, pad_id)


def padding_fraction(data: Encoded, batch_size, lengths, seed=0) -> float:
    """Share of padded token slots in one shuffled epoch (for the log)."""
    real = padded = 0
    for indices in batch_order(data.lengths, batch_size, True, seed, 0):
        real += int(data.lengths[indices].sum())
        padded += batch_size * _bucket(int(data.lengths[indices].max()), lengths)
    return 1.0 - real / max(padded, 1)
