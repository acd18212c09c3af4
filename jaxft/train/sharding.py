"""Data parallelism and FSDP over a device mesh with axes ("data", "fsdp").

Batches split their leading dimension over every device of the mesh. Parameters and optimizer
state are fully sharded over "fsdp": each large leaf splits its largest dimension that the fsdp
size divides (small leaves are replicated); optimizer moments have their parameter's shape, so
the same rule shards them alike. The train step is jitted with these shardings, so XLA inserts
the all-gathers and reduce-scatters; the result is the single-device computation.

`mesh.rules` overrides that default for the leaves whose path matches a regex: each rule is
"REGEX=SPEC", SPEC one mesh axis (fsdp, data) or `none` per dimension, space-separated, or
`replicated`. The first matching rule wins; optimizer moments match through their parameter's
path (it ends theirs).
"""

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxft.errors import UserError

AXES = ("data", "fsdp")
# Leaves smaller than this stay replicated: sharding them saves little and costs a collective.
MIN_SHARDED_SIZE = 2**14


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A ("data", "fsdp") mesh over `devices` (default: all); -1 = every device left over."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise UserError("mesh.data and mesh.fsdp cannot both be -1; set one of them")
    if data == -1:
        data = n // max(fsdp, 1)
    if fsdp == -1:
        fsdp = n // max(data, 1)
    if data < 1 or fsdp < 1 or data * fsdp != n:
        raise UserError(
            f"mesh data={data} x fsdp={fsdp} does not cover the {n} devices; choose sizes whose "
            f"product is {n} (-1 takes what is left)"
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), AXES)


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Shard the largest dimension that `fsdp` divides; replicate small or indivisible leaves."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def parse_rules(rules) -> list[tuple[re.Pattern, PartitionSpec]]:
    """("REGEX=SPEC", ...) -> [(compiled regex, PartitionSpec)]."""
    parsed = []
    for rule in rules:
        pattern, eq, spec = rule.rpartition("=")
        if not eq or not pattern:
            raise UserError(
                f"mesh.rules entry {rule!r} must look like REGEX=SPEC, e.g. 'embedding$=fsdp none'"
            )
        dims = spec.split()
        if dims == ["replicated"]:
            dims = []
        unknown = [d for d in dims if d not in (*AXES, "none")]
        if unknown:
            raise UserError(f"mesh.rules entry {rule!r}: {unknown[0]!r} is not fsdp, data or none")
        parsed.append(
            (re.compile(pattern), PartitionSpec(*(None if d == "none" else d for d in dims)))
        )
    return parsed


def leaf_path(key_path) -> str:
    """'/'-joined names of a key path through dicts, lists and dataclass fields."""
    names = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in key_path)
    return "/".join(str(n) for n in names)


def tree_shardings(mesh: Mesh, tree, rules=()):
    """A NamedSharding per leaf of `tree` (params, optimizer state or a whole TrainState): the
    first of `rules` (see `parse_rules`) whose regex its path matches, else `leaf_spec`."""
    fsdp = mesh.shape["fsdp"]
    parsed = parse_rules(rules)
    used = set()

    def one(key_path, x):
        path, shape = leaf_path(key_path), tuple(np.shape(x))
        for i, (pattern, spec) in enumerate(parsed):
            if pattern.search(path):
                used.add(i)
                _check_spec(mesh, path, shape, spec, rules[i])
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, leaf_spec(shape, fsdp))

    shardings = jax.tree_util.tree_map_with_path(one, tree)
    unused = [rules[i] for i in range(len(parsed)) if i not in used]
    if unused:
        from jaxft.peft.paths import nearest

        paths = [leaf_path(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(tree)]
        raise UserError(
            f"mesh.rules entry {unused[0]!r} matches no leaf; paths look like "
            + ", ".join(nearest(unused[0].rpartition("=")[0], paths))
        )
    return shardings


def _check_spec(mesh, path, shape, spec, rule):
    if len(spec) > len(shape):
        raise UserError(f"mesh.rules {rule!r} gives {len(spec)} dims to {path} of shape {shape}")
    for size, axis in zip(shape, spec, strict=False):
        if axis is not None and size % mesh.shape[axis]:
            raise UserError(
                f"mesh.rules {rule!r}: {path} dim of size {size} does not split over "
                f"mesh.{axis}={mesh.shape[axis]}"
            )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over every device (both axes), the rest of each leaf whole."""
    return NamedSharding(mesh, PartitionSpec(AXES))


def check_batch(batch_size: int, devices: int, what: str = "train.batch_size") -> None:
    """Every device must get the same number of rows."""
    if batch_size % devices:
        raise UserError(
            f"{what}={batch_size} does not split over the mesh's {devices} devices; use a "
            f"multiple of {devices}"
        )


def bytes_per_device(tree, shardings) -> tuple[int, int]:
    """(bytes the fullest device holds, bytes of the whole tree) for `tree` (arrays or
    ShapeDtypeStructs) placed with `shardings`, counted from each leaf's shard shape."""
    per_device: dict = {}
    total = 0
    leaves = jax.tree_util.tree_leaves(tree)
    for leaf, target in zip(leaves, jax.tree_util.tree_leaves(shardings), strict=True):
        itemsize = np.dtype(leaf.dtype).itemsize if _is_numeric(leaf) else 8  # a PRNG key: 8 B
        total += int(np.prod(leaf.shape, dtype=np.int64)) * itemsize
        shard = int(np.prod(target.shard_shape(leaf.shape), dtype=np.int64)) * itemsize
        for device in target.device_set:
            per_device[device] = per_device.get(device, 0) + shard
    return max(per_device.values(), default=0), total


def _is_numeric(leaf) -> bool:
    return not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
