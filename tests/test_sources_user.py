"""The user-data sources: GLUE TSV folders, save_to_disk folders and a Python function."""

import json
import subprocess
import sys

import pytest

from jaxft import config as config_lib
from jaxft.data import glue, sources
from jaxft.errors import UserError
from tests.conftest import needs_torch, sentiment_rows


def _write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _mrpc_rows(n, seed):
    """Paraphrase pairs: label 1 when both halves share their sentiment word (learnable)."""
    rows = []
    for i in range(n):
        a, b = sentiment_rows(2, seed * 1000 + i)
        label = int(a["label"] == b["label"])
        rows.append((label, i, i + 1, a["text"], b["text"]))
    return rows


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    _write_tsv(root / "MRPC/train.tsv", header, _mrpc_rows(160, 0))
    _write_tsv(root / "MRPC/dev.tsv", header, _mrpc_rows(32, 1))
    # CoLA has no header: source, label, original label, sentence.
    _write_tsv(
        root / "CoLA/train.tsv",
        None,
        [("gj04", 1, "", "the cat sat"), ("gj04", 0, "*", 'cat "the sat')],
    )
    _write_tsv(root / "CoLA/dev.tsv", None, [("gj04", 1, "", "a dog ran")])
    stsb_header = ["index", "genre", "filename", "year", "old_index", "source1", "source2"]
    stsb_header += ["sentence1", "sentence2", "score"]
    stsb = [(0, "g", "f", "y", 0, "s", "s", "a man plays", "a man is playing", 4.8)]
    _write_tsv(root / "STS-B/train.tsv", stsb_header, stsb)
    _write_tsv(root / "STS-B/dev.tsv", stsb_header, stsb)
    mnli_header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse"]
    mnli_header += ["sentence2_binary_parse", "sentence1_parse", "sentence2_parse"]
    mnli_header += ["sentence1", "sentence2", "label1", "gold_label"]
    mnli = [
        (0, 1, "1e", "gov", "", "", "", "", "it rains", "it is wet", "entailment", "entailment")
    ]
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        _write_tsv(root / "MNLI" / name, mnli_header, mnli)
    # QQP's train file has rows with missing fields; they are skipped, not fatal.
    qqp_header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    _write_tsv(root / "QQP/train.tsv", qqp_header, [(0, 1, 2, "how?", "how so?", 1), (1, 3, 4)])
    _write_tsv(root / "QQP/dev.tsv", qqp_header, [(0, 1, 2, "why?", "what?", 0)])
    return root


def test_glue_tasks_read_their_own_formats(glue_root, caplog):
    splits, names = glue.load("mrpc", glue_root)
    assert set(splits) == {"train", "validation"} and names == ["0", "1"]
    assert splits["train"].text_pair is not None and len(splits["train"]) == 160
    splits, _ = glue.load("cola", glue_root / "CoLA")  # the task's own folder works too
    assert splits["train"].text == ["the cat sat", 'cat "the sat']  # quotes kept as text
    assert splits["train"].label == ["1", "0"]
    splits, names = glue.load("stsb", glue_root)
    assert names is None and splits["train"].label == [4.8]
    splits, names = glue.load("mnli", glue_root)
    assert set(splits) == {"train", "validation", "validation_mismatched"}
    assert names == ["entailment", "neutral", "contradiction"]
    with caplog.at_level("WARNING"):
        splits, _ = glue.load("qqp", glue_root)
    assert (
        len(splits["train"]) == 1 and "skipped 1 rows with missing fields (lines 3)" in caplog.text
    )


def test_glue_errors_name_the_fix(glue_root, tmp_path):
    with pytest.raises(UserError, match="unknown GLUE task 'mrcp'; use one of cola, sst2"):
        glue.load("mrcp", glue_root)
    with pytest.raises(UserError, match=r"no GLUE RTE data in .*expected .*RTE/train.tsv"):
        glue.load("rte", glue_root)
    bad = tmp_path / "MRPC"
    _write_tsv(bad / "train.tsv", ["Quality", "#1 String"], [(1, "a")])
    with pytest.raises(UserError, match=r"train.tsv: no column '#2 String' in its header"):
        glue.load("mrpc", tmp_path)
    c = config_lib.defaults()
    c.data.source = "glue:mrpc"
    with pytest.raises(UserError, match="needs data.path: your local GLUE folder"):
        sources.load(c.data)


def test_binary_tasks_report_the_positive_class_f1():
    import numpy as np

    from jaxft.metrics import classification

    labels, preds = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    out = classification.classification(labels, preds, 2)
    assert out["f1"] == pytest.approx(2 / 3)  # precision 2/3, recall 2/3 of class 1


@needs_torch
def test_glue_experiment_trains_mrpc_and_reports_the_official_metric(
    glue_root, tiny_model_dir, tmp_path
):
    command = [sys.executable, "-m", "jaxft", "train", "experiments/glue.py:mrpc"]
    command += ["--workdir", str(tmp_path), f"--config.data.path={glue_root}"]
    command += [f"--config.model={tiny_model_dir}", "--config.train.epochs=2"]
    command += ["--config.train.progress=false", "--config.data.max_length=32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "eval.json").read_text())
    assert set(results) == {"validation"}
    assert {"f1", "accuracy", "mcc", "loss"} <= set(results["validation"])
    from jaxft.train.writer import read_metrics

    (best,) = [r for r in read_metrics(tmp_path) if r["split"] == "best"]
    assert best["best_step"] in (5, 10)


def test_save_to_disk_folders_keep_their_splits(tmp_path):
    import datasets

    rows = sentiment_rows(8, 0)
    table = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": table, "test": table.select(range(3))}).save_to_disk(
        str(tmp_path / "dd")
    )
    c = config_lib.defaults()
    c.data.source, c.data.path = "disk", str(tmp_path / "dd")
    splits, _ = sources.load(c.data)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "test": 3}
    assert splits["train"].text[0] == rows[0]["text"]
    table.save_to_disk(str(tmp_path / "one"))
    c.data.path = str(tmp_path / "one")
    with pytest.raises(UserError, match="holds one Dataset without splits; save a DatasetDict"):
        sources.load(c.data)
    c.data.path, c.data.label_column = str(tmp_path / "dd"), "sentiment"
    with pytest.raises(UserError, match=r"split 'train' has no column 'sentiment'"):
        sources.load(c.data)


def test_a_function_named_in_the_config_provides_the_examples(tmp_path):
    module = tmp_path / "my_data.py"
    module.write_text(
        "def load():\n"
        "    rows = [{'text': 'good', 'label': 'pos'}, {'text': 'bad', 'label': 'neg'}]\n"
        "    return {'train': rows, 'test': rows[:1]}\n"
        "def broken():\n"
        "    return [1, 2]\n"
    )
    c = config_lib.defaults()
    c.data.source, c.data.function = "function", f"{module}:load"
    splits, _ = sources.load(c.data)
    assert splits["train"].text == ["good", "bad"] and splits["test"].label == ["pos"]
    c.data.function = f"{module}:broken"
    with pytest.raises(UserError, match=r"must return \{split: rows\}"):
        sources.load(c.data)
    c.data.function = f"{module}:missing"
    with pytest.raises(UserError, match="has no function 'missing'"):
        sources.load(c.data)
    c.data.source = "nope"
    with pytest.raises(UserError, match=r"unknown data source 'nope'; use one of .*glue:<task>"):
        sources.load(c.data)
