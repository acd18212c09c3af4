import importlib.util
import os

# Tests run on the CPU with float32 matmuls at full precision, so parity bounds are meaningful.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch: pip install -e .[test]")


@pytest.fixture(scope="session")
def minilm_dir():
    from jaxft import assets

    return assets.model_dir("all-MiniLM-L6-v2")
