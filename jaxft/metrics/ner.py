"""Entity-level precision, recall and F1 over BIO(ES) tag sequences, as CoNLL's conlleval and
the `seqeval` package score them by default.

A tag is `O`, or a prefix (B, I, E, S) and a type joined by '-' (`B-person`). Malformed sequences
are read the conlleval way: an I- after O or after another type opens a new entity, and a type
change closes the running one. An entity is (type, first word, last word); a predicted entity
counts only when its type and both ends equal a gold one's (micro average over all entities).
"""

OUTSIDE = ("O", ".")  # conlleval treats "." like O


def _split(tag: str) -> tuple[str, str]:
    """'B-person' -> ('B', 'person'); 'O' -> ('O', '_'): the first character is the prefix and
    what follows the first '-' the type (seqeval's reading, also of malformed tags)."""
    return tag[:1], tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    """Does the entity running at the previous word end before this word?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in OUTSIDE and prev_kind != kind


def _starts(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    """Does an entity start at this word?"""
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return tag not in OUTSIDE and prev_kind != kind


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) word indices of the entities in one sentence's tags."""
    found, begin = [], 0
    prev, prev_kind = "O", ""
    for i, full in enumerate([*tags, "O"]):
        tag, kind = _split(full)
        if _ends(prev, prev_kind, tag, kind):
            found.append((prev_kind, begin, i - 1))
        if _starts(prev, prev_kind, tag, kind):
            begin = i
        prev, prev_kind = tag, kind
    return found


def scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Micro precision / recall / F1 of entities, and word accuracy, over sentences."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    true_set, pred_set, words, correct = set(), set(), 0, 0
    for n, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted")
        true_set.update((n, *e) for e in entities(g))
        pred_set.update((n, *e) for e in entities(p))
        words += len(g)
        correct += sum(a == b for a, b in zip(g, p, strict=True))
    hits = len(true_set & pred_set)
    precision = hits / len(pred_set) if pred_set else 0.0
    recall = hits / len(true_set) if true_set else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": correct / max(words, 1),
    }
