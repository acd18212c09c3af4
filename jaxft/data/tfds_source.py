"""TensorFlow Datasets source: `data.source="tfds:<name>"` reads a dataset prepared in TFDS's
array_record format with `tfds.data_source` random access, so no TensorFlow is needed.

`<name>` is what `tfds.builder` takes: `imdb_reviews`, `glue/sst2`, `my_set:1.0.0`. The dataset
must already sit in `data.path` (TFDS's data_dir; empty = TFDS's default, ~/tensorflow_datasets),
prepared with `--file_format=array_record`; nothing is downloaded. Columns are chosen with
`data.text_column`, `data.text_pair_column` and `data.label_column`; a `ClassLabel` label gives
the label names, a sequence of words with a sequence of `ClassLabel` tags is token
classification data.
"""

from pathlib import Path

import numpy as np

from jaxft.data.sources import SPLITS
from jaxft.data.user_data import from_columns
from jaxft.errors import UserError

INSTALL = "pip install tensorflow-datasets==4.9.10 array-record==0.8.6"


def load(name: str, data_dir, text_column, label_column, text_pair_column=None):
    """({split: Examples}, label names or None) of the train/validation/test splits there are."""
    tfds = _import_tfds()
    data_dir = str(Path(data_dir).expanduser()) if data_dir else None
    where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets)"
    builder = _builder(tfds, name, data_dir, where)
    if builder.info.file_format is not None and builder.info.file_format.value != "array_record":
        raise UserError(
            f"tfds dataset {name!r} in {where} is stored as {builder.info.file_format.value}, "
            f"which needs TensorFlow to read; prepare it as array_record instead: "
            f"tfds build {name} --data_dir=DIR --file_format=array_record"
        )
    features = builder.info.features
    # FeaturesDict has `in` and `[]` but no `.get`
    label_feature = features[label_column] if label_column in features else None  # noqa: SIM401
    sources = builder.as_data_source()
    splits = {}
    for split in (s for s in SPLITS if s in sources):
        source = sources[split]
        rows = [source[i] for i in range(len(source))]
        columns = {key: [_plain(row[key]) for row in rows] for key in features}
        if label_column in columns:
            columns[label_column] = _label_names(label_feature, columns[label_column])
        splits[split] = from_columns(
            f"tfds {name!r} split {split!r}", columns, text_column, label_column, text_pair_column
        )
    if "train" not in splits:
        raise UserError(f"tfds dataset {name!r} in {where} has no 'train' split: {list(sources)}")
    return splits, _class_names(label_feature)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(f"data.source='tfds:...' needs TensorFlow Datasets: {INSTALL}") from e
    return tfds


def _builder(tfds, name: str, data_dir, where: str):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UserError(
            f"no tfds dataset {name!r} in {where}; prepared there: {_prepared(data_dir)}"
        ) from e
    if not Path(builder.data_dir, "dataset_info.json").is_file():
        raise UserError(
            f"tfds dataset {name!r} is not prepared in {where} (nothing is downloaded at run "
            f"time); prepare it where there is network: tfds build {name} --data_dir=DIR "
            "--file_format=array_record, then set data.path=DIR"
        )
    return builder


def _prepared(data_dir) -> list[str]:
    root = Path(data_dir) if data_dir else Path("~/tensorflow_datasets").expanduser()
    found = {p.parent.parent.relative_to(root) for p in root.glob("**/dataset_info.json")}
    return sorted(str(p) for p in found) if root.is_dir() else []


def _plain(value):
    """TFDS values -> Python: bytes -> str, arrays -> lists (of str for text sequences)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _class_label(feature):
    """The ClassLabel of a label feature or of a sequence of labels, else None."""
    import tensorflow_datasets as tfds

    inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel
    return inner if isinstance(inner, tfds.features.ClassLabel) else None


def _class_names(feature) -> list[str] | None:
    label = _class_label(feature) if feature is not None else None
    return list(label.names) if label is not None else None


def _label_names(feature, values: list) -> list:
    """ClassLabel ids -> their names (one per row, or one list per row for tags)."""
    names = _class_names(feature)
    if names is None:
        return values
    if values and isinstance(values[0], list):
        return [[names[i] for i in row] for row in values]
    return [names[i] for i in values]
