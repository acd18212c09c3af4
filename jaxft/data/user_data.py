"""A user's own data: local files, `datasets.save_to_disk` folders and a Python function. Each
returns `({split: Examples}, label names or None)`.

Column names come from `data.text_column`, `data.text_pair_column` and `data.label_column`. A
text column holding lists of words (with a label column of lists of tags) is read as token
classification data.
"""

import importlib
import importlib.util
from pathlib import Path

from jaxft.data.sources import Examples, _tagged, read_conll
from jaxft.errors import UserError

FILE_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".conll": "conll",
}


def local_files(
    files: dict, text_column: str, label_column: str, text_pair_column: str | None = None
):
    """csv / tsv / jsonl / parquet / conll files, one per split (tables read with `datasets`)."""
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
        if fmt == "conll":
            splits[split] = _tagged(read_conll(path))
            if not len(splits[split]):
                raise UserError(f"the {split!r} split is empty: {path} has no sentences")
            continue
        kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
        try:
            table = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
        except ValueError as e:
            if "corresponds to no data" in str(e):  # a header-only or empty file
                raise UserError(f"the {split!r} split is empty: {path} has no rows") from e
            raise
        rows = {c: table[c] for c in table.column_names}
        splits[split] = from_columns(path, rows, text_column, label_column, text_pair_column)
    return splits, None


def from_columns(where, columns: dict, text_column, label_column, text_pair_column=None):
    """Examples from {column name: values}; `where` names the data in errors."""
    for column in (text_column, label_column, text_pair_column):
        if column and column not in columns:
            raise UserError(
                f"{where} has no column {column!r}; its columns are {sorted(columns)}. "
                "Set --config.data.text_column / text_pair_column / label_column."
            )
    texts = list(columns[text_column])
    if texts and isinstance(texts[0], list | tuple):  # pre-split words, each tagged: NER
        return _words_and_tags(where, texts, list(columns[label_column]), label_column)
    pairs = columns[text_pair_column] if text_pair_column else None
    return Examples(
        text=[str(t) for t in texts],
        label=list(columns[label_column]),
        text_pair=[str(t) for t in pairs] if pairs is not None else None,
    )


def _words_and_tags(where, words, tags, label_column) -> Examples:
    for row, (w, t) in enumerate(zip(words, tags, strict=True)):
        if not isinstance(t, list | tuple) or len(t) != len(w):
            raise UserError(
                f"{where}, row {row}: {len(w)} words but {label_column!r} is {t!r}; token "
                "classification needs one tag per word"
            )
    return _tagged(
        [([str(x) for x in w], [str(x) for x in t]) for w, t in zip(words, tags, strict=True)]
    )


def from_disk(path, text_column, label_column, text_pair_column=None):
    """A `datasets.DatasetDict.save_to_disk` folder: its splits as they are named there."""
    import datasets

    folder = Path(path).expanduser()
    if not path or not folder.is_dir():
        raise UserError(f"data.source='disk' needs data.path: a save_to_disk folder; got {path!r}")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except FileNotFoundError as e:
        raise UserError(f"{folder} is not a datasets save_to_disk folder ({e})") from e
    if isinstance(loaded, datasets.Dataset):
        raise UserError(
            f"{folder} holds one Dataset without splits; save a DatasetDict "
            "({'train': ..., 'validation': ..., 'test': ...}) instead"
        )
    splits = {}
    for split, table in loaded.items():
        rows = {c: table[c] for c in table.column_names}
        where = f"{folder} split {split!r}"
        splits[split] = from_columns(where, rows, text_column, label_column, text_pair_column)
    return splits, None


def _resolve_function(spec: str):
    """'path/to/file.py:name' or 'package.module:name' -> the function."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise UserError(f"data.function={spec!r} must look like path/to/file.py:name")
    if target.endswith(".py"):
        file = Path(target).expanduser()
        if not file.is_file():
            raise UserError(f"data.function: file not found: {file}")
        module_spec = importlib.util.spec_from_file_location(f"jaxft_data_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UserError(f"data.function: cannot import {target!r} ({e})") from e
    if not callable(getattr(module, name, None)):
        raise UserError(f"data.function: {target} has no function {name!r}")
    return getattr(module, name)


def from_function(spec: str, text_column, label_column, text_pair_column=None):
    """Call the user's function: it returns {split: rows}, rows being a list of dicts (keyed by
    the configured column names) or `jaxft.data.sources.Examples`."""
    result = _resolve_function(spec)()
    if not isinstance(result, dict) or not result:
        raise UserError(f"data.function {spec} must return {{split: rows}}; got {type(result)}")
    splits = {}
    for split, rows in result.items():
        if isinstance(rows, Examples):
            splits[split] = rows
            continue
        rows = list(rows)
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise UserError(
                f"data.function {spec}: split {split!r} must be a non-empty list of dicts"
            )
        keys = {k for r in rows for k in r}
        columns = {k: [r.get(k) for r in rows] for k in keys}
        where = f"data.function {spec} split {split!r}"
        splits[split] = from_columns(where, columns, text_column, label_column, text_pair_column)
    return splits, None
