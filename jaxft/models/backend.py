"""Which backend a step is traced for, asked in one place so that a benchmark can trace for a
GPU this machine lacks by answering for it (`benchmarks/gpu_hlo.py` sets `on_gpu`): every caller
reads these through the module, `backend.on_gpu()`, never a copy of the function."""

import jax


def on_gpu() -> bool:
    """Whether the step is traced for a GPU: the default backend here; benchmarks/gpu_hlo.py,
    compiling for a GPU this machine lacks, says yes while it traces."""
    return jax.default_backend() == "gpu"


def on_cpu() -> bool:
    """Whether the step is traced for this machine's CPU (not for a GPU or a TPU)."""
    return jax.default_backend() == "cpu" and not on_gpu()
