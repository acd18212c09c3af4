import numpy as np
import pytest

from jaxft.data import batching, sources, tasks, user_data
from jaxft.errors import UserError


def test_split_rule_matches_assets_md():
    import hashlib

    for key in ("Genesis 4:21", "tech/001.txt", "The Matrix"):
        bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 10
        expected = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
        assert sources.split_of(key) == expected


def test_rotten_tomatoes_split_by_movie():
    import pandas as pd

    from jaxft import assets

    splits, names = sources.rotten_tomatoes()
    assert names == ["rotten", "fresh"]
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 10390,
        "validation": 1016,
        "test": 1346,
    }
    frame = pd.read_csv(assets.data_file("rotten_tomatoes"))
    frame = frame[frame.category != "plot"].drop_duplicates("text")
    movie = dict(zip(frame.text, frame.movie_name, strict=True))
    movies = {s: {movie[t] for t in ex.text} for s, ex in splits.items()}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]
    assert set(splits["test"].label) == {"rotten", "fresh"}


def _encoded(lengths, labels=None):
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in lengths]
    labels = np.arange(len(lengths), dtype=np.int32) if labels is None else labels
    return batching.Encoded(ids, [np.zeros(n, np.int32) for n in lengths], labels, truncated=0)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_example_once_with_static_shapes(shuffle):
    rng = np.random.default_rng(0)
    data = _encoded(rng.integers(3, 60, size=203))
    buckets = batching.bucket_lengths(64, (16, 32, 48))
    seen = []
    for indices, batch in batching.batches(data, 32, buckets, pad_id=0, shuffle=shuffle, seed=1):
        assert batch["input_ids"].shape[0] == 32 and batch["input_ids"].shape[1] in buckets
        assert batch["weights"].sum() == len(indices)
        # labels line up with rows; real tokens fill the mask exactly
        np.testing.assert_array_equal(batch["labels"][: len(indices)], data.labels[indices])
        np.testing.assert_array_equal(
            batch["attention_mask"].sum(1)[: len(indices)], data.lengths[indices]
        )
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(203))


def test_shuffle_depends_on_seed_and_epoch():
    data = _encoded(np.full(100, 10))
    order = lambda seed, epoch: [
        i.tolist() for i, _ in batching.batches(data, 10, [16], 0, True, seed, epoch)
    ]
    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)


def test_bucket_lengths():
    assert batching.bucket_lengths(64) == [16, 32, 64]
    assert batching.bucket_lengths(100, (16, 200)) == [16, 100]


def test_label_outside_the_label_set_names_split_row_and_value():
    examples = sources.Examples(text=["a", "b", "c"], label=["pos", "neg", "meh"])
    with pytest.raises(UserError, match=r"'test', row 2: label 'meh' is not in the label set"):
        tasks.encode_labels("classification", "test", examples, ["neg", "pos"])


def test_empty_split_is_an_error():
    with pytest.raises(UserError, match="'validation' split is empty"):
        tasks.encode_labels("classification", "validation", sources.Examples([], []), ["a"])


def test_local_files_missing_column(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\nhello,1\n")
    with pytest.raises(UserError, match="no column 'text'.*'sentence'"):
        user_data.local_files({"train": tmp_path / "train.csv"}, "text", "label")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_local_file_formats(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"s1": ["a b", "c"], "s2": ["x", "y z"], "y": [0.5, 1.5]})
    path = tmp_path / f"train{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".tsv": lambda: frame.to_csv(path, index=False, sep="\t"),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    splits, names = user_data.local_files({"train": path}, "s1", "y", "s2")
    assert names is None
    assert splits["train"].text == ["a b", "c"] and splits["train"].text_pair == ["x", "y z"]
    assert list(splits["train"].label) == [0.5, 1.5]


def test_sentence_pairs_get_segment_ids(minilm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    examples = sources.Examples(
        text=["a cat sat", "dogs"],
        label=[0, 1],
        text_pair=["on the mat", "bark loudly at night and all day long"],
    )
    data = batching.tokenize(tokenizer, examples, np.array([0, 1], np.int32), max_length=9)
    assert data.truncated == 1  # the second pair is 12 tokens > 9; the first is 9
    first = data.input_ids[0].tolist()
    assert first[0] == tokenizer.cls_token_id and first.count(tokenizer.sep_token_id) == 2
    # segment 0 covers [CLS] a cat sat [SEP], segment 1 the second text and its [SEP]
    assert data.token_type_ids[0].tolist() == [0] * 5 + [1] * 4
    assert len(data.input_ids[1]) == 9 and data.token_type_ids[1].tolist()[-1] == 1


def test_prefetch_keeps_order_raises_and_stops_early():
    import threading

    assert list(batching.prefetch(iter(range(10)), 2)) == list(range(10))

    def failing():
        yield 1
        raise ValueError("bad batch 2")

    got = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for item in batching.prefetch(failing(), 2):
            got.append(item)
    assert got == [1]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in batching.prefetch(endless(), 2):
        if item == 3:
            break
    assert not any(t.name == "jaxft-prefetch" for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 2  # at most `size` ahead (+ one in hand)


def test_sort_window_trades_padding_for_randomness():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 100, 2048)
    spread = {}
    for window in (1, 64):
        batches = batching.batch_order(lengths, 32, True, 0, 0, sort_window=window)
        assert sorted(np.concatenate(batches).tolist()) == list(range(2048))  # each once
        spread[window] = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread[64] < 5 < 50 < spread[1]  # sorted windows: near-equal lengths per batch
    # Random batches differ from one epoch to the next.
    epochs = [
        {tuple(sorted(b)) for b in batching.batch_order(lengths, 32, True, 0, e, sort_window=1)}
        for e in (0, 1)
    ]
    assert len(epochs[0] & epochs[1]) == 0
