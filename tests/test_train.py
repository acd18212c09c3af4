"""End to end: `jaxft train/eval/predict` on a tiny random BERT and synthetic sentiment files."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxft import cli, peft
from jaxft.data import batching
from jaxft.train import experiment, loop, optim, step
from jaxft.train import state as state_lib
from jaxft.train.writer import read_metrics
from tests.conftest import needs_torch, tiny_config

pytestmark = needs_torch


def _overrides(model_dir, files, **extra):
    args = [
        f"--config.model={model_dir}",
        "--config.data.source=files",
        "--config.data.max_length=32",
        "--config.optim.lr=2e-3",
        "--config.train.batch_size=16",
        "--config.train.epochs=5",
        "--config.train.log_every=5",
        "--config.train.progress=false",
        "--config.task.head_dropout=0",
        "--config.data.buckets=16,32",
    ]
    args += [f"--config.data.files.{split}={path}" for split, path in files.items()]
    args += [f"--config.{k}={v}" for k, v in extra.items()]
    return args


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, sentiment_files):
    workdir = tmp_path_factory.mktemp("run")
    code = cli.main(
        ["train", "experiments/rotten_tomatoes.py", "--workdir", str(workdir)]
        + _overrides(tiny_model_dir, sentiment_files)
    )
    assert code == 0
    return workdir


def test_train_writes_the_workdir_contract_and_learns(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["task"]["label_names"] == ["neg", "pos"]  # resolved from the train split
    records = read_metrics(trained)
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(5, 101, 5))
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert any(r["split"] == "validation" and r.get("epoch") == 4 for r in records)
    results = json.loads((trained / "eval.json").read_text())
    assert set(results) == {"validation", "test"}
    assert results["test"]["accuracy"] > 0.9
    assert list((trained / "tb").iterdir())
    assert (trained / "checkpoints" / "100").is_dir()


def test_eval_and_predict_from_the_workdir(trained, capsys):
    assert cli.main(["eval", "--workdir", str(trained), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = json.loads((trained / "eval.json").read_text())["test"]
    assert printed["test"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert (
        cli.main(
            [
                "predict",
                "--workdir",
                str(trained),
                "--json",
                "the movie was superb and moving",
                "a dreadful tedious plot",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_a_checkpoint_that_does_not_fit_the_config_is_a_clear_error(trained, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    config = json.loads((broken / "config.json").read_text())
    config["task"]["label_names"] = ["a", "b", "c"]  # a 3-way head against a 2-way checkpoint
    (broken / "config.json").write_text(json.dumps(config))
    assert cli.main(["eval", "--workdir", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "Traceback" not in err


def test_training_into_a_finished_workdir_is_refused_up_front(trained, capsys):
    config = json.loads((trained / "config.json").read_text())
    code = cli.main(
        ["train", "experiments/rotten_tomatoes.py", "--workdir", str(trained)]
        + [f"--config.model={config['model']}"]
    )
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jaxft", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_errors_exit_2_with_one_message(tmp_path, tiny_model_dir, sentiment_files):
    missing = _run_cli(
        "train",
        "experiments/rotten_tomatoes.py",
        "--config.model=/no/such/model",
        "--workdir",
        str(tmp_path / "a"),
    )
    assert missing.returncode == 2
    assert "model path '/no/such/model' is not a directory" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = _run_cli("train", "experiments/rotten_tomatoes.py", "--config.optim.lrate=1")
    assert unknown.returncode == 2 and "did you mean optim.lr" in unknown.stderr


@pytest.mark.parametrize(
    "split, content, message",
    [
        (
            "test",
            "text,label,score\ngreat film,pos,1\nhmm,meh,0\n",
            "split 'test', row 1: label 'meh' is not in the label set ['neg', 'pos']",
        ),
        ("validation", "text,label,score\n", "'validation' split is empty"),
    ],
)
def test_bad_data_is_one_clear_error(
    tmp_path, tiny_model_dir, sentiment_files, capsys, split, content, message
):
    bad = tmp_path / f"{split}.csv"
    bad.write_text(content)
    files = dict(sentiment_files, **{split: bad})
    code = cli.main(
        ["train", "experiments/rotten_tomatoes.py", "--workdir", str(tmp_path / "w")]
        + _overrides(tiny_model_dir, files)
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def _one_step(tiny_model_dir, sentiment_files, strategy):
    config = tiny_config(tiny_model_dir, sentiment_files, **{"strategy.name": strategy})
    exp = experiment.prepare(config)
    params, mask = peft.apply(exp.params, strategy)
    trainable, _ = peft.paths.split(params, mask)
    tx, _ = optim.make(config.optim, trainable, total_steps=10)
    state = state_lib.create(params, mask, tx, jax.random.key(0))
    batch = next(iter(batching.batches(exp.data["train"], 16, exp.buckets, 0, True)))[1]
    new_state, _ = jax.jit(step.make_train_step(exp.model, tx, False))(state, batch)
    new_state, _ = jax.jit(step.make_train_step(exp.model, tx, False))(new_state, batch)
    return params, mask, state, new_state


def test_frozen_changes_only_the_head_and_keeps_no_optimizer_state_for_the_rest(
    tiny_model_dir, sentiment_files
):
    params, mask, state, new_state = _one_step(tiny_model_dir, sentiment_files, "frozen")
    flat_before = peft.paths.paths(params)
    changed = {
        p
        for p, a, b in zip(
            flat_before,
            jax.tree_util.tree_leaves(params),
            jax.tree_util.tree_leaves(new_state.params),
            strict=True,
        )
        if not np.array_equal(a, b)
    }
    assert changed == {"head/classifier/kernel", "head/classifier/bias"}
    # Adam moments exist for the two head leaves only (mu and nu each).
    moments = [x for x in jax.tree_util.tree_leaves(new_state.opt_state) if x.ndim > 0]
    assert sorted(x.shape for x in moments) == sorted([(2,), (32, 2)] * 2)


def test_full_fine_tuning_changes_every_leaf(tiny_model_dir, sentiment_files):
    params, mask, state, new_state = _one_step(tiny_model_dir, sentiment_files, "full")
    before = jax.tree_util.tree_leaves(params)
    after = jax.tree_util.tree_leaves(new_state.params)
    unchanged = [
        p
        for p, a, b in zip(peft.paths.paths(params), before, after, strict=True)
        if np.array_equal(a, b)
    ]
    # Rows of the embedding table for unseen tokens change too (weight decay), so nothing stays.
    assert unchanged == []


def test_runs_are_reproducible(tmp_path, tiny_model_dir, sentiment_files):
    results = []
    for name in ("a", "b"):
        config = tiny_config(tiny_model_dir, sentiment_files, **{"train.max_steps": 6})
        loop.train_and_evaluate(config, tmp_path / name)
        results.append(read_metrics(tmp_path / name))
    losses = [[r.get("loss") for r in rs if r["split"] == "train"] for rs in results]
    assert losses[0] == losses[1]
    assert results[0][-1]["accuracy"] == results[1][-1]["accuracy"]


def test_regression_head_trains_on_a_numeric_column(tmp_path, tiny_model_dir, sentiment_files):
    config = tiny_config(
        tiny_model_dir,
        sentiment_files,
        **{"task.kind": "regression", "data.label_column": "score"},
    )
    results = loop.train_and_evaluate(config, tmp_path / "reg")
    assert set(results["test"]) == {"mse", "pearson", "spearman"}
    assert results["test"]["pearson"] > 0.8
