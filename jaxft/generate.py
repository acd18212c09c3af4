"""Compiled generation for encoder-decoder models (T5): greedy decoding with a KV cache.

The encoder runs once; the decoder's cache is created by one call over `max_new_tokens`
positions (which also projects the encoder memory for cross-attention, once), then a
`lax.scan` feeds one token per step. One compile per (batch, source length, max_new_tokens).
Params with unmerged LoRA or IA³ leaves work as they are.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxft.models import t5


@partial(jax.jit, static_argnums=(0, 4))
def greedy(model: t5.T5Model, params, input_ids, attention_mask, max_new_tokens: int):
    """Token ids [batch, 1 + max_new_tokens]: the start token, then the argmax tokens; after a
    sequence's end-of-sequence token, padding (as Hugging Face's `generate`)."""
    c = model.config
    batch = input_ids.shape[0]
    variables = {"params": params}
    memory = model.apply(variables, input_ids, attention_mask, method=t5.T5Model.encode)
    _, created = model.apply(
        variables,
        jnp.zeros((batch, max_new_tokens), jnp.int32),
        memory,
        attention_mask,
        decode=True,
        method=t5.T5Model.decode,
        mutable=["cache"],
    )
    start = jnp.full((batch, 1), c.decoder_start_token_id, jnp.int32)

    def step(carry, _):
        token, cache, finished = carry
        logits, updated = model.apply(
            {"params": params, "cache": cache},
            token,
            memory,
            attention_mask,
            decode=True,
            method=t5.T5Model.decode,
            mutable=["cache"],
        )
        next_token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        next_token = jnp.where(finished, c.pad_token_id, next_token)
        finished = finished | (next_token == c.eos_token_id)
        return (next_token[:, None], updated["cache"], finished), next_token

    carry = (start, created["cache"], jnp.zeros((batch,), bool))
    _, tokens = jax.lax.scan(step, carry, None, length=max_new_tokens)
    return jnp.concatenate([start, tokens.T], axis=1)


def trim(tokens, eos_id: int):
    """Cut the columns after the step where every row has produced EOS (HF stops there)."""
    import numpy as np

    tokens = np.asarray(tokens)
    ended = np.cumsum(tokens[:, 1:] == eos_id, axis=1) > 0  # [batch, steps]
    all_done = np.flatnonzero(ended.all(axis=0))
    return tokens if all_done.size == 0 else tokens[:, : all_done[0] + 2]
