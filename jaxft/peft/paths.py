"""'/'-joined parameter paths, regex selection and boolean masks over parameter pytrees."""

import re

import jax
from flax import traverse_util

from jaxft.errors import UserError, closest


def path_of(key_path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in key_path)


def flatten(params) -> dict:
    return traverse_util.flatten_dict(params, sep="/")


def paths(params) -> list[str]:
    return list(flatten(params))


def nearest(pattern: str, candidates: list[str], n: int = 5) -> list[str]:
    """The candidate paths most like a regex that matched nothing (for the error message)."""
    return closest(pattern, candidates, n=n) or candidates[:n]


def mask_from_paths(params, selected) -> dict:
    """A bool tree: True exactly at the '/'-joined paths in `selected`."""
    selected = set(selected)
    return jax.tree_util.tree_map_with_path(lambda kp, _: path_of(kp) in selected, params)


def union(*masks):
    """Leafwise OR of bool trees with the same structure."""
    return jax.tree_util.tree_map(lambda *xs: any(xs), *masks)


def mask_from_regexes(params, patterns, what="target") -> dict:
    """A bool tree: True where a leaf's path matches any of `patterns` (re.search).

    A pattern that matches nothing is an error listing the nearest paths, since a typo would
    otherwise silently train nothing.
    """
    all_paths = paths(params)
    for pattern in patterns:
        if not any(re.search(pattern, p) for p in all_paths):
            raise UserError(
                f"{what} regex {pattern!r} matches no parameter. Nearest paths: "
                f"{nearest(pattern, all_paths)}"
            )
    return jax.tree_util.tree_map_with_path(
        lambda kp, _: any(re.search(p, path_of(kp)) for p in patterns), params
    )


def split(params, mask):
    """(trainable, frozen): two nested dicts holding the leaves where mask is True / False."""
    flat = traverse_util.flatten_dict(params, sep="/")
    flat_mask = traverse_util.flatten_dict(mask, sep="/")
    trainable = {p: v for p, v in flat.items() if flat_mask[p]}
    frozen = {p: v for p, v in flat.items() if not flat_mask[p]}
    return (
        traverse_util.unflatten_dict(trainable, sep="/"),
        traverse_util.unflatten_dict(frozen, sep="/"),
    )


def merge(*trees):
    """Union of nested dicts with disjoint leaves (the inverse of `split`)."""
    flat = {}
    for tree in trees:
        flat.update(traverse_util.flatten_dict(tree, sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")


def count(tree) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def unflatten(flat_params: dict):
    return traverse_util.unflatten_dict(flat_params, sep="/")
