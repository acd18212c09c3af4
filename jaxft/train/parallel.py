"""How a run's arrays and steps spread over devices and processes.

- one device: the step jitted with donation, nothing else;
- `train.parallel="mesh"` (default with several devices): the state sharded over the
  ("data", "fsdp") mesh of `jaxft.train.sharding`, the step jitted with those shardings, each
  global batch split over every device of every process;
- `train.parallel="pmap"`: classic data parallelism on one process: the state replicated on
  every local device, the batch split across them, gradient sums `psum`med inside the step.

All three compute the same step; `Runner` hides which one the loop is using.
"""

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxft import config as config_lib
from jaxft.errors import UserError
from jaxft.train import sharding

log = logging.getLogger(__name__)

PMAP_AXIS = "devices"
MODES = ("mesh", "pmap")
GPU_PLATFORMS = ("gpu", "cuda", "rocm")
FUSION_AUTOTUNER = "xla_gpu_experimental_enable_fusion_autotuner"

# XLA options jaxft compiles its steps with on a GPU, unless train.xla_options sets them.
GPU_COMPILE_DEFAULTS = {
    # XLA 0.11's fusion autotuner compiles every distinct loop and reduction fusion with XLA's
    # own emitter and with Triton, times both on the card and keeps the faster. Compiled for an
    # H100 by that XLA (on a 2-core machine, no card to time on), the BERT-base full step took
    # 23.3 s with it and 17.3 s without (benchmarks/results/gpu_hlo/xla_0.11.2/); on an H100
    # the step compiled with no autotuning at all (xla_gpu_autotune_level=0, which skips this
    # too) ran at the autotuned step's speed (3,436 and 3,446 samples/s, 2026-11-27). Matmuls
    # are still autotuned.
    FUSION_AUTOTUNER: False,
}


@dataclasses.dataclass
class Runner:
    """The loop's view of the devices. States come in two forms: the device form that `step`
    takes and returns, and the saveable form (each leaf one array, possibly sharded) that
    checkpoints hold and evaluation reads."""

    step: Callable  # (device state, placed batch) -> (device state, metrics)
    put_batch: Callable  # host batch -> placed batch (run ahead by the prefetch thread)
    place_state: Callable  # saveable state -> device state
    saveable: Callable  # device state -> saveable state
    eval_step: Callable  # (params, host batch) -> output readable on this host
    description: str = "1 device"


def make_runner(cfg, state, make_train_step: Callable, eval_fn: Callable) -> Runner:
    """The runner for the visible devices and `cfg.train.parallel`. `state` is the initial
    (saveable) state, `make_train_step(axis_name)` builds the pure step and `eval_fn(params,
    batch)` is the pure eval step."""
    if cfg.train.parallel not in MODES:
        raise UserError(f"train.parallel={cfg.train.parallel!r}; choose one of {MODES}")
    if cfg.train.parallel == "pmap":
        if compile_options(cfg.train.get("xla_options", "")):
            raise UserError(
                "train.xla_options applies to jit-compiled steps and jax.pmap takes no compile "
                "options; use train.parallel=mesh, or set them in the XLA_FLAGS environment "
                "variable"
            )
        return _pmap_runner(cfg, make_train_step, eval_fn)
    options = compile_options(cfg.train.get("xla_options", ""), jax.default_backend())
    eval_options = default_compile_options(jax.default_backend()) or None
    if jax.device_count() == 1:
        return Runner(
            step=jax.jit(make_train_step(None), donate_argnums=0, compiler_options=options),
            put_batch=jax.device_put,
            place_state=lambda state: state,
            saveable=lambda state: state,
            eval_step=jax.jit(eval_fn, compiler_options=eval_options),
        )
    return _mesh_runner(cfg, state, make_train_step, eval_fn, options, eval_options)


def compile_options(text: str, platform: str | None = None) -> dict | None:
    """The train step's compile options (None when there are none): `default_compile_options`
    for `platform`, then `train.xla_options` over them, checked against this XLA by compiling a
    scalar function with them: a misspelt name fails here, once, not at the first step. GPU
    options are accepted on a CPU, so one experiment file serves both."""
    chosen = config_lib.xla_options(text)
    if chosen:
        try:
            _compile_scalar(chosen)
        except jax.errors.JaxRuntimeError as e:
            raise UserError(
                f"train.xla_options={text!r}: XLA refused them ({str(e).strip()}); the names "
                "are XLA's DebugOptions fields, e.g. xla_gpu_autotune_level"
            ) from None
    return {**default_compile_options(platform), **chosen} or None


def default_compile_options(platform: str | None) -> dict:
    """`GPU_COMPILE_DEFAULTS` on a GPU platform, each only where this XLA knows it (an
    experimental option may be renamed or dropped by a later XLA); none elsewhere."""
    if platform not in GPU_PLATFORMS:
        return {}
    return {k: v for k, v in GPU_COMPILE_DEFAULTS.items() if accepted(((k, v),))}


@functools.cache
def accepted(options: tuple) -> bool:
    """Whether this XLA compiles a scalar function with these (name, value) options."""
    try:
        _compile_scalar(dict(options))
    except jax.errors.JaxRuntimeError:
        return False
    return True


def _compile_scalar(options: dict):
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()


def _mesh_runner(cfg, state, make_train_step, eval_fn, options, eval_options) -> Runner:
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    sharding.check_batch(cfg.train.batch_size, mesh.size)
    sharding.check_batch(cfg.train.eval_batch_size, mesh.size, "train.eval_batch_size")
    rows = sharding.batch_sharding(mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    state_shardings = sharding.tree_shardings(mesh, state, cfg.mesh.rules)
    jitted_step = jax.jit(
        make_train_step(None),
        in_shardings=(state_shardings, rows),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
        compiler_options=options,
    )
    per_device, total = sharding.bytes_per_device(state, state_shardings)
    log.info(
        "train state: %.1f MiB per device (%.1f MiB in all, %.1f%%)",
        per_device / 2**20,
        total / 2**20,
        100 * per_device / max(total, 1),
    )

    # Every process reads the eval output whole.
    jitted_eval = jax.jit(eval_fn, out_shardings=replicated, compiler_options=eval_options)
    return Runner(
        step=jitted_step,
        put_batch=lambda batch: put_batch(batch, rows),
        place_state=lambda state: put(state, state_shardings),
        saveable=lambda state: state,
        eval_step=lambda params, batch: jitted_eval(params, put_batch(batch, rows)),
        description=f"mesh {dict(mesh.shape)} over {mesh.size} devices"
        + (f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""),
    )


def _pmap_runner(cfg, make_train_step, eval_fn) -> Runner:
    n = jax.local_device_count()
    if jax.process_count() > 1:
        raise UserError(
            "train.parallel=pmap runs on one process; multi-host runs use train.parallel=mesh"
        )
    if cfg.mesh.fsdp != 1:
        raise UserError(
            f"train.parallel=pmap replicates the parameters; mesh.fsdp={cfg.mesh.fsdp} needs "
            "train.parallel=mesh"
        )
    sharding.check_batch(cfg.train.batch_size, n)
    per_device = cfg.train.batch_size // n
    if per_device % cfg.train.grad_accum_steps:
        raise UserError(
            f"with train.parallel=pmap each of the {n} devices gets {per_device} rows, which "
            f"do not split into train.grad_accum_steps={cfg.train.grad_accum_steps} micro-batches"
        )
    pmapped = jax.pmap(make_train_step(PMAP_AXIS), axis_name=PMAP_AXIS, donate_argnums=0)

    def split_rows(batch):
        """[batch, ...] -> [devices, batch / devices, ...]: pmap hands row block i to device i."""
        return jax.tree_util.tree_map(
            lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch
        )

    def step(state, batch):
        state, metrics = pmapped(state, batch)
        # Every device holds the same metrics (they are psum'med); keep device 0's.
        return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

    return Runner(
        step=step,
        put_batch=split_rows,
        place_state=lambda state: jax.tree_util.tree_map(
            lambda x: jax.numpy.broadcast_to(x, (n,) + x.shape), state
        ),  # a leading device axis: pmap hands copy i to device i
        saveable=lambda state: jax.tree_util.tree_map(lambda x: x[0], state),
        eval_step=jax.jit(eval_fn),  # evaluation runs on the first device
        description=f"pmap over {n} devices",
    )


def put(tree, shardings):
    """Place every leaf of `tree` with its sharding. With several processes each builds its own
    shards from its (identical) copy of the leaf, as `device_put` cannot address other hosts."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(leaf, target):
        if isinstance(leaf, jax.Array) and leaf.sharding == target:
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(leaf), target)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def local_rows(target: NamedSharding, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold under `target` (which splits
    rows only, so the rows of every leaf of the batch)."""
    starts, stops = [], []
    for index in target.addressable_devices_indices_map((batch_size,)).values():
        rows = index[0]
        starts.append(rows.start or 0)
        stops.append(batch_size if rows.stop is None else rows.stop)
    return slice(min(starts), max(stops))


def put_batch(batch: dict, target: NamedSharding) -> dict:
    """A host batch (every process builds the same global batch) as global arrays split by rows:
    each process hands over only its own rows."""
    if jax.process_count() == 1:
        return jax.device_put(batch, target)
    rows = local_rows(target, len(next(iter(batch.values()))))
    return {
        name: jax.make_array_from_process_local_data(target, x[rows], x.shape)
        for name, x in batch.items()
    }
