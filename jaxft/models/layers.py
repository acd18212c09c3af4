"""Building blocks shared by the model families: the dense layer, its activations, adapters and
the remat policies. Norms (`norms.py`), attention (`attention.py`) and dropout (`dropout.py`)
have modules of their own."""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxft.models import backend
from jaxft.models.dropout import Dropout, apply_mask

Dtype = jnp.dtype | type

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def rows_of(v: jax.Array, shape: tuple, dtype) -> jax.Array:
    """`v` (a parameter) in `dtype`, broadcast over leading rows to `shape`, for adding to or
    scaling activations. Its gradient sums the rows in float32 and comes back in v's dtype: the
    transpose of JAX's own broadcast sums in the activations' dtype, and in bf16 a bias gradient
    summed over a BERT-base batch's 8,192 rows was 3% off (PyTorch's sum of the same bf16 rows,
    accumulated in float32 and rounded once, was 0.17% off)."""
    if tuple(shape[len(shape) - v.ndim :]) != v.shape:
        raise ValueError(f"cannot broadcast {v.shape} over the rows of {tuple(shape)}")
    return _rows_of(v, tuple(shape), jnp.dtype(dtype), jnp.dtype(v.dtype), v.ndim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _rows_of(v, shape, dtype, v_dtype, v_ndim):
    return jnp.broadcast_to(v.astype(dtype), shape)


def _rows_of_fwd(v, shape, dtype, v_dtype, v_ndim):
    return _rows_of(v, shape, dtype, v_dtype, v_ndim), None


def _rows_of_bwd(shape, dtype, v_dtype, v_ndim, _, grad):
    rows = tuple(range(len(shape) - v_ndim))
    return (jnp.sum(grad, axis=rows, dtype=jnp.float32).astype(v_dtype),)


_rows_of.defvjp(_rows_of_fwd, _rows_of_bwd)


def project(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over x's last axis. On a CPU its weight gradient is taken behind an
    optimization barrier: XLA's CPU matmul library wants both operands of x^T @ g transposed,
    and XLA fused those transposes into the kernels that make g (the ReLU or GELU backward,
    dropout's), which its loop emitter then wrote one strided column at a time: 13-26 ms for
    each 8 MB T5 feed-forward gradient. Behind the barrier the transposes are plain copies: on
    the 2-core CPU the MiniLM full step ran 1.09x faster and T5's 1.07-1.08x (LoRA, whose base
    weights take no gradient, the same), with the same values (`--ablations plain_weight_grads`).
    A GPU's compiler folds the transposes into its matmuls, so there the product stays plain."""
    if backend.on_cpu():
        return _project_cpu(x, kernel)
    return jnp.dot(x, kernel)


@jax.custom_vjp
def _project_cpu(x, kernel):
    return jnp.dot(x, kernel)


def _project_cpu_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _project_cpu_bwd(res, g):
    x, kernel = res
    x_kept, g_kept = jax.lax.optimization_barrier((x, g))
    rows = lambda t: t.reshape(-1, t.shape[-1])
    return jnp.dot(g, kernel.T), jnp.dot(rows(x_kept).T, rows(g_kept))


_project_cpu.defvjp(_project_cpu_fwd, _project_cpu_bwd)


def _gelu_f32(x):
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """BERT's exact GELU, x·Φ(x), computed in float32 and returned in x's dtype.

    Its own backward keeps only x: with autodiff of `jax.nn.gelu`, XLA's forward kernel wrote
    three [batch, len, intermediate] tensors per layer for the backward to read back
    (BERT-base on an H100, `benchmarks/hlo_bytes.py`)."""
    return _gelu_f32(x.astype(jnp.float32)).astype(x.dtype)


def _gelu_exact_fwd(x):
    return gelu_exact(x), x


def _gelu_exact_bwd(x, grad):
    xf = x.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * _SQRT_HALF))
    pdf = jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
    return ((grad.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)

ACTIVATIONS: dict[str, Callable] = {
    "gelu": gelu_exact,  # BERT's exact erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Dense(nn.Module):
    """`x @ kernel + bias`, the one projection every model in jaxft uses.

    Parameters are stored in `param_dtype` (float32) and cast to the compute `dtype` at use, so
    mixed precision keeps fp32 master weights. Strategies add optional leaves beside `kernel`,
    and this layer honours them when they are present in the params it is applied with:

    - `lora_a` [in, r], `lora_b` [r, out], `lora_scale` []: adds `scale * (x @ A) @ B`, computed
      factorized, so no [in, out] update or weight gradient is ever formed;
    - `ia3_in` [in]: scales the input (IA³ on feed-forward activations);
    - `ia3_out` [out]: scales the output, bias included (IA³ on keys and values).
    """

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.normal(0.02)
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input (train mode only)

    def _leaf(self, name):
        return self.get_variable("params", name) if self.has_variable("params", name) else None

    @nn.compact
    def __call__(self, x, deterministic: bool = True, lora_keep=None):
        """`lora_keep`: the LoRA branch's input dropout mask, drawn by the enclosing block with
        its other masks (`lora_input_widths`); without it the branch draws its own."""
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        ia3_in, ia3_out = self._leaf("ia3_in"), self._leaf("ia3_out")
        if ia3_in is not None:
            x = x * rows_of(ia3_in, x.shape, x.dtype)
        x = x.astype(self.dtype)
        y = project(x, kernel.astype(self.dtype))
        lora_a = self._leaf("lora_a")
        if lora_a is not None:
            if lora_keep is None:
                drop = deterministic or not self.lora_dropout
                h = Dropout(self.lora_dropout)(x, deterministic=drop)
            else:
                h = apply_mask(x, self.lora_dropout, lora_keep)
            y = y + lora_update(h, self.variables["params"], self.dtype)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + rows_of(bias, y.shape, self.dtype)
        if ia3_out is not None:
            y = y * rows_of(ia3_out, y.shape, self.dtype)
        return y


def lora_update(h: jax.Array, leaves: dict, dtype) -> jax.Array:
    """A `Dense`'s LoRA branch on its (dropped-out) input h: scale * (h @ A) @ B, computed
    factorized and scaled in float32, rounded once, as PEFT's `* scaling` under autocast."""
    h = jnp.dot(jnp.dot(h, leaves["lora_a"].astype(dtype)), leaves["lora_b"].astype(dtype))
    return (h.astype(jnp.float32) * leaves["lora_scale"].astype(jnp.float32)).astype(dtype)


def lora_input_widths(params: dict) -> dict[tuple, int]:
    """{path under a module's `params`, e.g. ("attention", "query"): the input width} of every
    `Dense` there that has a LoRA branch, so the model can draw their input dropout masks with
    its other masks (`dropout.grouped_site_masks`)."""
    found = {}

    def walk(tree, path):
        for name, leaf in tree.items():
            if name == "lora_a":
                found[path] = leaf.shape[0]
            elif hasattr(leaf, "items"):
                walk(leaf, path + (name,))

    walk(params, ())
    return found


def under(keeps: dict, name: str) -> dict:
    """The entries of a {path: mask} dict under `name`, with `name` taken off their paths."""
    return {path[1:]: keep for path, keep in keeps.items() if path[:1] == (name,)}


class Adapter(nn.Module):
    """Bottleneck adapter `x + up(act(down(x)))` (Houlsby et al. 2019).

    It exists only when a strategy added its `down`/`up` leaves; with `up` zero-initialised it
    starts as the identity. The bottleneck size is read from those leaves.
    """

    activation: str = "relu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        bottleneck = self.variables["params"]["down"]["kernel"].shape[1]
        h = Dense(bottleneck, dtype=self.dtype, name="down")(x)
        return x + Dense(x.shape[-1], dtype=self.dtype, name="up")(activation(self.activation)(h))


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # keep layer inputs only
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def remat_policy(name: str):
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat {name!r}; choose from {sorted(REMAT_POLICIES)}")
    return REMAT_POLICIES[name]
