"""Task definitions: how raw labels become targets, which loss and which metrics apply."""

import numpy as np

from jaxft.data.sources import Examples
from jaxft.errors import UserError

# seq2seq labels are target texts; token_classification labels are lists of tags, one per word.
TASKS = ("classification", "regression", "seq2seq", "token_classification", "question_answering")


def label_names_for(task: str, splits: dict[str, Examples], given) -> list[str] | None:
    """Label names in index order: given by the config or dataset, else sorted train labels."""
    if task == "regression":
        return None
    if given:
        return [str(x) for x in given]
    if "train" not in splits:
        raise UserError("no train split to read the label set from; set config.task.label_names")
    if task == "token_classification":
        tags = {str(t) for sentence in splits["train"].label for t in sentence}
        return ["O", *sorted(tags - {"O"})] if "O" in tags else sorted(tags)
    return sorted({str(x) for x in splits["train"].label})


def encode_labels(task: str, split: str, examples: Examples, label_names) -> np.ndarray:
    """Raw labels -> int32 class ids (classification) or float32 targets (regression)."""
    if len(examples) == 0:
        raise UserError(f"the {split!r} split is empty: check the data source or its split rule")
    if task == "regression":
        try:
            return np.asarray([float(x) for x in examples.label], np.float32)
        except (TypeError, ValueError) as e:
            raise UserError(f"split {split!r}: regression labels must be numbers ({e})") from e
    index = {name: i for i, name in enumerate(label_names)}
    if task == "token_classification":
        return [_tag_ids(split, row, tags, index) for row, tags in enumerate(examples.label)]
    ids = np.empty(len(examples), np.int32)
    for row, label in enumerate(examples.label):
        key = str(label)
        if key not in index:
            raise UserError(
                f"split {split!r}, row {row}: label {label!r} is not in the label set "
                f"{label_names}. Fix the data or list every label in config.task.label_names."
            )
        ids[row] = index[key]
    return ids


def _tag_ids(split: str, row: int, tags, index: dict) -> np.ndarray:
    """One sentence's tags -> their ids, or an error naming the unseen tag and where it is."""
    try:
        return np.asarray([index[str(t)] for t in tags], np.int32)
    except KeyError as e:
        word = [str(t) for t in tags].index(e.args[0])
        raise UserError(
            f"split {split!r}, row {row}, word {word}: tag {e.args[0]!r} is not in the label "
            f"set {list(index)}. Fix the data or list every tag in config.task.label_names."
        ) from None
