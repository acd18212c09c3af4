"""What every model returns: a pytree, so it passes through `jax.jit` unchanged."""

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    logits: jax.Array | None = None
