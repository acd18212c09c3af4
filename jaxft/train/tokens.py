"""Token classification (NER): data preparation, word-level predictions, entity scores and
entity spans with character offsets for `jaxft predict`.

The model tags tokens; a word's tag is the one predicted on its first sub-token (the token its
gold tag was put on for training). A word that lost all its tokens to truncation is tagged O.
"""

import logging
import re

import numpy as np

from jaxft.data import batching, tasks
from jaxft.data.sources import Examples
from jaxft.errors import UserError
from jaxft.metrics import ner

log = logging.getLogger(__name__)


def prepare_split(split: str, examples: Examples, tokenizer, config, label_names):
    """Tokenize one split of pre-split, tagged words."""
    if examples.words is None:
        raise UserError(
            f"task.kind=token_classification needs words with one tag each; the {split!r} split "
            "has plain texts. Use a .conll file, or jsonl/parquet whose text column holds lists "
            "of words and label column lists of tags"
        )
    word_labels = tasks.encode_labels("token_classification", split, examples, label_names)
    data = batching.tokenize_words(
        tokenizer,
        examples.words,
        word_labels,
        config.data.max_length,
        config.task.label_subtokens,
    )
    if data.truncated:
        log.warning(
            "%s: %d of %d sentences lost words to max_length=%d (those words are tagged O)",
            split,
            data.truncated,
            len(data),
            config.data.max_length,
        )
    return data


def word_predictions(data, params, eval_step, batch_size, buckets, pad_id, outside: int):
    """The predicted tag id of every word of every sentence of `data`, in order."""
    predicted = [None] * len(data)
    for indices, batch in batching.batches(data, batch_size, buckets, pad_id):
        token_ids = np.asarray(eval_step(params, batch))
        for row, i in enumerate(indices):
            starts = data.word_starts[i]
            picked = token_ids[row, np.maximum(starts, 0)]
            predicted[i] = np.where(starts >= 0, picked, outside)
    return predicted


def outside_id(label_names) -> int:
    return label_names.index("O") if "O" in label_names else 0


def score(exp, params, split: str, eval_step) -> dict:
    """Entity-level micro precision / recall / F1 (CoNLL semantics) and word accuracy."""
    data = exp.data[split]
    names = exp.label_names
    predicted = word_predictions(
        data,
        params,
        eval_step,
        exp.config.train.eval_batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
        outside_id(names),
    )
    gold = [[names[t] for t in sentence] for sentence in data.word_labels]
    return ner.scores(gold, [[names[t] for t in sentence] for sentence in predicted])


WORD = re.compile(r"\S+")


def predict(config, params, tokenizer, eval_step, texts: list[str]) -> list[dict]:
    """Per text: its words' tags and its entities as character spans [start, end)."""
    names = list(config.task.label_names)
    spans = [[(m.start(), m.end()) for m in WORD.finditer(text)] for text in texts]
    words = [[text[a:b] for a, b in s] for text, s in zip(texts, spans, strict=True)]
    data = batching.tokenize_words(tokenizer, words, None, config.data.max_length)
    lengths = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    predicted = word_predictions(
        data,
        params,
        eval_step,
        config.train.eval_batch_size,
        lengths,
        tokenizer.pad_token_id or 0,
        outside_id(names),
    )
    results = []
    for text, offsets, tag_ids in zip(texts, spans, predicted, strict=True):
        tags = [names[t] for t in tag_ids]
        found = [
            {
                "type": kind,
                "start": offsets[first][0],
                "end": offsets[last][1],
                "text": text[offsets[first][0] : offsets[last][1]],
            }
            for kind, first, last in ner.entities(tags)
        ]
        results.append({"text": text, "entities": found, "tags": tags})
    return results
