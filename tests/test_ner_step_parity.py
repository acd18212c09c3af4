"""jaxft's token-classification training step against Hugging Face PyTorch, in float32.

A tiny random `BertForTokenClassification` (dropout off) and its jaxft port, loaded from the same
checkpoint, take the same NER batch (padded rows, first-sub-token labels, -100 elsewhere). We
compare the loss, every parameter's gradient, and the parameters after a few optimizer steps of
jaxft's AdamW (`optim.make` with the WNUT experiment's settings) against torch's AdamW set up as
Hugging Face's Trainer does it (no decay on biases and LayerNorm weights, linear schedule with
warmup, `clip_grad_norm_`). The jaxft batch is built by `batching.make_batch`, so it also carries
bucket padding columns and a weight-0 padding row, as the training loop's batches do.
"""

import numpy as np
import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch

NUM_LABELS = 5
PAD = 0
LOSS_TOL = 1e-5
GRAD_TOL = 1e-5
PARAM_RTOL = 1e-5
PARAM_ATOL = 1e-6  # 1e-3 of the lr of these tests: an update off by a step differs by ~lr
# Sentences of (token ids, first-sub-token flags): a word's tag goes on its first sub-token;
# [CLS]/[SEP] (ids 1 and 2 here) and later sub-tokens get -100.
SENTENCES = [
    ([1, 10, 11, 12, 13, 14, 15, 2], [0, 1, 1, 0, 1, 1, 0, 0]),
    ([1, 20, 21, 22, 23, 2], [0, 1, 0, 0, 1, 0]),
    ([1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 2], [0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0]),
    ([1, 40, 41, 2], [0, 1, 1, 0]),
]


def _sentences(seed):
    """Token ids and token labels of SENTENCES, with seeded random tags."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for tokens, first in SENTENCES:
        tags = rng.integers(0, NUM_LABELS, size=len(tokens))
        ids.append(np.asarray(tokens, np.int32) + seed)  # other tokens in every step
        labels.append(np.where(np.asarray(first) == 1, tags, -100).astype(np.int32))
    return ids, labels


def _jaxft_batch(seed):
    """As the training loop builds it: a 16-token bucket and a 5th row of weight 0."""
    from jaxft.data import batching

    ids, labels = _sentences(seed)
    data = batching.Encoded(
        input_ids=ids,
        token_type_ids=[np.zeros_like(x) for x in ids],
        labels=None,
        truncated=0,
        token_labels=labels,
    )
    return batching.make_batch(data, [0, 1, 2, 3], 5, [16], PAD)


def _torch_batch(seed):
    """As benchmarks/ner_hf.py's `collate`: padded to the longest row, labels -100 there."""
    import torch

    ids, labels = _sentences(seed)
    width = max(len(x) for x in ids)
    t_ids = torch.full((len(ids), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(t_ids)
    t_labels = torch.full_like(t_ids, -100)
    for r, (x, y) in enumerate(zip(ids, labels, strict=True)):
        t_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[r, : len(x)] = 1
        t_labels[r, : len(y)] = torch.tensor(y, dtype=torch.long)
    return {"input_ids": t_ids, "attention_mask": mask, "labels": t_labels}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(HF model, jaxft model, jaxft params, {jaxft path: (HF name, kind)}) with the same
    weights; tests train a copy of the HF model."""
    import torch
    import transformers

    import jaxft
    from jaxft import models
    from jaxft.models import bert
    from tests.hf_fixtures import TINY

    torch.manual_seed(0)
    config = transformers.BertConfig(
        **TINY,
        num_labels=NUM_LABELS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD,
    )
    hf_model = transformers.BertForTokenClassification(config)
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so no slip hides
        for name, p in hf_model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("tiny-ner")
    hf_model.save_pretrained(folder)
    hf_model.train()  # dropout rates are 0: train mode is deterministic
    model, params = jaxft.from_pretrained(
        folder, head="token_classification", num_labels=NUM_LABELS
    )
    assert model.head.dropout == 0.0 and model.config.hidden_dropout_prob == 0.0
    names = bert.hf_name_map(model.config)
    for path, (key, kind) in names.items():
        names[path] = ("bert." + key, kind)
    names["head/classifier/kernel"] = ("classifier.weight", bert.LINEAR)
    names["head/classifier/bias"] = ("classifier.bias", bert.COPY)
    assert set(models.flatten(params)) == set(names)
    assert {n for n, _ in names.values()} == {n for n, _ in hf_model.named_parameters()}
    return hf_model, model, params, names


def _as_flax(hf_model, names, grad=False):
    """The HF model's parameters (or their gradients) as {jaxft path: array in jaxft layout}."""
    from jaxft.models import bert

    # Copies: clip_grad_norm_ and the optimizer change the tensors in place.
    state = {
        k: (p.grad if grad else p).detach().numpy().copy() for k, p in hf_model.named_parameters()
    }
    return {p: bert.to_flax(state[k], kind) for p, (k, kind) in names.items()}


def _recording(tx):
    """`tx` behind a stage that keeps the gradient it is given in its state (and passes it on
    unchanged), so the train step's own gradient can be read back after the step."""
    import optax

    record = optax.GradientTransformation(lambda p: p, lambda g, s, p=None: (g, g))
    return optax.chain(record, tx)


def _torch_optimizer(hf_model, cfg, total_steps):
    """Hugging Face Trainer's AdamW: no decay on biases and LayerNorm weights."""
    import torch
    import transformers

    decay, no_decay = [], []
    for name, p in hf_model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.b1, cfg.b2),
        eps=cfg.eps,
    )
    sched = transformers.get_linear_schedule_with_warmup(opt, cfg.warmup_steps, total_steps)
    return opt, sched


def _experiment_optim(**overrides):
    from pathlib import Path

    from jaxft import config as config_lib

    root = Path(__file__).resolve().parents[1]
    cfg = config_lib.load_experiment(str(root / "experiments/wnut_ner.py")).optim
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


# (weight decay, clip norm): the WNUT experiment's (no decay, clip 1.0), and decay (its mask)
# with a clip norm small enough that every step is clipped.
@pytest.mark.parametrize(("weight_decay", "clip_norm"), [(0.0, 1.0), (0.1, 0.05)])
def test_train_steps_match_hf(tiny, weight_decay, clip_norm):
    """Loss and gradients at every step, and the parameters after the last one."""
    import copy

    import jax
    import torch

    from jaxft import models, peft
    from jaxft.train import optim, step
    from jaxft.train import state as state_lib

    hf_model, model, params, names = tiny
    hf_model = copy.deepcopy(hf_model)
    steps, total_steps = 3, 6
    # lr 1e-3 and 2 warmup steps: the lr differs at every step, so an off-by-one in the
    # schedule's step index changes every update by ~lr.
    cfg = _experiment_optim(lr=1e-3, warmup_steps=2, weight_decay=weight_decay, clip_norm=clip_norm)
    assert cfg.b1 == 0.9 and cfg.b2 == 0.999 and cfg.eps == 1e-8  # jaxft's defaults, as HF's
    opt, sched = _torch_optimizer(hf_model, cfg, total_steps)
    _, mask = peft.apply(params, peft.defaults())  # "full": every leaf trains
    tx, lr_schedule = optim.make(cfg, params, total_steps)
    tx = _recording(tx)
    state = state_lib.create(params, mask, tx, jax.random.key(0))
    train_step = jax.jit(step.make_train_step(model, tx))

    hf_norms, norms = [], []
    for k in range(steps):
        assert float(lr_schedule(k)) == pytest.approx(sched.get_last_lr()[0], rel=1e-6)
        loss = hf_model(**_torch_batch(k)).loss
        loss.backward()
        hf_grads = _as_flax(hf_model, names, grad=True)
        hf_norms.append(float(torch.nn.utils.clip_grad_norm_(hf_model.parameters(), clip_norm)))
        opt.step()
        sched.step()
        opt.zero_grad()

        batch = _jaxft_batch(k)
        assert batch["weights"].tolist() == [1, 1, 1, 1, 0] and batch["input_ids"].shape == (5, 16)
        state, metrics = train_step(state, batch)
        norms.append(float(metrics["grad_norm"]))
        assert abs(float(metrics["loss"]) - loss.item()) <= LOSS_TOL, f"step {k}"
        grads = models.flatten(state.opt_state[0])
        for p, want in hf_grads.items():
            got = np.asarray(grads[p])
            diff = float(np.max(np.abs(got - want)))
            assert diff <= GRAD_TOL, f"step {k}: gradient of {p} differs by {diff:.2e}"
            assert np.any(got != 0) == np.any(want != 0), f"step {k}: {p}"
    np.testing.assert_allclose(norms, hf_norms, rtol=1e-5)
    if clip_norm < 1:
        assert min(hf_norms) > clip_norm  # every step was clipped

    ours, theirs = models.flatten(state.trainable), _as_flax(hf_model, names)
    start = models.flatten(params)
    for p, want in theirs.items():
        got = np.asarray(ours[p])
        moved = np.abs(want - np.asarray(start[p]))
        assert moved.max() > 100 * PARAM_ATOL or "key/bias" in p, f"{p} did not train"
        # Float32 rounding of the parameter values (~1e-7 here) is all that may differ. The
        # key biases' gradient is 0 in exact arithmetic (softmax ignores a shift shared by all
        # keys), ~1e-12 of rounding noise on each side: PARAM_ATOL covers what that moves them.
        bad = np.abs(got - want) > PARAM_RTOL * np.abs(want) + PARAM_ATOL
        assert not bad.any(), (
            f"{p}: {int(bad.sum())} values differ after {steps} steps, max abs diff "
            f"{float(np.max(np.abs(got - want))):.2e} (moved up to {float(moved.max()):.2e})"
        )


@pytest.mark.parametrize(("total_steps", "warmup_ratio"), [(300, 0.0), (300, 0.06), (17, 0.1)])
def test_schedule_matches_hf_at_every_step(total_steps, warmup_ratio):
    """`lr_schedule(k)` is the lr torch uses for update k+1, warmup steps rounded up alike."""
    import math

    import torch
    import transformers

    from jaxft.train import optim

    cfg = _experiment_optim(lr=5e-5, warmup_ratio=warmup_ratio)
    warmup = optim.warmup_steps(cfg, total_steps)
    assert warmup == math.ceil(total_steps * warmup_ratio)  # TrainingArguments.get_warmup_steps
    _, lr_schedule = optim.make(cfg, {"w": np.zeros(2, np.float32)}, total_steps)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup, total_steps)
    theirs = []
    for _ in range(total_steps):
        theirs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    ours = np.asarray([float(lr_schedule(k)) for k in range(total_steps)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_paired_ner_benchmark_gives_hf_the_draws_jaxft_trains_with(
    tiny_model_dir, tmp_path, monkeypatch
):
    """`benchmarks/ner_hf.py --paired` hands HF the new classifier and the batches of jaxft's
    run: they must be what `train_and_evaluate` really starts from and takes, step by step."""
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ner_hf

    from jaxft.data import batching
    from jaxft.train import loop

    args = argparse.Namespace(
        seed=3, epochs=2, batch_size=32, lr=5e-5, max_length=128, sort_window=1
    )
    config = ner_hf.jaxft_config(args)
    config.model = str(tiny_model_dir)
    config.data.max_train_examples = 80  # 3 steps an epoch, the last one short
    config.train.eval_splits = ()
    draws = ner_hf.jaxft_draws(config)

    taken, starts = [], []
    real_batches, real_create = batching.batches, loop.state_lib.create

    def recording_batches(data, batch_size, *rest, **kwargs):
        for indices, batch in real_batches(data, batch_size, *rest, **kwargs):
            if rest[2:3] == (True,):  # shuffled: the training batches
                taken.append(np.asarray(indices))
            yield indices, batch

    def recording_create(params, *rest):
        starts.append(np.asarray(params["head"]["classifier"]["kernel"]))
        return real_create(params, *rest)

    monkeypatch.setattr(batching, "batches", recording_batches)
    monkeypatch.setattr(loop.state_lib, "create", recording_create)
    loop.train_and_evaluate(config, tmp_path)

    assert len(draws["batches"]) == len(taken) == 6
    for drawn, took in zip(draws["batches"], taken, strict=True):
        np.testing.assert_array_equal(drawn, took)
    np.testing.assert_array_equal(draws["kernel"], starts[0])
    assert len(draws["lengths"]) == 80
