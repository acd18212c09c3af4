"""The real seq2seq sources (ASSETS.md): Bible KJV -> RV1909 verse pairs, BBC body -> headline,
BBC topic, and the built-in T5 tokenizer."""

import pytest

from jaxft import assets
from jaxft.data import sources


@pytest.fixture(scope="module")
def bible():
    return sources.bible_en_es()  # ~4 s: read once for all Bible tests


@pytest.fixture(scope="module")
def headlines():
    return sources.bbc_headlines()


def _verse(module: str, book: str, chapter: int, verse: int) -> str:
    """One verse read straight through pysword, independently of `sources`."""
    from pysword.modules import SwordModules

    modules = SwordModules(str(assets.sword_modules()))
    modules.parse_modules()
    bible = modules.get_bible_from_module(module)
    return bible.get(books=[book], chapters=[chapter], verses=[verse], clean=True).strip()


def test_bible_pair_count_and_splits(bible):
    splits, names = bible
    assert names is None
    # The KJV versification has 31,102 verses; 18 are empty in one module (the Spanish one
    # merges or moves them, e.g. Jonah 1:17 -> 2:1), which leaves ASSETS.md's 31,084 pairs.
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 24855,
        "validation": 3046,
        "test": 3183,
    }
    assert sum(len(v) for v in splits.values()) == 31084
    for examples in splits.values():
        assert all(examples.text) and all(examples.label)
        assert examples.text_pair is None


def test_bible_known_pair(bible):
    splits, _ = bible
    train = splits[sources.split_of("Genesis 1:1")]
    assert train.text[0].startswith("In the beginning God created")
    assert train.label[0] == "EN el principio crió Dios los cielos y la tierra."


@pytest.mark.parametrize(
    "book, chapter, verse", [("Genesis", 4, 21), ("John", 3, 16), ("I Samuel", 3, 10)]
)
def test_bible_verse_lands_in_the_split_of_its_key(bible, book, chapter, verse):
    splits, _ = bible
    english = _verse(sources.BIBLE_SOURCE, book, chapter, verse)
    spanish = _verse(sources.BIBLE_TARGET, book, chapter, verse)
    split = sources.split_of(f"{book} {chapter}:{verse}")
    examples = splits[split]
    assert spanish == examples.label[examples.text.index(english)]
    assert all(english not in splits[other].text for other in sources.SPLITS if other != split)


def test_bbc_headlines_counts_and_splits(headlines):
    splits, names = headlines
    assert names is None
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 1789,
        "validation": 211,
        "test": 225,
    }
    for examples in splits.values():
        assert all(examples.text) and all(examples.label)
        # Lines are joined by one space; spaces inside a line stay as the file has them.
        assert all("\n" not in body for body in examples.text)


def test_bbc_known_headline_in_the_split_of_its_key(headlines):
    splits, _ = headlines
    examples = splits[sources.split_of("tech/001.txt")]
    i = examples.label.index("Ink helps drive democracy in Asia")
    assert examples.text[i].startswith("The Kyrgyz Republic, a small, mountainous state")


def test_bbc_reads_the_latin1_file(headlines):
    # sports/199.txt is the one file that is not UTF-8: its "£" is the latin-1 byte 0xa3.
    splits, _ = headlines
    examples = splits[sources.split_of("sports/199.txt")]
    body = examples.text[examples.label.index("Chelsea sack Mutu")]
    assert "a £15.8m signing from Parma" in body


def test_bbc_topic_labels_and_documents():
    splits, names = sources.bbc_topic()
    assert names == ["business", "entertainment", "politics", "sports", "tech"]
    labels = [label for examples in splits.values() for label in examples.label]
    assert {name: labels.count(name) for name in names} == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }
    # The text is the whole document: headline, then body, joined by a space.
    examples = splits[sources.split_of("tech/001.txt")]
    prefix = "Ink helps drive democracy in Asia The Kyrgyz Republic, a small"
    [i] = [i for i, text in enumerate(examples.text) if text.startswith(prefix)]
    assert examples.label[i] == "tech"


def test_t5_tokenizer_matches_real_t5():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(assets.tokenizer_dir("t5") / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 256
    assert tokenizer.encode("Hello world").ids == [8774, 296, 1]
    assert tokenizer.get_vocab_size() == 32100


def test_sword_modules_error_prints_the_install_command(tmp_path):
    from jaxft.errors import UserError

    with pytest.raises(UserError, match="apt-get install -y sword-text-kjv sword-text-sparv"):
        assets.sword_modules(tmp_path)
