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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir):
    """A tiny random BERT (hidden 32, 2 layers) with the real MiniLM tokenizer files."""
    import shutil

    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


POSITIVE = ["great", "wonderful", "superb", "brilliant", "moving", "delightful"]
NEGATIVE = ["awful", "boring", "dreadful", "tedious", "clumsy", "lifeless"]
FILLER = ["the", "movie", "film", "was", "really", "plot", "acting", "quite", "story", "and"]


def sentiment_rows(n, seed):
    """Synthetic sentiment rows a tiny model learns in a few dozen steps."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["neg", "pos"])
        words = rng.choices(FILLER, k=rng.randint(2, 12))
        words.insert(
            rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        )
        rows.append(
            {"text": " ".join(words), "label": label, "score": 1.0 if label == "pos" else 0.0}
        )
    return rows


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    """train/validation/test csv files of synthetic sentiment: {split: path}."""
    import csv

    folder = tmp_path_factory.mktemp("sentiment")
    files = {}
    for split, n, seed in (("train", 320, 0), ("validation", 64, 1), ("test", 64, 2)):
        path = folder / f"{split}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label", "score"])
            writer.writeheader()
            writer.writerows(sentiment_rows(n, seed))
        files[split] = path
    return files


def tiny_config(model_dir, files, **overrides):
    """An experiment config that trains the tiny model on the synthetic files in seconds."""
    from jaxft import config as config_lib

    c = config_lib.defaults()
    c.model = str(model_dir)
    c.data.source = "files"
    for split, path in files.items():
        c.data.files[split] = str(path)
    c.data.max_length = 32
    c.optim.lr = 2e-3
    c.train.batch_size = 16
    c.train.epochs = 5
    c.train.log_every = 5
    c.train.progress = False
    c.task.head_dropout = 0.0
    for key, value in overrides.items():
        config_lib.apply_overrides(c, [(key, repr(value) if not isinstance(value, str) else value)])
    return c
