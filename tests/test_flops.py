"""LoRA's speed comes from never forming full weight gradients: XLA's own FLOP count shows it."""

import jax
import jax.numpy as jnp
import optax

from jaxft import peft
from jaxft.models import bert, heads
from jaxft.train import state as state_lib
from jaxft.train import step

BERT_BASE = bert.BertConfig()  # 12 layers, hidden 768, 12 heads, FFN 3072
BATCH, SEQ = 32, 128


def train_step_flops(strategy: str) -> float:
    model = bert.BertModel(BERT_BASE, head=heads.HeadConfig(num_labels=2))
    tx = optax.adamw(1e-4)

    def init_state():
        params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
        params, mask = peft.apply(params, strategy, jax.random.key(1))
        return state_lib.create(params, mask, tx, jax.random.key(2))

    # Shapes only: nothing BERT-base-sized is allocated, XLA compiles from abstract values.
    state = jax.eval_shape(init_state)
    ids = jax.ShapeDtypeStruct((BATCH, SEQ), jnp.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": ids,
        "token_type_ids": ids,
        "labels": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
        "weights": jax.ShapeDtypeStruct((BATCH,), jnp.float32),
    }
    train_step = step.make_train_step(model, tx, regression=False)
    analysis = jax.jit(train_step).lower(state, batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def test_lora_step_costs_at_most_three_quarters_of_full():
    full = train_step_flops("full")
    lora = train_step_flops("lora")
    assert lora <= 0.75 * full, (lora, full, lora / full)
    # Sanity: a full step is about 3x the forward matmul FLOPs (6 * params * tokens, ~85M
    # non-embedding params, 4096 tokens): anything far off means the count is not of the step.
    assert 1.5e12 < full < 4e12, full
