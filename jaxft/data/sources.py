"""Where examples come from: built-in real datasets (ASSETS.md) and a user's local files.

A source returns `{split: Examples}` and, when the dataset fixes them, the label names in
index order. Splits are plain Python lists; tokenization happens later, in `batching`.
"""

import dataclasses
import hashlib
from pathlib import Path

from jaxft import assets
from jaxft.errors import UserError

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Examples:
    text: list[str]
    label: list  # raw labels (strings or numbers), mapped to ids by `tasks`
    text_pair: list[str] | None = None

    def __len__(self) -> int:
        return len(self.text)


def split_of(key: str) -> str:
    """The benchmark split rule: sha1 bucket 0 -> test, 1 -> validation, else train."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 10
    return {0: "test", 1: "validation"}.get(bucket, "train")


def rotten_tomatoes():
    """Rotten Tomatoes snippets (Pang & Lee), split by movie so no movie is in two splits."""
    import pandas as pd

    frame = pd.read_csv(assets.data_file("rotten_tomatoes"))
    frame = frame[frame["category"] != "plot"].drop_duplicates("text", keep="first")
    splits = {s: Examples(text=[], label=[]) for s in SPLITS}
    for text, label, movie in zip(
        frame["text"], frame["category"], frame["movie_name"], strict=True
    ):
        split = splits[split_of(str(movie))]
        split.text.append(str(text))
        split.label.append(label)
    return splits, ["rotten", "fresh"]


BUILTIN = {"rotten_tomatoes": rotten_tomatoes}
FILE_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}


def local_files(
    files: dict, text_column: str, label_column: str, text_pair_column: str | None = None
):
    """csv / tsv / jsonl / parquet files, one per split, read with `datasets`."""
    import datasets

    splits = {}
    for split, path in files.items():
        if not path:
            continue
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"data file for split {split!r} not found: {path}")
        fmt = FILE_FORMATS.get(path.suffix)
        if fmt is None:
            raise UserError(
                f"{path}: unknown file type {path.suffix!r}; use {sorted(FILE_FORMATS)}"
            )
        kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
        try:
            table = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
        except ValueError as e:
            if "corresponds to no data" in str(e):  # a header-only or empty file
                raise UserError(f"the {split!r} split is empty: {path} has no rows") from e
            raise
        for column in (text_column, label_column, text_pair_column):
            if column and column not in table.column_names:
                raise UserError(
                    f"{path} has no column {column!r}; its columns are {table.column_names}. "
                    "Set --config.data.text_column / text_pair_column / label_column."
                )
        splits[split] = Examples(
            text=[str(t) for t in table[text_column]],
            label=list(table[label_column]),
            text_pair=[str(t) for t in table[text_pair_column]] if text_pair_column else None,
        )
    return splits, None


def load(data_config):
    """`config.data` -> ({split: Examples}, label names or None)."""
    name = data_config.source
    if name in BUILTIN:
        return BUILTIN[name]()
    if name == "files":
        return local_files(
            dict(data_config.files),
            data_config.text_column,
            data_config.label_column,
            data_config.text_pair_column or None,
        )
    raise UserError(f"unknown data source {name!r}; use one of {sorted(BUILTIN) + ['files']}")
