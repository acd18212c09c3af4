"""Extractive question answering: windows over long contexts, span labels, n-best decoding.

A question and its context become one or more windows ("features") of `data.max_length`
tokens: the question, then a slice of the context, consecutive slices overlapping by
`task.doc_stride` tokens (the fast tokenizer's overflow, with character offsets). A window is
trained to point at the answer's first and last tokens when the whole answer lies inside it, and
at [CLS] (token 0) otherwise or when the question is unanswerable.

Decoding scores every (start, end) pair among each window's `task.n_best` highest start and end
logits, keeps spans inside the context, in order and at most `task.max_answer_length` tokens
long, and returns the best span's text over all windows of the question. With
`task.squad_v2`, the empty answer wins when the [CLS] score (the lowest over windows) beats the
best span by more than `task.null_threshold`.
"""

import dataclasses
import logging

import numpy as np

from jaxft.data import batching
from jaxft.data.squad import Questions
from jaxft.errors import UserError
from jaxft.metrics import squad as squad_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Windows:
    """The windows of one split, in `batching.Encoded` form plus what decoding needs."""

    encoded: batching.Encoded  # labels [windows, 2]: (start token, end token)
    question: np.ndarray  # [windows] index of each window's question
    offsets: list[list[tuple[int, int] | None]]  # per window token: context characters or None


def make_windows(tokenizer, questions: Questions, config) -> Windows:
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("question answering needs a fast tokenizer (tokenizer.json) for offsets")
    limit, stride = config.data.max_length, config.task.doc_stride
    enc = tokenizer(
        questions.questions,
        questions.contexts,
        truncation="only_second",
        max_length=limit,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    owner = np.asarray(enc["overflow_to_sample_mapping"], np.int64)
    offsets, labels = [], np.zeros((len(owner), 2), np.int32)
    for w, q in enumerate(owner):
        sequence = enc.sequence_ids(w)
        window_offsets = [
            tuple(o) if sequence[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][w])
        ]
        offsets.append(window_offsets)
        answers = questions.answers[q]
        if answers:
            text, start = answers[0]  # train on the first gold answer, as SQuAD's scripts do
            labels[w] = _span_tokens(window_offsets, start, start + len(text))
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    encoded = batching.Encoded(
        input_ids=[np.asarray(x, np.int32) for x in enc["input_ids"]],
        token_type_ids=[np.asarray(x, np.int32) for x in types],
        labels=labels,
        truncated=0,
    )
    return Windows(encoded, owner, offsets)


def _span_tokens(offsets, start_char: int, end_char: int) -> tuple[int, int]:
    """(first, last) token of the answer's characters [start_char, end_char) in this window, or
    (0, 0) — [CLS] — when the window does not hold the whole answer."""
    context = [t for t, o in enumerate(offsets) if o is not None]
    if not context:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = next(t for t in context if offsets[t][1] > start_char)
    end = next(t for t in reversed(context) if offsets[t][0] < end_char)
    return start, end


def all_span_logits(windows: Windows, params, eval_step, batch_size, buckets, pad_id):
    """Per window: its (start logits, end logits) over its own tokens."""
    out = [None] * len(windows.encoded)
    for indices, batch in batching.batches(windows.encoded, batch_size, buckets, pad_id):
        logits = np.asarray(eval_step(params, batch), np.float32)
        for row, w in enumerate(indices):
            n = len(windows.encoded.input_ids[w])
            out[w] = (logits[row, :n, 0], logits[row, :n, 1])
    return out


def decode(windows: Windows, span_logits, contexts: list[str], task) -> list[dict]:
    """The best answer of every question: {"answer", "start", "end", "score"} (character span
    [start, end) of its context; "" with start = end = -1 for no answer)."""
    best = [{"answer": "", "start": -1, "end": -1, "score": -np.inf} for _ in contexts]
    null = [np.inf] * len(contexts)
    for w, (starts, ends) in enumerate(span_logits):
        q, offsets = int(windows.question[w]), windows.offsets[w]
        null[q] = min(null[q], float(starts[0] + ends[0]))
        top_starts = np.argsort(starts)[::-1][: task.n_best]
        top_ends = np.argsort(ends)[::-1][: task.n_best]
        for s in top_starts:
            for e in top_ends:
                if offsets[s] is None or offsets[e] is None:
                    continue
                if e < s or e - s + 1 > task.max_answer_length:
                    continue
                score = float(starts[s] + ends[e])
                if score > best[q]["score"]:
                    a, b = offsets[s][0], offsets[e][1]
                    best[q] = {"answer": contexts[q][a:b], "start": a, "end": b, "score": score}
    if task.squad_v2:
        for q, answer in enumerate(best):
            if null[q] > answer["score"] + task.null_threshold:
                best[q] = {"answer": "", "start": -1, "end": -1, "score": null[q]}
    return best


def score(exp, params, split: str, eval_step) -> dict:
    """Exact Match and F1 (official SQuAD normalisation) of the decoded answers."""
    questions, windows = exp.raw[split], exp.windows[split]
    c = exp.config
    span_logits = all_span_logits(
        windows,
        params,
        eval_step,
        c.train.eval_batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
    )
    answers = decode(windows, span_logits, questions.contexts, c.task)
    predictions = {qid: a["answer"] for qid, a in zip(questions.ids, answers, strict=True)}
    gold = {qid: [t for t, _ in a] for qid, a in zip(questions.ids, questions.answers, strict=True)}
    return squad_metrics.scores(predictions, gold)


def check_version(splits: dict[str, Questions], squad_v2: bool) -> None:
    for split, questions in splits.items():
        if questions.unanswerable and not squad_v2:
            raise UserError(
                f"the {split!r} split has {questions.unanswerable} unanswerable questions "
                "(SQuAD v2.0); set task.squad_v2=true so the model may answer nothing"
            )


def predict(config, params, tokenizer, eval_step, questions: list[str], contexts) -> list[dict]:
    """Per question: the answer span in its context."""
    if contexts is None or len(contexts) != len(questions):
        raise UserError(
            "question answering predicts from pairs: give --input FILE.jsonl with 'text' (the "
            "question) and 'text_pair' (the context) on every line"
        )
    data = Questions(
        ids=[str(i) for i in range(len(questions))],
        questions=list(questions),
        contexts=list(contexts),
        answers=[[] for _ in questions],
    )
    windows = make_windows(tokenizer, data, config)
    lengths = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    span_logits = all_span_logits(
        windows,
        params,
        eval_step,
        config.train.eval_batch_size,
        lengths,
        tokenizer.pad_token_id or 0,
    )
    answers = decode(windows, span_logits, data.contexts, config.task)
    return [{"question": q, **a} for q, a in zip(questions, answers, strict=True)]
