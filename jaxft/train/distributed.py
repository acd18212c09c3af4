"""Multi-host runs: every process runs the same command and joins JAX's multi-controller runtime.

`jaxft train ... --coordinator HOST:PORT --num_processes N --process_id I` (process 0 serves the
coordinator at HOST:PORT), or `--distributed` alone where `jax.distributed.initialize` finds the
cluster itself (Cloud TPU pods, Slurm, Open MPI). Afterwards `jax.devices()` lists the devices of
every process and the mesh spans them all; `jaxft.train.parallel` feeds each process its rows.
"""

import logging
import socket
import time

import jax

from jaxft.errors import UserError

log = logging.getLogger(__name__)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
    auto: bool = False,
) -> None:
    """Join the run's processes before anything touches a device. No-op without any flag."""
    explicit = (coordinator, num_processes, process_id)
    if all(v is None for v in explicit):
        if auto:
            jax.distributed.initialize(initialization_timeout=timeout_s)
        return
    if any(v is None for v in explicit):
        raise UserError(
            "a multi-host run needs all of --coordinator HOST:PORT, --num_processes N and "
            "--process_id I (or --distributed alone on a TPU pod, Slurm or Open MPI)"
        )
    host, port = _address(coordinator)
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise UserError(
            f"--process_id {process_id} is not in 0..{num_processes - 1} "
            f"(--num_processes {num_processes})"
        )
    # CPU devices talk over gloo (the XLA default on CPU is no cross-process collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if process_id != 0:
        # JAX aborts the whole process when the coordinator never answers; find out first.
        wait_for_coordinator(host, port, timeout_s)
    log.info(
        "process %d of %d: joining the coordinator at %s (waiting up to %d s for all)",
        process_id,
        num_processes,
        coordinator,
        timeout_s,
    )
    jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=timeout_s
    )


def _address(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"--coordinator {coordinator!r} must look like HOST:PORT, e.g. 10.0.0.1:1234"
        )
    return host, int(port)


def wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
    """Return once something listens at host:port; a clear error after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"the coordinator {host}:{port} did not answer within {timeout_s:g} s "
                    f"({e.strerror or e}). Start process 0 with the same --coordinator, check "
                    "the host and port are reachable from here, or raise --init_timeout."
                ) from e
            time.sleep(0.5)


def is_main_process() -> bool:
    """Only process 0 writes logs, metrics, eval.json and exports."""
    return jax.process_index() == 0
