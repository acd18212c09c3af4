"""Hugging Face checkpoints in and out: safetensors (and torch .bin when torch is importable).

A model family supplies a name map `{our_path: (hf_key, kind)}`; this module reads the tensors,
strips the task prefix (`bert.`, `roberta.`), checks every key and shape, and reports missing and
unexpected keys by name.
"""

import json
import logging
import re
from pathlib import Path

import numpy as np

from jaxft.errors import UserError

log = logging.getLogger(__name__)


def read_config(model_dir: Path) -> dict:
    with open(model_dir / "config.json") as f:
        return json.load(f)


def read_state(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder as numpy arrays in their stored dtypes, keyed by HF
    name (`load_params` casts them to the parameters' dtype)."""
    from safetensors.numpy import load_file

    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return dict(load_file(str(single)))
    if index.is_file():
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(str(model_dir / shard)))
        return state
    torch_bin = model_dir / "pytorch_model.bin"
    if torch_bin.is_file():
        try:
            import torch
        except ImportError as e:
            raise UserError(
                f"{torch_bin} is a torch pickle and torch is not installed; convert it to "
                "model.safetensors or `pip install torch==2.13.0`"
            ) from e
        state = torch.load(torch_bin, map_location="cpu", weights_only=True)
        return {
            k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()
        }
    raise UserError(
        f"{model_dir} holds no weights: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )


def _legacy_names(key: str) -> str:
    # Old TF-converted checkpoints call LayerNorm parameters gamma/beta.
    return re.sub(
        r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    )


def strip_prefix(state: dict[str, np.ndarray], prefix: str, backbone_keys: set[str]):
    """Drop `prefix.` from backbone keys when the checkpoint is a task model (BertFor...)."""
    state = {_legacy_names(k): v for k, v in state.items()}
    if any(k.startswith(prefix + ".") for k in state) and not backbone_keys & state.keys():
        return {
            k[len(prefix) + 1 :] if k.startswith(prefix + ".") else k: v for k, v in state.items()
        }
    return state


def load_params(
    flat_template: dict[str, object],
    name_map: dict[str, tuple[str, str]],
    state: dict[str, np.ndarray],
    to_flax,
    optional: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
    source: str = "checkpoint",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fill `flat_template` ({path: shaped leaf}) from `state` through `name_map`.

    Paths whose name starts with one of `optional` (a new task head) may be absent or have another
    shape: they keep their fresh initialisation and are returned in the second value. Any other
    missing key or wrong shape is an error; unexpected checkpoint keys are logged.
    """
    loaded, fresh, missing, bad_shape = {}, [], [], []
    used = set()
    for path, leaf in flat_template.items():
        hf_key, kind = name_map[path]
        is_optional = path.startswith(optional) if optional else False
        if hf_key not in state:
            (fresh if is_optional else missing).append(path if is_optional else hf_key)
            continue
        used.add(hf_key)
        value = to_flax(np.asarray(state[hf_key]), kind)
        if tuple(value.shape) != tuple(leaf.shape):
            if is_optional:
                fresh.append(path)
                continue
            bad_shape.append(
                f"{hf_key}: checkpoint {tuple(value.shape)}, model {tuple(leaf.shape)} ({path})"
            )
            continue
        loaded[path] = value.astype(leaf.dtype)
    if missing:
        raise UserError(
            f"{source} lacks {len(missing)} expected key(s): {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
            + ". Is config.json the one these weights were saved with?"
        )
    if bad_shape:
        raise UserError(
            f"{source} has {len(bad_shape)} tensor(s) of the wrong shape:\n  "
            + "\n  ".join(bad_shape[:8])
            + "\nThe weights do not belong to this config.json (hidden size, vocab or layers)."
        )
    unexpected = [k for k in state if k not in used and not any(re.search(p, k) for p in ignored)]
    if unexpected:
        log.warning(
            "%s: %d unused key(s) ignored: %s%s",
            source,
            len(unexpected),
            ", ".join(unexpected[:10]),
            " ..." if len(unexpected) > 10 else "",
        )
    return loaded, fresh
