"""The training state: one pytree, so a whole step is a pure function of it."""

from typing import Any

import flax.struct
import jax

from jaxft.peft import paths


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    trainable: Any  # the leaves the strategy trains (nested dict)
    frozen: Any  # every other leaf, never differentiated (nested dict, may be empty)
    opt_state: Any  # optimizer state for `trainable` only
    rng: jax.Array  # base key; step k uses fold_in(rng, k) for dropout

    @property
    def params(self):
        return paths.merge(self.trainable, self.frozen)


def create(params, mask, tx, rng) -> TrainState:
    trainable, frozen = paths.split(params, mask)
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        trainable=trainable,
        frozen=frozen,
        opt_state=tx.init(trainable),
        rng=rng,
    )
