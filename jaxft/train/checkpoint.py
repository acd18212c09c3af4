"""Orbax checkpoints in a workdir.

- `checkpoints/<step>/`: the trained parameters at the end of a run (what `jaxft eval`,
  `predict` and `export` restore).
- `train_state/<step>/`: resumable training state every `train.checkpoint_every` steps and on
  preemption (SIGTERM): trained leaves, optimizer state and step, with the resolved config. A
  rerun of the same command resumes from the latest one that reads back. The last
  `train.keep_checkpoints` are kept.
- `best/<step>/`: with `train.best_metric`, the trained leaves of the best validation score so
  far (its metrics in orbax's metadata, so a resumed run keeps comparing against it). The run's
  final `checkpoints/` then holds these, not the last step's.
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


STATE_DIR = "train_state"


def state_manager(workdir, max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = Path(workdir).absolute() / STATE_DIR
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def best_manager(workdir, metric: str) -> ocp.CheckpointManager:
    """Keeps the one checkpoint with the best `metric`: lowest for a loss, else highest."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=lambda metrics: metrics[metric],
        best_mode="min" if metric.endswith("loss") else "max",
        keep_checkpoints_without_metrics=False,
        create=True,
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / "best", options=options)


def save_best(mgr: ocp.CheckpointManager, name: str, step: int, trainable, result: dict) -> None:
    """Offer the trained leaves scored `result` on validation; the manager keeps the best by
    `result[name]`."""
    if name not in result:
        raise UserError(
            f"train.best_metric={name!r} is not among the validation metrics "
            f"({', '.join(sorted(result))})"
        )
    mgr.save(
        int(step),
        args=ocp.args.StandardSave(trainable),
        metrics={name: float(result[name])},
        force=True,
    )


def restore_best(mgr: ocp.CheckpointManager, name: str, template):
    """(step, trained leaves, metric value) of the best checkpoint kept by `best_manager`."""
    mgr.wait_until_finished()
    step = mgr.best_step()
    if step is None:
        raise UserError("train.best_metric is set but no validation score was saved")
    abstract = jax.tree_util.tree_map(_on_this_host, template)
    trainable = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    return step, trainable, float(mgr.metrics(step)[name])


def _resumable(state) -> dict:
    """The part of a TrainState a resume needs: frozen leaves and the dropout key are rebuilt
    from the base model, the strategy and the seed."""
    return {"step": state.step, "trainable": state.trainable, "opt_state": state.opt_state}


def save_state(mgr: ocp.CheckpointManager, state, meta: dict) -> None:
    """Save asynchronously: orbax copies the arrays off the device before returning, so the
    next (donating) step cannot overwrite what is being written."""
    mgr.save(
        int(meta["step"]),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_resumable(state)), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )


def restore_state(mgr: ocp.CheckpointManager, state):
    """(state with the latest readable checkpoint's leaves, its meta), or (state, None) when
    there is none. An unreadable (truncated, corrupted) checkpoint is skipped with a warning and
    the one before it is used."""
    abstract = jax.tree_util.tree_map(_on_this_host, _resumable(state))
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            restored = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to the last
            log.warning(
                "skipping unreadable checkpoint %s/%d: %s", mgr.directory, step, str(e)[:200]
            )
            mgr.delete(step)  # the resumed run will write this step again
            continue
        return state.replace(**restored.state), restored.meta
    return state, None


def has_checkpoint(workdir) -> bool:
    directory = Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save_params(workdir, step: int, params) -> None:
    with manager(workdir) as mgr:
        mgr.save(int(step), args=ocp.args.StandardSave(params), force=True)
        mgr.wait_until_finished()


def _on_this_host(leaf):
    """The restore target of a leaf: its own sharding if it has one, else the first local device,
    so a checkpoint written on a mesh of any size restores here."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


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
        abstract = jax.tree_util.tree_map(_on_this_host, template)
        try:
            return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as e:
            raise UserError(
                f"checkpoint {workdir}/checkpoints/{step} does not fit the model in "
                f"{workdir}/config.json: {str(e).splitlines()[0][:400]}"
            ) from e
