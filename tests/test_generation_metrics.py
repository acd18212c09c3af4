import math

import pytest

from jaxft.errors import UserError
from jaxft.metrics import generation

SENTENCES = ["the cat sat on the mat", "a quick brown fox jumps over the dog"]


def test_identical_corpus_scores_100():
    scores = generation.seq2seq(SENTENCES, SENTENCES)
    assert scores == pytest.approx({"bleu": 100, "rouge1": 100, "rouge2": 100, "rougeL": 100})


def test_disjoint_corpus_scores_0():
    hypotheses = ["one two three four five", "six seven eight nine ten"]
    assert generation.seq2seq(hypotheses, SENTENCES) == pytest.approx(
        {"bleu": 0, "rouge1": 0, "rouge2": 0, "rougeL": 0}
    )


def test_bleu_brevity_penalty_by_hand():
    # Every n-gram of the hypothesis is in the reference, so all precisions are 1 and BLEU is
    # the brevity penalty alone: exp(1 - reference length / hypothesis length) = exp(1 - 7/6).
    score = generation.bleu(["the cat sat on the mat"], ["the cat sat on the mat today"])
    assert score == pytest.approx(100 * math.exp(1 - 7 / 6))


def test_bleu_rises_when_one_hypothesis_improves():
    references = SENTENCES
    worse = ["the dog sat on a rug", "a quick red fox runs over the dog"]
    better = ["the cat sat on a rug", "a quick red fox runs over the dog"]
    low, high = generation.bleu(worse, references), generation.bleu(better, references)
    assert 0 < low < high < 100


def test_rouge_by_hand():
    # hypothesis "the cat sat", reference "the cat sat on the mat" (6 tokens):
    # rouge1: 3 matched unigrams, P = 3/3, R = 3/6 -> F = 2/3
    # rouge2: 2 matched bigrams, P = 2/2, R = 2/5 -> F = 2 * 0.4 / 1.4 = 4/7
    # rougeL: LCS of 3 tokens, same P and R as rouge1 -> F = 2/3
    scores = generation.rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores == pytest.approx({"rouge1": 200 / 3, "rouge2": 400 / 7, "rougeL": 200 / 3})


def test_rouge_is_the_mean_over_pairs():
    scores = generation.rouge(["the cat sat", "x"], ["the cat sat on the mat", "y"])
    assert scores["rouge1"] == pytest.approx(100 / 3)  # (2/3 + 0) / 2


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        generation.seq2seq(SENTENCES, SENTENCES[:1])


def test_empty_corpus_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        generation.bleu([], [])
