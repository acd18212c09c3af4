"""Interop with Hugging Face in PyTorch: merged export, PEFT export and PEFT import."""

import json

import jax
import numpy as np
import pytest

import jaxft
from jaxft import cli
from jaxft.errors import UserError
from jaxft.peft import export as export_lib
from jaxft.train import experiment, inference, loop, step
from tests.conftest import needs_torch, tiny_config

pytestmark = needs_torch
TEXTS = ["the film was superb", "a tedious and clumsy plot", "and"]


def _train(tmp_path_factory, model_dir, files, name, **settings):
    workdir = tmp_path_factory.mktemp(name.replace("+", "_"))
    overrides = {"strategy.name": name, "train.max_steps": 12, "train.eval_splits": ("test",)}
    loop.train_and_evaluate(tiny_config(model_dir, files, **overrides, **settings), workdir)
    return workdir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, sentiment_files):
    # Every dense layer and all biases, so the export covers every kind of leaf.
    return _train(
        tmp_path_factory,
        tiny_model_dir,
        sentiment_files,
        "lora",
        **{
            "strategy.lora.targets": (
                "attention/(query|key|value|output)$",
                "intermediate$",
                "layer_\\d+/output$",
            ),
            "strategy.lora.bias": "all",
            "strategy.lora.dropout": 0.0,
        },
    )


def _torch_logits(model, tokenizer):
    import torch

    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy(), enc


def _jaxft_logits(workdir, enc):
    _, model, params, _ = inference.load_workdir(workdir)
    batch = {k: np.asarray(v) for k, v in enc.items()}
    return np.asarray(step.forward(model, params, batch, deterministic=True).logits)


def test_lora_checkpoint_holds_only_trained_leaves(lora_run):
    total = sum(f.stat().st_size for f in (lora_run / "checkpoints").rglob("*") if f.is_file())
    # The tiny base has ~1M float32 parameters (4 MB); LoRA + biases + head are far less.
    assert total < 1_000_000


def test_merged_hf_export_loads_in_transformers(lora_run, tmp_path):
    import transformers

    assert (
        cli.main(
            ["export", "--workdir", str(lora_run), "--format", "hf", "--out", str(tmp_path / "hf")]
        )
        == 0
    )
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    ref, enc = _torch_logits(model.eval(), tokenizer)
    np.testing.assert_allclose(_jaxft_logits(lora_run, enc), ref, atol=1e-4)


def test_peft_export_loads_in_peft(lora_run, tmp_path, tiny_model_dir):
    import peft
    import transformers

    inference.export(lora_run, "peft", tmp_path / "adapter")
    base = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2
    )
    model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    ref, enc = _torch_logits(model, tokenizer)
    np.testing.assert_allclose(_jaxft_logits(lora_run, enc), ref, atol=1e-4)


def test_adapter_trained_by_hf_peft_imports(tmp_path, tiny_model_dir):
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=3
    )
    config = peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value", "dense"]
    )
    model = peft.get_peft_model(base, config)
    with torch.no_grad():  # as if trained: B no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name or "classifier" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    ref, enc = _torch_logits(model.eval(), tokenizer)

    jmodel, params = jaxft.from_pretrained(tiny_model_dir, head="classification", num_labels=3)
    params, mask = export_lib.load_peft(params, jmodel, tmp_path / "adapter")
    trainable = [p for p, v in jaxft.peft.paths.flatten(mask).items() if v]
    assert "encoder/layer_1/attention/output/lora_b" in trainable  # "dense" matched it too
    batch = {k: np.asarray(v) for k, v in enc.items()}
    got = step.forward(jmodel, params, batch, deterministic=True).logits
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4)

    other, other_params = jaxft.from_pretrained(tiny_model_dir, head="classification", num_labels=5)
    with pytest.raises(UserError, match="another base or label count"):
        export_lib.load_peft(other_params, other, tmp_path / "adapter")


def test_restoring_onto_another_base_model_is_an_error(lora_run, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(lora_run, moved)
    base = json.loads((moved / "base_model.json").read_text())
    base["config"]["hidden_size"] = 64
    (moved / "base_model.json").write_text(json.dumps(base))
    with pytest.raises(UserError, match="hidden_size: trained on 64, now 32"):
        inference.load_workdir(moved)


def test_strategies_without_a_plain_hf_form_say_so(
    tmp_path_factory, tiny_model_dir, sentiment_files, tmp_path
):
    run = _train(tmp_path_factory, tiny_model_dir, sentiment_files, "adapters")
    with pytest.raises(UserError, match="adapters, prompts and prefixes cannot be merged"):
        inference.export(run, "hf", tmp_path / "a")
    with pytest.raises(UserError, match="exports LoRA adapters only"):
        inference.export(run, "peft", tmp_path / "b")


def test_features_strategy_trains_the_head_on_cached_features(
    tmp_path_factory, tiny_model_dir, sentiment_files
):
    from jaxft.models import heads
    from jaxft.train import features
    from jaxft.train.writer import read_metrics

    run = _train(
        tmp_path_factory,
        tiny_model_dir,
        sentiment_files,
        "features",
        **{"task.pooling": "mean", "strategy.features.epochs": 60, "optim.lr": 1e-2},
    )
    losses = [r["loss"] for r in read_metrics(run) if r["split"] == "train"]
    assert len(losses) == 60 and losses[-1] < 0.8 * losses[0]
    results = json.loads((run / "eval.json").read_text())
    # The workdir restores like any other (base weights + the trained head) and scores the same
    # through the whole model as through the cached features.
    config, model, params, tokenizer = inference.load_workdir(run)
    exp = experiment.prepare(config, splits=["test"], load_weights=False)
    again = experiment.score(exp, params, "test", jax.jit(step.make_eval_step(model)))
    assert again["accuracy"] == pytest.approx(results["test"]["accuracy"])
    # Cached features are exactly the head's input in the full model.
    exp.model = model
    cached = features.extract(exp, params, "test")
    ids = exp.data["test"].input_ids[0][None]
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": exp.data["test"].token_type_ids[0][None],
    }
    out = step.forward(model.clone(head=None), params, batch, deterministic=True)
    direct = heads.pool(
        model.head, out.last_hidden_state, out.pooler_output, batch["attention_mask"]
    )
    np.testing.assert_allclose(cached[0], np.asarray(direct)[0], atol=1e-5)
