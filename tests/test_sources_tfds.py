"""The tfds:<name> source on datasets prepared here in TFDS's array_record format (without
TensorFlow): classification with ClassLabel names, sentence pairs, token classification, and
the errors for a missing or unprepared dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxft.data import sources
from jaxft.errors import UserError
from tests.conftest import needs_torch

tfds = pytest.importorskip("tensorflow_datasets")


def _prepare(data_dir, name, features, splits):
    """Write `splits` ({split: rows}) as the array_record dataset `name` into `data_dir`."""

    # Unregistered, so jaxft finds it from the files alone, as one prepared on another machine.
    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(rows) for split, rows in splits.items()}

        def _generate_examples(self, rows):
            yield from enumerate(rows)

    Builder.name = name
    Builder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _config(source, path, **columns):
    from jaxft import config

    c = config.defaults().data
    c.source, c.path = source, str(path)
    for key, value in columns.items():
        c[key] = value
    return c


def test_sentence_classification_with_class_names(tmp_path):
    rows = lambda n: [{"sentence": f"review {i} é", "label": i % 3} for i in range(n)]
    features = {
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=["neg", "neutral", "pos"]),
    }
    _prepare(tmp_path, "jaxft_reviews", features, {"train": rows(7), "test": rows(4)})
    splits, names = sources.load(_config("tfds:jaxft_reviews", tmp_path, text_column="sentence"))
    assert names == ["neg", "neutral", "pos"]
    assert sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 7
    by_text = dict(zip(splits["train"].text, splits["train"].label, strict=True))
    assert by_text["review 4 é"] == "neutral"  # ids come back as their class names


def test_pairs_and_float_labels(tmp_path):
    features = {
        "a": tfds.features.Text(),
        "b": tfds.features.Text(),
        "score": tfds.features.Scalar(dtype=np.float32),
    }
    rows = [{"a": f"first {i}", "b": f"second {i}", "score": i / 2} for i in range(5)]
    _prepare(tmp_path, "jaxft_pairs", features, {"train": rows, "validation": rows[:2]})
    config = _config("tfds:jaxft_pairs", tmp_path, text_column="a", text_pair_column="b",
                     label_column="score")  # fmt: skip
    splits, names = sources.load(config)
    assert names is None
    train = splits["train"]
    pairs = sorted(zip(train.text, train.text_pair, train.label, strict=True))
    assert pairs[3] == ("first 3", "second 3", 1.5)


def test_token_classification_tags_become_names(tmp_path):
    features = {
        "tokens": tfds.features.Sequence(tfds.features.Text()),
        "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=["O", "B-PER", "I-PER"])),
    }
    rows = [{"tokens": ["Ada", "Lovelace", "wrote"], "tags": [1, 2, 0]}] * 3
    _prepare(tmp_path, "jaxft_ner", features, {"train": rows})
    config = _config("tfds:jaxft_ner", tmp_path, text_column="tokens", label_column="tags")
    splits, names = sources.load(config)
    assert names == ["O", "B-PER", "I-PER"]
    assert splits["train"].words[0] == ["Ada", "Lovelace", "wrote"]
    assert splits["train"].label[0] == ["B-PER", "I-PER", "O"]


def test_missing_dataset_names_what_is_there(tmp_path):
    features = {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}
    _prepare(tmp_path, "jaxft_present", features, {"train": [{"text": "x", "label": 0}]})
    with pytest.raises(UserError, match="no tfds dataset 'jaxft_absent'.*jaxft_present"):
        sources.load(_config("tfds:jaxft_absent", tmp_path))


def test_catalog_dataset_not_prepared_says_how(tmp_path):
    with pytest.raises(UserError, match="not prepared in .*file_format=array_record"):
        sources.load(_config("tfds:mnist", tmp_path))


def test_wrong_column_is_named(tmp_path):
    features = {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}
    _prepare(tmp_path, "jaxft_cols", features, {"train": [{"text": "x", "label": 0}]})
    with pytest.raises(UserError, match="no column 'sentence'"):
        sources.load(_config("tfds:jaxft_cols", tmp_path, text_column="sentence"))


@needs_torch
def test_an_experiment_trains_on_a_tfds_dataset(tmp_path, tiny_model_dir):
    rows = lambda n: [{"sentence": f"{'good' if i % 2 else 'bad'} film {i}", "label": i % 2}
                      for i in range(n)]  # fmt: skip
    features = {
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=["neg", "pos"]),
    }
    _prepare(tmp_path / "tfds", "jaxft_films", features, {"train": rows(24), "test": rows(8)})
    command = [sys.executable, "-m", "jaxft", "train", "experiments/rotten_tomatoes.py"]
    command += ["--workdir", str(tmp_path / "run"), f"--config.model={tiny_model_dir}"]
    command += ["--config.data.source=tfds:jaxft_films", f"--config.data.path={tmp_path / 'tfds'}"]
    command += ["--config.data.text_column=sentence", "--config.train.epochs=1"]
    command += ["--config.train.batch_size=8", "--config.train.progress=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert "accuracy" in results["test"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"]["label_names"] == ["neg", "pos"]


def test_without_tfds_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(UserError, match="pip install tensorflow-datasets==4.9.10"):
        sources.load(_config("tfds:anything", tmp_path))
