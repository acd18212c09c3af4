"""Exact Match and F1 of extractive answers, with the official SQuAD normalisation.

An answer is normalised by lower-casing, removing punctuation, removing the articles a / an /
the, and collapsing whitespace. F1 is over the bags of normalised tokens. A question's score is
its best over the gold answers; an unanswerable question (SQuAD v2.0) has the one gold answer "",
so only the empty prediction scores there. Scores are percentages, as the official scripts print.
"""

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def f1(prediction: str, gold: str) -> float:
    predicted, wanted = normalize(prediction).split(), normalize(gold).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def scores(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict:
    """{"exact_match", "f1"} over every gold question (a missing prediction scores 0), and for
    data with unanswerable questions also the HasAns / NoAns breakdown."""
    per = {"exact": {}, "f1": {}}
    for qid, answers in gold.items():
        answers = answers or [""]
        prediction = predictions.get(qid)
        if prediction is None:
            per["exact"][qid] = per["f1"][qid] = 0.0
            continue
        per["exact"][qid] = max(exact(prediction, a) for a in answers)
        per["f1"][qid] = max(f1(prediction, a) for a in answers)
    result = {"exact_match": _mean(per["exact"].values()), "f1": _mean(per["f1"].values())}
    unanswerable = [qid for qid, answers in gold.items() if not answers]
    if unanswerable:
        answerable = [qid for qid, answers in gold.items() if answers]
        for name, ids in (("has_ans", answerable), ("no_ans", unanswerable)):
            result[f"{name}_exact"] = _mean(per["exact"][q] for q in ids)
            result[f"{name}_f1"] = _mean(per["f1"][q] for q in ids)
    return result


def _mean(values) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else 0.0
