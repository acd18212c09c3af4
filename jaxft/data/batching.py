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
    """Token ids of one split (ragged: one array per example) and its targets: class ids or
    values in `labels`, target token ids in `targets` (seq2seq), or per-token tag ids in
    `token_labels` (token classification: IGNORE except on the tokens that carry a word's tag,
    with `word_starts` the token of each word and `word_labels` the words' gold tag ids)."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray | None
    truncated: int
    targets: list[np.ndarray] | None = None
    target_truncated: int = 0
    token_labels: list[np.ndarray] | None = None
    word_starts: list[np.ndarray] | None = None  # -1: the word lost all its tokens (truncation)
    word_labels: list[np.ndarray] | None = None

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


def tokenize_words(
    tokenizer, words: list[list[str]], word_labels, max_length: int, label_subtokens=False
) -> Encoded:
    """Pre-split words -> tokens, each word's tag on its first sub-token (on all of them with
    `label_subtokens`) and IGNORE elsewhere; `truncated` counts the sentences that lost words."""
    enc = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    token_labels, starts = [], []
    for i, ids in enumerate(enc["input_ids"]):
        word_of_token = enc.word_ids(i)
        first = np.full(len(words[i]), -1, np.int64)
        labels = np.full(len(ids), IGNORE, np.int32)
        previous = None
        for t, w in enumerate(word_of_token):
            if w is not None and w != previous:
                first[w] = t
            if w is not None and word_labels is not None and (w != previous or label_subtokens):
                labels[t] = word_labels[i][w]
            previous = w
        token_labels.append(labels)
        starts.append(first)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Encoded(
        input_ids=[np.asarray(x, np.int32) for x in enc["input_ids"]],
        token_type_ids=[np.asarray(x, np.int32) for x in types],
        labels=None,
        truncated=sum(bool((s < 0).any()) for s in starts),
        token_labels=token_labels,
        word_starts=starts,
        word_labels=word_labels,
    )


def truncate(ids: list[int], limit: int) -> np.ndarray:
    """At most `limit` ids, keeping the closing special token (EOS) that the tokenizer added."""
    return np.asarray(ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:], np.int32)


def encode(tokenizer, texts: list[str], limit: int) -> tuple[list[np.ndarray], int]:
    """(token ids truncated to `limit`, how many were truncated) of each text."""
    full = tokenizer(texts, return_attention_mask=False)["input_ids"]
    return [truncate(x, limit) for x in full], sum(len(x) > limit for x in full)


def tokenize_seq2seq(
    tokenizer, sources: list[str], targets: list[str], max_length: int, max_target_length: int
) -> Encoded:
    """Source and target token ids, each truncated to its maximum (truncations counted)."""
    input_ids, truncated = encode(tokenizer, sources, max_length)
    target_ids, target_truncated = encode(tokenizer, targets, max_target_length)
    return Encoded(
        input_ids=input_ids,
        token_type_ids=[np.zeros_like(x) for x in input_ids],
        labels=None,
        truncated=truncated,
        targets=target_ids,
        target_truncated=target_truncated,
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


def batch_order(
    lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int, epoch: int, sort_window=64
):
    """Example indices grouped into batches.

    Training shuffles, then sorts by length inside windows of `sort_window` batches so batches
    are short, then shuffles the batch order; evaluation just sorts by length. A window as large
    as the whole split makes nearly the same batches every epoch; `sort_window=1` gives plain
    random batches.
    """
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * max(int(sort_window), 1)
    chunks = []
    for start in range(0, len(order), window):
        part = order[start : start + window]
        part = part[np.argsort(lengths[part], kind="stable")]
        chunks.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [chunks[i] for i in rng.permutation(len(chunks))]


IGNORE = -100  # label id the seq2seq loss skips (target padding), as in Hugging Face


def make_batch(
    data: Encoded, indices, batch_size: int, lengths: list[int], pad_id: int, target_lengths=None
):
    """A padded numpy batch; rows past len(indices) are padding with weight 0.

    Seq2seq batches carry `labels` [batch, target bucket] with IGNORE past each target's end."""
    width = _bucket(max(len(data.input_ids[i]) for i in indices), lengths)
    ids = np.full((batch_size, width), pad_id, np.int32)
    types = np.zeros((batch_size, width), np.int32)
    mask = np.zeros((batch_size, width), np.int32)
    weights = np.zeros((batch_size,), np.float32)
    if data.targets is not None:
        longest = max(len(data.targets[i]) for i in indices)
        target_width = _bucket(longest, target_lengths) if target_lengths else longest
        labels = np.full((batch_size, target_width), IGNORE, np.int32)
    elif data.token_labels is not None:
        labels = np.full((batch_size, width), IGNORE, np.int32)
    else:  # no labels at all when predicting
        # Class ids or values [batch], or QA spans [batch, 2].
        shape, dtype = (batch_size,), np.int32
        if data.labels is not None:
            shape, dtype = (batch_size, *data.labels.shape[1:]), data.labels.dtype
        labels = np.zeros(shape, dtype)
    for row, i in enumerate(indices):
        n = len(data.input_ids[i])
        ids[row, :n] = data.input_ids[i]
        types[row, :n] = data.token_type_ids[i]
        mask[row, :n] = 1
        if data.targets is not None:
            labels[row, : len(data.targets[i])] = data.targets[i]
        elif data.token_labels is not None:
            labels[row, :n] = data.token_labels[i]
        elif data.labels is not None:
            labels[row] = data.labels[i]
        weights[row] = 1.0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "labels": labels,
        "weights": weights,
    }


def batches(
    data: Encoded,
    batch_size,
    lengths,
    pad_id,
    shuffle=False,
    seed=0,
    epoch=0,
    target_lengths=None,
    skip=0,
    sort_window=64,
):
    """Yield (indices, batch) over one pass of `data`, from its `skip`-th batch on (a resumed
    run skips the batches it already took, without building them)."""
    order = batch_order(data.lengths, batch_size, shuffle, seed, epoch, sort_window)
    for indices in order[skip:]:
        yield indices, make_batch(data, indices, batch_size, lengths, pad_id, target_lengths)


def padding_fraction(data: Encoded, batch_size, lengths, seed=0, sort_window=64) -> float:
    """Share of padded token slots in one shuffled epoch (for the log)."""
    real = padded = 0
    for indices in batch_order(data.lengths, batch_size, True, seed, 0, sort_window):
        real += int(data.lengths[indices].sum())
        padded += batch_size * _bucket(int(data.lengths[indices].max()), lengths)
    return 1.0 - real / max(padded, 1)


def prefetch(iterable, size: int = 2):
    """Yield the items of `iterable`, produced up to `size` ahead by a background thread, so
    building and placing the next batches overlaps the device's work on the current one. An
    exception in the producer is raised here; leaving the loop early stops the producer."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            items.put((done, e))

    thread = threading.Thread(target=produce, daemon=True, name="jaxft-prefetch")
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
