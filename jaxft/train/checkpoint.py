"""Orbax checkpoints of trained parameters under `<workdir>/checkpoints/<step>/`.

This stage saves the params after training so `jaxft eval` and `jaxft predict` work from a
workdir; resume, preemption and sharded restore build on the same manager.
"""

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxft.errors import UserError

log = logging.getLogger(__name__)


def manager(workdir, max_to_keep: int = 1) -> ocp.CheckpointManager:
    directory = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def has_checkpoint(workdir) -> bool:
    directory = Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save_params(workdir, step: int, params) -> None:
    with manager(workdir) as mgr:
        mgr.save(int(step), args=ocp.args.StandardSave(params), force=True)
        mgr.wait_until_finished()


def restore_params(workdir, template):
    """Restore the latest params onto `template` (a tree of arrays or ShapeDtypeStructs).

    A checkpoint whose tree or shapes differ from the model built from config.json is an error
    that names the first mismatching leaf.
    """
    with manager(workdir) as mgr:
        step = mgr.latest_step()
        if step is None:
            raise UserError(
                f"{workdir}/checkpoints holds no checkpoint: was `jaxft train` run there?"
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as e:
            raise UserError(
                f"checkpoint {workdir}/checkpoints/{step} does not fit the model in "
                f"{workdir}/config.json: {str(e).splitlines()[0][:400]}"
            ) from e
