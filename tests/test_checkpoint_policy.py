"""Which checkpoints a run keeps, and the precision policy of its parameters."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxft import config as config_lib
from jaxft.errors import UserError
from jaxft.train import loop
from jaxft.train.writer import read_metrics
from tests.conftest import needs_torch, tiny_config


@needs_torch
def test_best_metric_keeps_and_scores_the_best_epoch(tiny_model_dir, sentiment_files, tmp_path):
    # A learning rate this high makes validation loss bounce between epochs, so the best epoch
    # is rarely the last; the checks below hold whichever it is.
    config = tiny_config(tiny_model_dir, sentiment_files)
    config.train.epochs = 4
    config.train.best_metric = "loss"
    config.train.keep_checkpoints = 1
    config.train.checkpoint_every = 5
    config.train.eval_splits = ("validation",)
    results = loop.train_and_evaluate(config, tmp_path)

    records = read_metrics(tmp_path)
    epochs = [r for r in records if r["split"] == "validation" and "epoch" in r]
    best_epoch = min(epochs, key=lambda r: r["loss"])
    (best,) = [r for r in records if r["split"] == "best"]
    assert best["best_step"] == best_epoch["step"]
    assert best["loss"] == pytest.approx(best_epoch["loss"])
    # The final checkpoint holds the best epoch's params and eval.json scores them.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == [
        str(best_epoch["step"])
    ]
    assert results["validation"]["loss"] == pytest.approx(best_epoch["loss"], abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text()) == results
    # keep_checkpoints=1: one resumable state (the latest), not every 5th step.
    kept = [p.name for p in (tmp_path / "train_state").iterdir() if p.name.isdigit()]
    assert len(kept) == 1


@needs_torch
def test_an_unknown_best_metric_names_the_available_ones(tiny_model_dir, sentiment_files, tmp_path):
    config = tiny_config(tiny_model_dir, sentiment_files)
    config.train.epochs = 1
    config.train.best_metric = "bleu"
    with pytest.raises(UserError, match=r"best_metric='bleu' is not among .*accuracy.*loss"):
        loop.train_and_evaluate(config, tmp_path)


def test_best_metric_needs_per_epoch_validation():
    c = config_lib.defaults()
    c.train.best_metric = "accuracy"
    c.train.eval_every_epoch = False
    with pytest.raises(UserError, match="set train.eval_every_epoch=true"):
        config_lib.validate(c)


def test_precision_settings_are_checked():
    c = config_lib.defaults()
    c.param_dtype = "float16"
    with pytest.raises(UserError, match="param_dtype='float16'; use one of float32, bfloat16"):
        config_lib.validate(c)
    c = config_lib.defaults()
    c.train.parallel = "pjit"
    with pytest.raises(UserError, match="train.parallel='pjit'; use one of mesh, pmap"):
        config_lib.validate(c)


def test_bfloat16_param_dtype_stores_only_frozen_leaves_in_bf16():
    params = {"layer": {"kernel": jnp.ones((4, 4)), "lora_a": jnp.ones((4, 2))}}
    mask = {"layer": {"kernel": False, "lora_a": True}}
    stored = loop.store_frozen(params, mask, "bfloat16")
    assert stored["layer"]["kernel"].dtype == jnp.bfloat16
    assert stored["layer"]["lora_a"].dtype == jnp.float32
    assert loop.store_frozen(params, mask, "float32") is params


@needs_torch
def test_lora_with_bfloat16_frozen_weights_trains_like_float32(
    tiny_model_dir, sentiment_files, tmp_path
):
    def run(param_dtype, workdir):
        config = tiny_config(tiny_model_dir, sentiment_files)
        config.strategy.name = "lora"
        config.param_dtype = param_dtype
        config.train.epochs = 2
        config.train.log_every = 10
        config.train.eval_splits = ("validation",)
        results = loop.train_and_evaluate(config, workdir)
        losses = [r["loss"] for r in read_metrics(workdir) if r["split"] == "train"]
        return np.asarray(losses), results["validation"]["loss"]

    losses32, val32 = run("float32", tmp_path / "fp32")
    losses16, val16 = run("bfloat16", tmp_path / "bf16")
    assert losses16[-1] < losses16[0]  # it learns
    # bf16 rounds each frozen weight by up to 2**-9 relative: the runs stay close, not equal.
    np.testing.assert_allclose(losses16, losses32, rtol=0.05)
    assert val16 == pytest.approx(val32, rel=0.05)
    assert not np.array_equal(losses16, losses32)


def test_pmap_refuses_settings_it_cannot_honour():
    from jaxft.train import parallel

    c = config_lib.defaults()
    c.train.parallel = "pmap"
    c.mesh.fsdp = 2
    with pytest.raises(UserError, match="mesh.fsdp=2 needs train.parallel=mesh"):
        parallel.make_runner(c, None, None, None)
    assert jax.local_device_count() == 1  # the CI process: one device
    c.mesh.fsdp = 1
    c.train.batch_size, c.train.grad_accum_steps = 6, 4
    with pytest.raises(UserError, match="1 devices gets 6 rows, which do not split into"):
        parallel.make_runner(c, None, None, None)
