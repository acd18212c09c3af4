"""Seq2seq fine-tuning of T5: loss, batching, training, generation scoring, predict, export and
bad input, on a tiny random T5 with the real T5 tokenizer and a synthetic word-translation task."""

import csv
import json
import logging
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxft import cli
from jaxft import config as config_lib
from jaxft.data import batching
from jaxft.errors import UserError
from jaxft.train import experiment, loop, step
from jaxft.train.writer import read_metrics
from tests.conftest import needs_torch

WORDS = [
    "red",
    "blue",
    "green",
    "house",
    "dog",
    "cat",
    "river",
    "tree",
    "sun",
    "moon",
    "stone",
    "bird",
]
SPANISH = [
    "rojo",
    "azul",
    "verde",
    "casa",
    "perro",
    "gato",
    "rio",
    "arbol",
    "sol",
    "luna",
    "piedra",
    "pajaro",
]
TINY_T5 = dict(
    d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16, dropout_rate=0.0
)


def _rows(n, seed):
    rng = random.Random(seed)
    lexicon = dict(zip(WORDS, SPANISH, strict=True))
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 4))
        rows.append({"text": " ".join(words), "label": " ".join(lexicon[w] for w in words)})
    return rows


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def word_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    return {
        split: _write(folder / f"{split}.csv", _rows(n, seed))
        for split, n, seed in (("train", 1500, 0), ("validation", 48, 1), ("test", 48, 2))
    }


def _config(files, **overrides):
    c = config_lib.defaults()
    c.model = "t5-small"
    c.random_init = True
    c.model_config = dict(TINY_T5)
    c.tokenizer = "t5"
    c.task.kind = "seq2seq"
    c.data.source = "files"
    for split, path in files.items():
        c.data.files[split] = str(path)
    c.data.max_length = 16
    c.data.max_target_length = 16
    c.generate.max_new_tokens = 16
    c.optim.lr = 3e-3
    c.optim.weight_decay = 0.0
    c.train.batch_size = 32
    c.train.epochs = 4
    c.train.log_every = 10
    c.train.progress = False
    for key, value in overrides.items():
        config_lib.apply_overrides(c, [(key, repr(value) if not isinstance(value, str) else value)])
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory, word_files):
    workdir = tmp_path_factory.mktemp("seq2seq_run")
    untrained = experiment.prepare(_config(word_files), splits=["validation"])
    eval_step = jax.jit(step.make_eval_step(untrained.model))
    before = experiment.score(untrained, untrained.params, "validation", eval_step)
    results = loop.train_and_evaluate(_config(word_files), workdir)
    return workdir, before, results


def test_label_smoothed_loss_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 5)).astype(np.int32)
    labels[1, 3:] = -100
    weights = np.ones(3, np.float32)
    for eps in (0.0, 0.1):
        ours = step.seq2seq_loss(logits, labels, weights, eps)
        loss = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=eps)
        theirs = loss(torch.tensor(logits).reshape(-1, 11), torch.tensor(labels).long().reshape(-1))
        assert float(ours) == pytest.approx(float(theirs), abs=1e-5)
    # Rows of weight 0 (batch padding) count for nothing.
    weights[2] = 0.0
    only_two = step.seq2seq_loss(logits[:2], labels[:2], np.ones(2, np.float32))
    assert float(step.seq2seq_loss(logits, labels, weights)) == pytest.approx(float(only_two))


def test_label_smoothed_loss_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(3, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 5)).astype(np.int32)
    labels[1, 3:] = -100
    weights = np.array([1, 1, 0], np.float32)  # the third row is batch padding
    for eps in (0.0, 0.1):
        loss_of = lambda x, eps=eps: step.seq2seq_loss(x, labels, weights, eps)
        ours = jax.grad(loss_of)(jnp.asarray(logits))
        x = torch.tensor(logits[:2], requires_grad=True)
        loss = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=eps)
        loss(x.reshape(-1, 11), torch.tensor(labels[:2]).long().reshape(-1)).backward()
        np.testing.assert_allclose(np.asarray(ours[:2]), x.grad.numpy(), atol=1e-7)
        assert not np.any(np.asarray(ours[2]))  # padding rows and ignored tokens: no gradient


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_is_optaxs_and_its_backward_scatters_nothing(eps):
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(0, 3, size=(4, 6, 13)), jnp.bfloat16)
    labels = jnp.asarray(rng.integers(0, 13, size=(4, 6)), jnp.int32)
    cot = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)

    def optax_form(x):
        x = x.astype(jnp.float32)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, 13), eps)
        return optax.softmax_cross_entropy(x, targets)

    ours, vjp = jax.vjp(lambda x: step.cross_entropy(x, labels, eps), logits)
    theirs, vjp_ref = jax.vjp(optax_form, logits)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    (d_ours,), (d_theirs,) = vjp(cot), vjp_ref(cot)
    assert d_ours.dtype == jnp.bfloat16  # the logits' dtype
    np.testing.assert_allclose(
        np.asarray(d_ours, np.float32), np.asarray(d_theirs, np.float32), rtol=1e-2, atol=1e-3
    )
    # the backward reads the logits and their log-sum-exp, no scatter of the labels' -1
    jaxpr = jax.make_jaxpr(vjp)(cot).jaxpr
    assert not [e for e in jaxpr.eqns if "scatter" in e.primitive.name]


def test_seq2seq_batches_pad_targets_with_ignore_ids():
    data = batching.Encoded(
        input_ids=[np.array([5, 6, 1]), np.array([7, 1])],
        token_type_ids=[np.zeros(3, np.int32), np.zeros(2, np.int32)],
        labels=None,
        truncated=0,
        targets=[np.array([8, 1]), np.array([9, 10, 11, 1])],
    )
    batch = batching.make_batch(data, [0, 1], 3, [4, 8], 0, target_lengths=[4, 8])
    assert batch["input_ids"].shape == (3, 4) and batch["labels"].shape == (3, 4)
    np.testing.assert_array_equal(batch["labels"][0], [8, 1, -100, -100])
    np.testing.assert_array_equal(batch["labels"][2], [-100] * 4)
    np.testing.assert_array_equal(batch["weights"], [1, 1, 0])


def test_long_targets_are_truncated_keeping_eos_and_counted():
    from transformers import AutoTokenizer

    from jaxft import assets

    tokenizer = AutoTokenizer.from_pretrained(str(assets.tokenizer_dir("t5")))
    encoded = batching.tokenize_seq2seq(
        tokenizer, ["hello", "hello world and again"], ["yes", "one two three four five six"], 4, 3
    )
    assert encoded.truncated == 1 and encoded.target_truncated == 1
    assert [len(t) for t in encoded.targets] == [2, 3]  # "yes" is one piece + EOS
    assert encoded.targets[1][-1] == tokenizer.eos_token_id
    assert encoded.input_ids[1][-1] == tokenizer.eos_token_id


def test_training_learns_and_bleu_rises(trained):
    workdir, before, results = trained
    train = [r for r in read_metrics(workdir) if r["split"] == "train"]
    assert train[-1]["loss"] < 0.2 * train[0]["loss"]
    assert before["bleu"] < 1.0 and before["rouge1"] < 5.0
    # 4-gram BLEU is harsh on 1-4 word targets; ROUGE-1 shows the words are mostly right.
    assert results["validation"]["bleu"] > 8.0, results
    assert results["test"]["rouge1"] > 70.0, results
    assert results["validation"]["loss"] < 0.2 * before["loss"]


def test_eval_and_predict_from_the_workdir(trained, capsys):
    workdir, _, results = trained
    assert cli.main(["eval", "--workdir", str(workdir), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)["test"]
    assert printed["bleu"] == pytest.approx(results["test"]["bleu"])
    assert cli.main(["predict", "--workdir", str(workdir), "--json", "red dog", "sun moon"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["red dog", "sun moon"]
    # A 4-epoch toy model gets most words right but not always their order: check that it
    # answers in the target lexicon with the words of the source.
    for row, expected in zip(rows, (["rojo", "perro"], ["sol", "luna"]), strict=True):
        words = row["generated"].split()
        assert words and set(words) <= set(SPANISH), row
        assert set(words) & set(expected), row
    assert cli.main(["predict", "--workdir", str(workdir), "red", " "]) == 2
    assert "input 2 of 2 is empty" in capsys.readouterr().err


def test_beam_search_scores_like_greedy_on_a_learned_task(trained, word_files):
    workdir, _, results = trained
    from jaxft.train import inference

    config, model, params, _ = inference.load_workdir(workdir)
    config.generate.num_beams = 4
    exp = experiment.prepare(config, splits=["test"], load_weights=False)
    exp.model = model
    beam = experiment.score(exp, params, "test", jax.jit(step.make_eval_step(model)))
    assert beam["bleu"] >= results["test"]["bleu"] - 5.0


@needs_torch
def test_export_loads_in_transformers_with_the_same_logits(trained, tmp_path):
    import torch
    import transformers

    from jaxft.train import inference

    workdir, _, _ = trained
    out = inference.export(workdir, "hf", tmp_path / "t5")
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    _, model, params, tokenizer = inference.load_workdir(workdir)
    ids = np.asarray(tokenizer(["red dog river"])["input_ids"], np.int32)
    labels = np.asarray(tokenizer(["rojo perro rio"])["input_ids"], np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "labels": labels,
        "weights": np.ones(1, np.float32),
    }
    ours = np.asarray(step.forward(model, params, batch, deterministic=True).logits)
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.tensor(ids).long(), labels=torch.tensor(labels).long())
    np.testing.assert_allclose(ours, theirs.logits.numpy(), atol=1e-4)
    from jaxft import generate

    theirs = hf_model.generate(torch.tensor(ids).long(), max_new_tokens=8, do_sample=False)
    ours = generate.trim(generate.greedy(model, params, ids, np.ones_like(ids), 8), 1)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_lora_on_t5_attention_trains_only_the_adapters(word_files, tmp_path):
    config = _config(
        word_files, **{"strategy.name": "lora", "train.epochs": 1, "train.eval_every_epoch": False}
    )
    config.strategy.lora.targets = ("attention/q$", "attention/v$")
    config.train.eval_splits = ()
    loop.train_and_evaluate(config, tmp_path)
    setup = next(r for r in read_metrics(tmp_path) if r["split"] == "setup")
    layers = 3 * 2 * 2  # q and v of 2 layers: encoder self, decoder self and cross attention
    rank, d_model, inner = 8, TINY_T5["d_model"], TINY_T5["num_heads"] * TINY_T5["d_kv"]
    assert setup["trainable_params"] == layers * rank * (d_model + inner)


def test_empty_sources_are_dropped_with_a_warning(word_files, tmp_path, caplog):
    rows = _rows(20, 5)
    rows[3]["text"] = "  "
    rows[7]["label"] = ""
    files = dict(word_files, validation=_write(tmp_path / "v.csv", rows))
    with caplog.at_level(logging.WARNING):
        exp = experiment.prepare(_config(files), splits=["validation"])
    assert len(exp.data["validation"]) == 18
    assert "dropped 2 of 20 examples with an empty source or target (rows [3, 7])" in caplog.text


def test_a_tokenizer_that_does_not_fit_the_model_is_an_error(word_files):
    with pytest.raises(UserError, match="32,100 tokens but the model's vocabulary has 1,000"):
        experiment.prepare(
            _config(word_files, **{"model_config.vocab_size": 1000}), splits=["test"]
        )
    with pytest.raises(UserError, match="eos_token_id=1 but the model config says 5"):
        experiment.prepare(_config(word_files, **{"model_config.eos_token_id": 5}), splits=["test"])


def test_seq2seq_needs_an_encoder_decoder(word_files, tiny_model_dir):
    config = _config(word_files, model=str(tiny_model_dir), random_init=False, tokenizer="")
    with pytest.raises(UserError, match="needs an encoder-decoder model"):
        experiment.prepare(config, splits=["test"])


def test_an_architecture_without_weights_needs_random_init(word_files):
    with pytest.raises(UserError, match="set random_init=True"):
        experiment.prepare(_config(word_files, random_init=False), splits=["test"])


def test_t5_encoder_classification_head_learns(sentiment_files, tmp_path):
    c = config_lib.defaults()
    c.model, c.random_init, c.tokenizer = "t5-small", True, "t5"
    c.model_config = dict(TINY_T5)
    c.data.source = "files"
    for split, path in sentiment_files.items():
        c.data.files[split] = str(path)
    c.data.max_length = 32
    c.optim.lr = 3e-3
    c.train.batch_size = 16
    c.train.epochs = 4
    c.train.progress = False
    c.task.head_dropout = 0.0
    results = loop.train_and_evaluate(c, tmp_path)
    assert results["test"]["accuracy"] > 0.9


def test_bfloat16_t5_stays_finite_and_close_to_float32():
    import jax.numpy as jnp

    from jaxft import models

    fp32 = models.build_model("t5-small", head="seq2seq", config_overrides=TINY_T5)
    bf16 = models.build_model(
        "t5-small", head="seq2seq", dtype="bfloat16", config_overrides=TINY_T5
    )
    params = models.init_params(fp32, jax.random.key(0))
    # Activations of 1e5 overflow float16 (max 65504: T5's known NaNs, checked below); bfloat16
    # has float32's range, and norms, softmax and logits run in float32, so it stays finite.
    params["shared"]["embedding"] = params["shared"]["embedding"] * 1e5
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(2, 32000, (2, 12)).astype(np.int32),
        "attention_mask": np.ones((2, 12), np.int32),
        "labels": rng.integers(2, 32000, (2, 7)).astype(np.int32),
        "weights": np.ones(2, np.float32),
    }
    out32 = step.forward(fp32, params, batch, deterministic=True).logits
    out16 = step.forward(bf16, params, batch, deterministic=True).logits
    assert out16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out16)))
    loss32 = step.seq2seq_loss(out32, batch["labels"], batch["weights"])
    loss16 = step.seq2seq_loss(out16, batch["labels"], batch["weights"])
    assert float(loss16) == pytest.approx(float(loss32), rel=0.05)
    fp16 = models.build_model("t5-small", head="seq2seq", dtype="float16", config_overrides=TINY_T5)
    assert not bool(jnp.all(jnp.isfinite(step.forward(fp16, params, batch, True).logits)))
