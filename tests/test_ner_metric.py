"""The entity scorer against the `seqeval` package, well-formed and malformed sequences alike."""

import random

import pytest

from jaxft.metrics import ner

seqeval_metrics = pytest.importorskip("seqeval.metrics")


def test_entities_of_well_formed_bio():
    tags = ["B-person", "I-person", "O", "B-loc", "B-loc", "I-loc", "O"]
    assert ner.entities(tags) == [("person", 0, 1), ("loc", 3, 3), ("loc", 4, 5)]


def test_malformed_sequences_are_read_the_conlleval_way():
    # An I- after O opens an entity; a type change inside a run closes one and opens another.
    assert ner.entities(["O", "I-loc", "I-loc"]) == [("loc", 1, 2)]
    assert ner.entities(["B-person", "I-loc"]) == [("person", 0, 0), ("loc", 1, 1)]
    assert ner.entities(["I-person", "B-person", "I-person"]) == [
        ("person", 0, 0),
        ("person", 1, 2),
    ]
    assert ner.entities([]) == []


def _random_tags(rng, n, malformed: bool):
    kinds = ["person", "loc", "company"]
    prefixes = ["B", "I", "E", "S"] if malformed else ["B", "I"]
    tags, inside = [], None
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            tags.append("O")
            inside = None
        elif malformed or inside is None or r < 0.6:
            inside = rng.choice(kinds)
            tags.append(f"{rng.choice(prefixes) if malformed else 'B'}-{inside}")
        else:
            tags.append(f"I-{inside}")
    return tags


@pytest.mark.parametrize("malformed", [False, True])
def test_scores_equal_seqeval(malformed):
    rng = random.Random(int(malformed))
    gold = [_random_tags(rng, rng.randint(0, 15), malformed) for _ in range(300)]
    # Predictions: gold with some tags replaced, so some entities match and some do not.
    predicted = [
        [t if rng.random() < 0.8 else rng.choice(["O", "B-loc", "I-person", "I-loc"]) for t in s]
        for s in gold
    ]
    ours = ner.scores(gold, predicted)
    assert ours["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, predicted), abs=1e-12)
    assert ours["precision"] == pytest.approx(
        seqeval_metrics.precision_score(gold, predicted), abs=1e-12
    )
    assert ours["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, predicted), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(
        seqeval_metrics.accuracy_score(gold, predicted), abs=1e-12
    )
    # The entity lists themselves agree too, sentence by sentence.
    from seqeval.metrics.sequence_labeling import get_entities

    for tags in gold + predicted:
        assert ner.entities(tags) == get_entities(tags)


def test_no_entities_anywhere_scores_zero():
    assert ner.scores([["O", "O"]], [["O", "O"]])["f1"] == 0.0


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        ner.scores([["O", "O"]], [["O"]])
