"""Token classification (NER): tag alignment, data sources, training, prediction spans, export."""

import json
import random

import numpy as np
import pytest

from jaxft import config as config_lib
from jaxft.data import batching, sources, tasks, user_data
from jaxft.errors import UserError
from jaxft.train import experiment, inference, loop
from tests.conftest import needs_torch, tiny_config

PEOPLE = [["alice"], ["bob", "marley"], ["carol"], ["david", "bowie"]]
PLACES = [["paris"], ["new", "york"], ["london"], ["tokyo"]]
FILLER = ["we", "met", "in", "at", "the", "today", "with", "and", "saw", "went", "to"]


def _sentence(rng):
    words, tags = [], []
    for _ in range(rng.randint(3, 9)):
        r = rng.random()
        if r < 0.2:
            entity, kind = rng.choice(PEOPLE), "person"
        elif r < 0.35:
            entity, kind = rng.choice(PLACES), "loc"
        else:
            words.append(rng.choice(FILLER))
            tags.append("O")
            continue
        words += entity
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
    return words, tags


def _write_conll(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            words, tags = _sentence(rng)
            f.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True))
            f.write("\n")
    return path


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    return {
        split: _write_conll(folder / f"{split}.conll", n, seed)
        for split, n, seed in (("train", 400, 0), ("validation", 64, 1), ("test", 64, 2))
    }


def _config(model_dir, files, **overrides):
    """The shared tiny config (tests/conftest.py), as a token classifier."""
    settings = {"task.kind": "token_classification", "optim.lr": 3e-3, "train.epochs": 4}
    return tiny_config(model_dir, files, **settings, **{"train.log_every": 10, **overrides})


def test_tags_go_on_first_sub_tokens(minilm_dir):
    from transformers import AutoTokenizer

    from jaxft.data.batching import IGNORE

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    words = [["Unbelievably", "Alice", "went"]]
    pieces = [tokenizer.tokenize(w) for w in words[0]]
    assert len(pieces[0]) > 1  # a word of several sub-tokens
    data = batching.tokenize_words(tokenizer, words, [np.array([0, 1, 0])], 32)
    labels = data.token_labels[0]
    starts = data.word_starts[0]
    assert starts.tolist() == [1, 1 + len(pieces[0]), 1 + len(pieces[0]) + len(pieces[1])]
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS], [SEP]
    assert labels[starts].tolist() == [0, 1, 0]
    assert (labels[2 : starts[1]] == IGNORE).all()  # the other sub-tokens of "Unbelievably"
    everywhere = batching.tokenize_words(tokenizer, words, [np.array([0, 1, 0])], 32, True)
    assert everywhere.token_labels[0][1 : starts[1]].tolist() == [0] * len(pieces[0])
    # Truncation: words past max_length keep no token and are counted.
    short = batching.tokenize_words(tokenizer, words, [np.array([0, 1, 0])], 4)
    assert short.word_starts[0][-1] == -1 and short.truncated == 1


def test_conll_and_jsonl_sources(tmp_path):
    conll = _write_conll(tmp_path / "a.conll", 5, 0)
    examples = sources.read_conll(conll)
    assert len(examples) == 5 and all(len(w) == len(t) for w, t in examples)
    rows = [{"tokens": ["alice", "went"], "ner": ["B-person", "O"]}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits, _ = user_data.local_files({"train": tmp_path / "a.jsonl"}, "tokens", "ner")
    assert splits["train"].words == [["alice", "went"]]
    assert splits["train"].label == [["B-person", "O"]]
    bad = [{"tokens": ["alice", "went"], "ner": ["B-person"]}]
    (tmp_path / "b.jsonl").write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(UserError, match=r"b.jsonl, row 0: 2 words but 'ner' is \['B-person'\]"):
        user_data.local_files({"train": tmp_path / "b.jsonl"}, "tokens", "ner")
    (tmp_path / "c.conll").write_text("alice\tB-person\nwent\n")
    with pytest.raises(UserError, match=r"c.conll, line 2: 'went' has no tag"):
        sources.read_conll(tmp_path / "c.conll")


def test_a_tag_unseen_in_training_names_split_row_and_word():
    train = sources.Examples(text=["a b"], label=[["O", "B-loc"]], words=[["a", "b"]])
    test = sources.Examples(text=["a b"], label=[["O", "B-xyz"]], words=[["a", "b"]])
    names = tasks.label_names_for("token_classification", {"train": train}, None)
    assert names == ["O", "B-loc"]
    with pytest.raises(UserError, match=r"split 'test', row 0, word 1: tag 'B-xyz' is not in"):
        tasks.encode_labels("token_classification", "test", test, names)


def test_wnut16_split_follows_the_sentence_index():
    splits, names = sources.wnut16()
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 1914,
        "validation": 240,
        "test": 240,
    }
    assert names[0] == "O" and len(names) == 21  # O + B/I of 10 types
    first = splits["test"]  # sentence 0 is the first test sentence
    assert first.words[0][:3] == ["@paulwalk", "It", "'s"]
    assert "B-facility" in first.label[0]


@needs_torch
def test_token_head_matches_hf_token_classification(tiny_model_dir, tmp_path):
    import torch
    import transformers

    from jaxft import models

    torch.manual_seed(0)
    hf = transformers.BertForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=5)
    hf.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    model, params = models.from_pretrained(tmp_path, head="token_classification", num_labels=5)
    ids = np.random.default_rng(0).integers(100, 2000, (2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    ours = model.apply({"params": params}, ids, attention_mask=mask).logits
    with torch.no_grad():
        theirs = hf.eval()(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert ours.shape == (2, 12, 5)
    np.testing.assert_allclose(np.asarray(ours)[mask == 1], theirs[mask == 1], atol=1e-4)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, ner_files, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ner_run")
    results = loop.train_and_evaluate(_config(tiny_model_dir, ner_files), workdir)
    return workdir, results


@needs_torch
def test_training_learns_the_entities(trained):
    from jaxft.train.writer import read_metrics

    workdir, results = trained
    first = [r for r in read_metrics(workdir) if r["split"] == "validation"][0]
    assert results["test"]["f1"] > 0.9, results
    assert results["test"]["f1"] >= first["f1"]
    assert set(results["test"]) == {"f1", "precision", "recall", "accuracy"}


@needs_torch
def test_predict_gives_entity_spans_with_character_offsets(trained):
    workdir, _ = trained
    text = "we  met alice in new york"
    (row,) = inference.predict(workdir, [text])
    assert row["tags"] == ["O", "O", "B-person", "O", "B-loc", "I-loc"]
    assert row["entities"] == [
        {"type": "person", "start": 8, "end": 13, "text": "alice"},
        {"type": "loc", "start": 17, "end": 25, "text": "new york"},
    ]


@needs_torch
def test_export_loads_as_hf_token_classification(trained, tmp_path):
    import torch
    import transformers

    workdir, _ = trained
    out = inference.export(workdir, "hf", tmp_path / "hf")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == "BertForTokenClassification"
    config, model, params, tokenizer = inference.load_workdir(workdir)
    assert hf.config.id2label[1] == config.task.label_names[1]
    enc = tokenizer(["we met alice in new york"], return_tensors="np")
    ours = model.apply(
        {"params": params},
        enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=enc["token_type_ids"],
    ).logits
    with torch.no_grad():
        theirs = hf(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)


def test_features_strategy_refuses_token_classification(tiny_model_dir, ner_files, tmp_path):
    config = _config(tiny_model_dir, ner_files, **{"strategy.name": "features"})
    with pytest.raises(UserError, match="task.kind=token_classification needs another strategy"):
        loop.train_and_evaluate(config, tmp_path)


def test_plain_texts_for_token_classification_are_an_error(tmp_path):
    plain = sources.Examples(text=["a b"], label=["x"])
    from jaxft.train import tokens

    c = config_lib.defaults()
    with pytest.raises(UserError, match="needs words with one tag each; the 'train' split"):
        tokens.prepare_split("train", plain, None, c, ["O"])


def test_max_train_examples_cuts_tagged_words(tiny_model_dir, ner_files):
    config = _config(tiny_model_dir, ner_files, **{"data.max_train_examples": 7})
    exp = experiment.prepare(config, splits=["train"])
    assert len(exp.data["train"]) == 7
