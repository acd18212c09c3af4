"""Compiled generation for encoder-decoder models (T5): greedy and beam search with a KV cache.

The encoder runs once; the decoder's cache is created by one call over `max_new_tokens`
positions (which also projects the encoder memory for cross-attention, once), then a
`lax.scan` feeds one token per step. One compile per (batch, source length, max_new_tokens).
Params with unmerged LoRA or IA³ leaves work as they are.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxft.models import t5


def _prepare(model, params, input_ids, attention_mask, max_new_tokens: int, copies: int = 1):
    """Encode once, repeat the memory `copies` times (beams), create the decoder cache.

    Returns (memory, memory_mask, cache)."""
    memory = model.apply({"params": params}, input_ids, attention_mask, method=t5.T5Model.encode)
    memory = jnp.repeat(memory, copies, axis=0)
    memory_mask = jnp.repeat(attention_mask, copies, axis=0)
    _, created = model.apply(
        {"params": params},
        jnp.zeros((memory.shape[0], max_new_tokens), jnp.int32),
        memory,
        memory_mask,
        decode=True,
        method=t5.T5Model.decode,
        mutable=["cache"],
    )
    return memory, memory_mask, created["cache"]


def _decode_step(model, params, cache, tokens, memory, memory_mask):
    """Logits of the last position for `tokens` [rows, 1], and the updated cache."""
    logits, updated = model.apply(
        {"params": params, "cache": cache},
        tokens,
        memory,
        memory_mask,
        decode=True,
        method=t5.T5Model.decode,
        mutable=["cache"],
    )
    return logits[:, -1], updated["cache"]


@partial(jax.jit, static_argnums=(0, 4))
def greedy(model: t5.T5Model, params, input_ids, attention_mask, max_new_tokens: int):
    """Token ids [batch, 1 + max_new_tokens]: the start token, then the argmax tokens; after a
    sequence's end-of-sequence token, padding (as Hugging Face's `generate`)."""
    c = model.config
    batch = input_ids.shape[0]
    memory, memory_mask, cache = _prepare(model, params, input_ids, attention_mask, max_new_tokens)
    start = jnp.full((batch, 1), c.decoder_start_token_id, jnp.int32)

    def step(carry, _):
        token, cache, finished = carry
        logits, cache = _decode_step(model, params, cache, token, memory, memory_mask)
        next_token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        next_token = jnp.where(finished, c.pad_token_id, next_token)
        finished = finished | (next_token == c.eos_token_id)
        return (next_token[:, None], cache, finished), next_token

    carry = (start, cache, jnp.zeros((batch,), bool))
    _, tokens = jax.lax.scan(step, carry, None, length=max_new_tokens)
    return jnp.concatenate([start, tokens.T], axis=1)


def trim(tokens, eos_id: int):
    """Cut the columns after the step where every row has produced EOS (HF stops there)."""
    import numpy as np

    tokens = np.asarray(tokens)
    ended = np.cumsum(tokens[:, 1:] == eos_id, axis=1) > 0  # [batch, steps]
    all_done = np.flatnonzero(ended.all(axis=0))
    return tokens if all_done.size == 0 else tokens[:, : all_done[0] + 2]


def _gather(x, indices):
    """x [batch, n, ...] -> x[b, indices[b, j], ...] for each b, j."""
    expanded = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, expanded, axis=1)


def _follows_beams(path, x, rows: int) -> bool:
    """Whether a cache leaf is per beam and must follow the surviving beams."""
    name = getattr(path[-1], "key", "")
    return x.ndim > 0 and x.shape[0] == rows and name not in ("cross_key", "cross_value")


@partial(
    jax.jit,
    static_argnames=("model", "max_new_tokens", "num_beams", "length_penalty", "early_stopping"),
)
def beam_search(
    model: t5.T5Model,
    params,
    input_ids,
    attention_mask,
    max_new_tokens: int,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    early_stopping=False,
):
    """Beam search with the semantics of Hugging Face's `generate(num_beams=K)` (transformers 5).

    Keeps 2K candidates per step; a candidate ending in EOS (or reaching the length limit) joins
    the finished set with score logprob / length**length_penalty; `early_stopping` is True,
    False or "never", as in HF. Returns token ids [batch, 1 + steps] of the best beam; columns
    after the longest finished beam are cut by `trim_beams`.
    """
    c = model.config
    batch, k = input_ids.shape[0], num_beams
    max_length = 1 + max_new_tokens
    neg = jnp.float32(-1.0e9)
    memory, memory_mask, cache = _prepare(
        model, params, input_ids, attention_mask, max_new_tokens, copies=k
    )
    # HF fills unused positions with `pad_token_id or eos_token_id`: EOS when pad is id 0 (T5).
    fill = c.pad_token_id or c.eos_token_id
    sequences = jnp.full((batch, k, max_length), fill, jnp.int32)
    sequences = sequences.at[:, :, 0].set(c.decoder_start_token_id)
    beam_indices = jnp.full((batch, k, max_new_tokens), -1, jnp.int32)
    state = dict(
        t=jnp.int32(1),
        done=jnp.bool_(False),
        cache=cache,
        running=sequences,
        running_scores=jnp.zeros((batch, k)).at[:, 1:].set(neg),
        running_beams=beam_indices,
        finished=sequences,
        finished_scores=jnp.full((batch, k), neg),
        finished_beams=beam_indices,
        is_finished=jnp.zeros((batch, k), bool),
        improvable=jnp.ones((batch, 1), bool),
    )
    top_k_mask = jnp.arange(2 * k) < k
    offsets = jnp.arange(batch)[:, None] * k

    def step(s):
        t = s["t"]
        tokens = jax.lax.dynamic_slice_in_dim(s["running"], t - 1, 1, axis=2).reshape(batch * k, 1)
        logits, updated = _decode_step(model, params, s["cache"], tokens, memory, memory_mask)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        vocab = log_probs.shape[-1]
        scores = log_probs.reshape(batch, k, vocab) + s["running_scores"][:, :, None]
        top_scores, top_index = jax.lax.top_k(scores.reshape(batch, k * vocab), 2 * k)
        top_beam, top_ids = top_index // vocab, top_index % vocab
        top_seqs = _gather(s["running"], top_beam)
        top_seqs = jax.lax.dynamic_update_slice_in_dim(top_seqs, top_ids[:, :, None], t, axis=2)
        top_beams = _gather(s["running_beams"], top_beam)
        top_beams = jax.lax.dynamic_update_slice_in_dim(
            top_beams, (top_beam + offsets)[:, :, None], t - 1, axis=2
        )
        stop = (top_ids == c.eos_token_id) | (t + 1 >= max_length)

        # Running beams for the next step: the best K candidates that did not stop.
        running_scores = top_scores + stop * neg
        keep = jax.lax.top_k(running_scores, k)[1]
        running = _gather(top_seqs, keep)
        running_scores = _gather(running_scores, keep)
        running_beams = _gather(top_beams, keep)

        # Finished beams: candidates among the top K that stopped, scored with the length penalty.
        just_finished = stop & top_k_mask[None, :]
        final = top_scores / (t.astype(jnp.float32) ** length_penalty)
        if early_stopping is True:
            final = final + jnp.all(s["is_finished"], -1, keepdims=True) * neg
        final = final + (~s["improvable"]) * neg + (~just_finished) * neg
        merged_scores = jnp.concatenate([s["finished_scores"], final], axis=1)
        best = jax.lax.top_k(merged_scores, k)[1]
        finished = _gather(jnp.concatenate([s["finished"], top_seqs], 1), best)
        finished_scores = _gather(merged_scores, best)
        finished_beams = _gather(jnp.concatenate([s["finished_beams"], top_beams], 1), best)
        is_finished = _gather(jnp.concatenate([s["is_finished"], just_finished], 1), best)

        # Reorder the decoder cache to follow the surviving beams.
        source = jax.lax.dynamic_slice_in_dim(running_beams, t - 1, 1, axis=2).reshape(-1)
        # Beams only move within their own input, whose cross-attention keys and values every
        # beam shares: reordering those would copy them for nothing (~10% of a step).
        cache = jax.tree_util.tree_map_with_path(
            lambda path, x: x[source] if _follows_beams(path, x, batch * k) else x, updated
        )

        length = t + 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = jnp.float32(max_length - 1)
        else:
            best_length = (length - 1).astype(jnp.float32)
        best_running = running_scores[:, :1] / best_length**length_penalty
        worst_finished = jnp.where(is_finished, jnp.min(finished_scores, 1, keepdims=True), neg)
        improvable = s["improvable"] & jnp.any(best_running > worst_finished, -1, keepdims=True)
        open_beams = ~(jnp.all(is_finished) & (early_stopping is True))
        done = ~(jnp.any(improvable) & open_beams & ~jnp.all(stop))
        return dict(
            t=length,
            done=done,
            cache=cache,
            running=running,
            running_scores=running_scores,
            running_beams=running_beams,
            finished=finished,
            finished_scores=finished_scores,
            finished_beams=finished_beams,
            is_finished=is_finished,
            improvable=improvable,
        )

    state = jax.lax.while_loop(lambda s: ~s["done"] & (s["t"] < max_length), step, state)
    # Like HF: the output is as long as the longest chosen beam.
    generated = jnp.sum(state["finished_beams"][:, 0, :] >= 0, axis=-1)
    return state["finished"][:, 0, :], jnp.max(generated)


def trim_beams(result):
    """(sequences, generated length) from `beam_search` -> numpy ids cut as HF cuts them."""
    import numpy as np

    sequences, generated = result
    return np.asarray(sequences)[:, : 1 + int(generated)]


def generate(model: t5.T5Model, params, input_ids, attention_mask, settings):
    """Token ids (numpy, start token first, cut as Hugging Face cuts them) per `settings`, the
    `generate` section of a config: greedy for num_beams=1, else beam search."""
    if settings.num_beams == 1:
        return trim(
            greedy(model, params, input_ids, attention_mask, settings.max_new_tokens),
            model.config.eos_token_id,
        )
    return trim_beams(
        beam_search(
            model,
            params,
            input_ids,
            attention_mask,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping,
        )
    )
