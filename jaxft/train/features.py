"""The `features` strategy: run the frozen encoder once, then train the head on cached features.

The encoder's pooled output (the head's input) is computed for every example of every split in
one deterministic pass; the head (dropout + Dense) then trains for `strategy.features.epochs`
epochs on those vectors, which costs almost nothing next to a forward pass of the encoder.
"""

import logging
from pathlib import Path

import jax
import numpy as np
import optax

from jaxft.models import heads
from jaxft.train import checkpoint, experiment, loop, optim, step
from jaxft.train.writer import MetricWriter

log = logging.getLogger(__name__)


def extract(exp, params, split: str) -> np.ndarray:
    """Pooled features [examples, hidden] of one split, in the order of `exp.data[split]`."""
    backbone = exp.model.clone(head=None)
    backbone_params = {k: v for k, v in params.items() if k != "head"}

    @jax.jit
    def pooled(backbone_params, batch):  # params as an argument, not baked-in constants
        out = step.forward(backbone, backbone_params, batch, deterministic=True)
        return heads.pool(
            exp.model.head, out.last_hidden_state, out.pooler_output, batch["attention_mask"]
        )

    return experiment.all_logits(
        exp.data[split],
        backbone_params,
        pooled,
        exp.config.train.eval_batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
        exp.model.config.hidden_size,
    )


def train_and_evaluate(exp, cfg, params, workdir: Path, writer: MetricWriter) -> dict:
    from jaxft.metrics import classification as metrics_lib

    cached = {split: extract(exp, params, split) for split in exp.data}
    head = heads.build(exp.model.head, exp.model.dtype, name=None)
    head_params = params["head"]
    train_x, train_y = cached["train"], exp.data["train"].labels
    bs = cfg.train.batch_size
    steps_per_epoch = -(-len(train_x) // bs)
    epochs = cfg.strategy.features.epochs
    total = steps_per_epoch * epochs
    tx, lr_schedule = optim.make(cfg.optim, head_params, total)
    opt_state = tx.init(head_params)

    @jax.jit
    def train_step(head_params, opt_state, x, y, w, rng):
        def loss_of(p):
            logits = head.apply({"params": p}, x, deterministic=False, rngs={"dropout": rng})
            return step.loss_fn(logits, y, w, exp.regression)

        loss, grads = jax.value_and_grad(loss_of)(head_params)
        updates, opt_state = tx.update(grads, opt_state, head_params)
        return optax.apply_updates(head_params, updates), opt_state, loss

    @jax.jit
    def logits_of(head_params, x):
        return head.apply({"params": head_params}, x, deterministic=True)

    rng = jax.random.fold_in(loop.init_rngs(cfg.seed)[1], 0)
    n = len(train_x)
    step_count = 0
    for epoch in range(epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        losses = []
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            # Pad the last batch to full size with weight-0 rows: one compiled shape.
            x = np.zeros((bs, train_x.shape[1]), np.float32)
            y = np.zeros((bs,), train_y.dtype)
            w = np.zeros((bs,), np.float32)
            x[: len(idx)], y[: len(idx)], w[: len(idx)] = train_x[idx], train_y[idx], 1.0
            head_params, opt_state, loss = train_step(
                head_params, opt_state, x, y, w, jax.random.fold_in(rng, step_count)
            )
            losses.append(loss)
            step_count += 1
        record = {
            "loss": float(np.mean(jax.device_get(losses))),
            "epoch": epoch,
            "lr": float(lr_schedule(step_count - 1)),
        }
        writer.write(step_count, "train", record)

    def score(split):
        logits = np.asarray(logits_of(head_params, cached[split]))
        labels = exp.data[split].labels
        return metrics_lib.from_logits(labels, logits, exp.regression)

    checkpoint.save_params(workdir, step_count, {"head": head_params})
    results = {s: score(s) for s in cfg.train.eval_splits if s in exp.data}
    log.info("features: %d head steps over cached features of %s", step_count, sorted(cached))
    return loop.finish(workdir, writer, step_count, results)
