"""Pure train and eval steps; callers jit them (with donation) where they are used."""

import functools

import jax
import jax.numpy as jnp
import optax

from jaxft.models import t5
from jaxft.peft import paths
from jaxft.train import optim


def is_seq2seq(model) -> bool:
    return isinstance(model, t5.T5Model) and not model.encoder_only


def is_token_task(model) -> bool:
    """A label per token (NER), not per sequence."""
    head = getattr(model, "head", None)
    return head is not None and head.kind == "token_classification"


def is_span_task(model) -> bool:
    """Extractive QA: start and end logits per token."""
    head = getattr(model, "head", None)
    return head is not None and head.kind == "question_answering"


def span_losses(logits, labels, weights):
    """(summed loss, rows): per row the mean of the start and end cross-entropies, as
    BertForQuestionAnswering; `labels` [batch, 2] holds the (start, end) token positions."""
    logits = logits.astype(jnp.float32)
    start = optax.softmax_cross_entropy_with_integer_labels(logits[..., 0], labels[:, 0])
    end = optax.softmax_cross_entropy_with_integer_labels(logits[..., 1], labels[:, 1])
    return jnp.sum((start + end) / 2 * weights), jnp.sum(weights)


def example_losses(logits, labels, regression: bool):
    """Per-row loss: squared error (regression) or cross-entropy."""
    if regression:
        return jnp.square(logits[:, 0] - labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def loss_fn(logits, labels, weights, regression: bool):
    """Weighted mean loss over real rows (padding rows have weight 0): MSE or cross-entropy."""
    per_example = example_losses(logits, labels, regression)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def token_losses(logits, labels, weights, label_smoothing: float = 0.0):
    """(summed cross-entropy, number of target tokens) over the real target tokens of a batch:
    labels of -100 (target padding) and rows of weight 0 (batch padding) are skipped. With label
    smoothing the target puts `1 - eps` on the label and `eps / vocab` on every id, as torch's
    `CrossEntropyLoss(label_smoothing=eps)`."""
    valid = (labels >= 0) & (weights[:, None] > 0)
    safe = jnp.where(valid, labels, 0)
    per_token = cross_entropy(logits, safe, float(label_smoothing))
    return jnp.sum(per_token * valid), jnp.sum(valid)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def cross_entropy(logits, labels, label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy of `logits` [..., classes] (any float dtype, computed in float32)
    against integer `labels` [...], with the target putting `1 - eps` on the label and
    `eps / classes` on every class (as optax's `softmax_cross_entropy` of smoothed one-hot
    labels, torch's `CrossEntropyLoss(label_smoothing=eps)`).

    Its backward pass is one elementwise kernel over the logits, `softmax - target` in float32
    written in the logits' dtype, where autodiff of optax's form scattered the label's -1 into a
    float32 array of the logits' shape and multiplied another: with T5-base's 32,128-way logits
    for 32 x 128 target tokens, the step compiled for an H100 moves 1.05 GB less outside its
    matmuls (`--ablations t5:f32_head_loss` in the benchmarks is the form before)."""
    return _cross_entropy_fwd(logits, labels, label_smoothing)[0]


def _cross_entropy_fwd(logits, labels, label_smoothing):
    x = logits.astype(jnp.float32)
    log_sum = jax.nn.logsumexp(x, axis=-1)
    picked = jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]
    # -log softmax averaged over the target: 1 - eps on the label, eps spread over every class
    loss = log_sum - (1 - label_smoothing) * picked
    if label_smoothing:
        loss = loss - label_smoothing * jnp.mean(x, axis=-1)
    return loss, (logits, labels, log_sum)


def _cross_entropy_bwd(label_smoothing, saved, grad):
    logits, labels, log_sum = saved
    x = logits.astype(jnp.float32)
    classes = jax.lax.broadcasted_iota(labels.dtype, x.shape, x.ndim - 1)
    target = jnp.where(classes == labels[..., None], 1.0 - label_smoothing, 0.0)
    if label_smoothing:
        target = target + label_smoothing / x.shape[-1]
    d_logits = (jnp.exp(x - log_sum[..., None]) - target) * grad[..., None]
    return d_logits.astype(logits.dtype), None


cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def seq2seq_loss(logits, labels, weights, label_smoothing: float = 0.0):
    """Mean cross-entropy per real target token (Hugging Face's T5 loss)."""
    total, count = token_losses(logits, labels, weights, label_smoothing)
    return total / jnp.maximum(count, 1)


def forward(model, params, batch, deterministic, rng=None):
    """The model's output on a batch. Seq2seq models are teacher-forced: the decoder reads the
    labels shifted right behind the start token. BERT-family models compute only what their
    head reads (`BertModel`'s `head_only`): the steps read the logits alone."""
    rngs = None if rng is None else {"dropout": rng}
    if isinstance(model, t5.T5Model):
        extra = {}
        if not model.encoder_only:
            c = model.config
            extra["decoder_input_ids"] = t5.shift_right(
                batch["labels"], c.decoder_start_token_id, c.pad_token_id
            )
        return model.apply(
            {"params": params},
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            deterministic=deterministic,
            rngs=rngs,
            **extra,
        )
    return model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        deterministic=deterministic,
        rngs=rngs,
        head_only=True,
    )


def loss_sums(model, out, batch, regression: bool, label_smoothing: float):
    """(summed loss, count it is averaged over): real rows for classification and regression,
    real target tokens for seq2seq and labelled tokens for token classification. Sums add up
    across micro-batches, so the mean over a whole accumulated batch is exactly the mean over one
    big batch."""
    if is_span_task(model):
        return span_losses(out.logits, batch["labels"], batch["weights"])
    if is_seq2seq(model) or is_token_task(model):
        return token_losses(out.logits, batch["labels"], batch["weights"], label_smoothing)
    weights = batch["weights"]
    per_example = example_losses(out.logits, batch["labels"], regression)
    return jnp.sum(per_example * weights), jnp.sum(weights)


def _micro_batches(batch, n: int):
    """[batch, ...] leaves -> [n, batch // n, ...]: micro-batch i holds rows i, i + n, i + 2n, ...
    Strided, so on a mesh (rows split in contiguous blocks over devices) every device holds its
    share of every micro-batch and the split needs no data movement."""
    return jax.tree_util.tree_map(
        lambda x: x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1), batch
    )


def make_train_step(
    model,
    tx,
    regression: bool = False,
    label_smoothing: float = 0.0,
    accum_steps: int = 1,
    axis_name: str | None = None,
    dropout_rng: str = "threefry",
):
    """`train_step(state, batch) -> (state, {"loss", "grad_norm"})` for the model's task:
    token cross-entropy for seq2seq models, else the classification or regression loss.

    With `accum_steps > 1` the batch is split into that many micro-batches whose gradients are
    summed inside the compiled step (`lax.scan`): one optimizer update for the whole batch, with
    the activations of one micro-batch in memory. Micro-batch i draws dropout from
    fold_in(step key, i).

    With `axis_name` the step runs under `jax.pmap` on a slice of the batch per device: loss and
    gradient sums are `psum`med over that axis before the division, so every device applies the
    update of the whole batch; each device draws its own dropout (key folded with its index).

    `dropout_rng="rbg"` turns each step's key into a key of XLA's RngBitGenerator, so dropout
    bits come from that generator instead of threefry hashing. Masks are still a pure function
    of (seed, step), but may differ between devices and mesh layouts."""

    def summed_loss(trainable, frozen, batch, rng):
        out = forward(model, paths.merge(trainable, frozen), batch, deterministic=False, rng=rng)
        return loss_sums(model, out, batch, regression, label_smoothing)

    def mean_loss(trainable, frozen, batch, rng):
        total, count = summed_loss(trainable, frozen, batch, rng)
        return total / jnp.maximum(jax.lax.stop_gradient(count), 1.0)

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)
    mean_grad_fn = jax.value_and_grad(mean_loss)

    def gradients(state, batch, rng):
        """(mean loss, gradient of the mean loss) over the whole batch."""
        if accum_steps == 1 and axis_name is None:
            # The batch's count is known before the backward pass, so the gradient comes out
            # divided by it: dividing every gradient leaf afterwards made XLA write the small
            # leaves' gradients out again, a kernel each, for the norm and the update to read.
            return mean_grad_fn(state.trainable, state.frozen, batch, rng)
        if accum_steps == 1:
            (total, count), grads = grad_fn(state.trainable, state.frozen, batch, rng)
        else:

            def micro_step(carry, inputs):
                index, micro = inputs
                (total, count), grads = grad_fn(
                    state.trainable, state.frozen, micro, jax.random.fold_in(rng, index)
                )
                summed = jax.tree_util.tree_map(jnp.add, carry, (total, count, grads))
                return summed, None

            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.trainable)
            init = (jnp.zeros(()), jnp.zeros(()), zeros)
            micro = (jnp.arange(accum_steps), _micro_batches(batch, accum_steps))
            total, count, grads = jax.lax.scan(micro_step, init, micro)[0]
        if axis_name is not None:
            total, count, grads = jax.lax.psum((total, count, grads), axis_name)
        denominator = jnp.maximum(count, 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denominator, grads)
        return total / denominator, grads

    def train_step(state, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        if dropout_rng == "rbg":
            rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
        loss, grads = gradients(state, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optim.global_norm(grads)}
        new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(model):
    """`eval_step(params, batch)`: logits [batch, outputs] of a classifier or regressor, the
    predicted tag id of every token [batch, tokens] of a token classifier, or for a seq2seq
    model the teacher-forced (summed token loss, token count) of the batch."""

    def eval_step(params, batch):
        out = forward(model, params, batch, deterministic=True)
        if is_seq2seq(model):
            return token_losses(out.logits, batch["labels"], batch["weights"])
        if is_token_task(model):
            return jnp.argmax(out.logits, axis=-1).astype(jnp.int32)
        return out.logits

    return eval_step
