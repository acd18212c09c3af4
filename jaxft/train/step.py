"""Pure train and eval steps; callers jit them (with donation) where they are used."""

import jax
import jax.numpy as jnp
import optax

from jaxft.peft import paths


def loss_fn(logits, labels, weights, regression: bool):
    """Weighted mean loss over real rows (padding rows have weight 0): MSE or cross-entropy."""
    if regression:
        per_example = jnp.square(logits[:, 0] - labels)
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def forward(model, params, batch, deterministic, rng=None):
    return model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        deterministic=deterministic,
        rngs=None if rng is None else {"dropout": rng},
    )


def make_train_step(model, tx, regression: bool):
    def compute_loss(trainable, frozen, batch, rng):
        out = forward(model, paths.merge(trainable, frozen), batch, deterministic=False, rng=rng)
        return loss_fn(out.logits, batch["labels"], batch["weights"], regression)

    def train_step(state, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        loss, grads = jax.value_and_grad(compute_loss)(state.trainable, state.frozen, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(model):
    def eval_step(params, batch):
        return forward(model, params, batch, deterministic=True).logits

    return eval_step
