"""Where examples come from: built-in real datasets (ASSETS.md) and a user's local files.

A source returns `{split: Examples}` and, when the dataset fixes them, the label names in
index order. Splits are plain Python lists; tokenization happens later, in `batching`.
For seq2seq sources (translation, headline generation) `label` holds the target text; for token
classification (NER) `words` holds each sentence's words and `label` their tags.
"""

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path

from jaxft import assets
from jaxft.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Examples:
    text: list[str]
    # Raw labels (strings or numbers), mapped to ids by `tasks`; for seq2seq, the target text.
    label: list
    text_pair: list[str] | None = None
    words: list[list[str]] | None = None  # token classification: the words `label` tags

    def __len__(self) -> int:
        return len(self.text)


def split_of(key: str) -> str:
    """The benchmark split rule: sha1 bucket 0 -> test, 1 -> validation, else train."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 10
    return {0: "test", 1: "validation"}.get(bucket, "train")


def rotten_tomatoes():
    """Rotten Tomatoes snippets (Pang & Lee), split by movie so no movie is in two splits."""
    import pandas as pd

    frame = pd.read_csv(assets.data_file("rotten_tomatoes"))
    frame = frame[frame["category"] != "plot"].drop_duplicates("text", keep="first")
    splits = {s: Examples(text=[], label=[]) for s in SPLITS}
    for text, label, movie in zip(
        frame["text"], frame["category"], frame["movie_name"], strict=True
    ):
        split = splits[split_of(str(movie))]
        split.text.append(str(text))
        split.label.append(label)
    return splits, ["rotten", "fresh"]


def _split_pairs(keys, sources, targets) -> dict:
    """{split: Examples} from parallel lists, each example placed by `split_of` of its key."""
    splits = {s: Examples(text=[], label=[]) for s in SPLITS}
    for key, source, target in zip(keys, sources, targets, strict=True):
        split = splits[split_of(key)]
        split.text.append(source)
        split.label.append(target)
    return splits


# The two SWORD modules of the translation pairs: English King James, Spanish Reina-Valera 1909.
BIBLE_SOURCE, BIBLE_TARGET = "engKJV2006eb", "spaRV1909eb"


def bible_verses(module_name: str, path: Path) -> tuple[list[str], list[str]]:
    """(keys like "Genesis 4:21", stripped texts) of every verse of a SWORD module, in order.

    Both modules declare the KJV versification, so the same walk over the KJV structure gives
    lists indexed by the same keys (see `bible_en_es` for where the texts still disagree); a
    verse the module lacks comes back as "".
    """
    from pysword.modules import SwordModules

    modules = SwordModules(str(path))
    modules.parse_modules()
    bible = modules.get_bible_from_module(module_name)
    # pysword decompresses a whole block (a chapter or book) for every verse it returns: ~2 ms a
    # verse, ~2 minutes for both Bibles. Memoizing the block by its number makes it ~2 s. The
    # hook is private API of the pinned pysword==0.2.8; without it, reading is only slower.
    if hasattr(bible, "_decompressed_text"):
        bible._decompressed_text = functools.lru_cache(maxsize=16)(bible._decompressed_text)
    keys, texts = [], []
    books = bible.get_structure().get_books()
    for testament in ("ot", "nt"):
        for book in books[testament]:
            for chapter, length in enumerate(book.chapter_lengths, start=1):
                for verse in range(1, length + 1):
                    text = bible.get(
                        books=[book.name], chapters=[chapter], verses=[verse], clean=True
                    )
                    keys.append(f"{book.name} {chapter}:{verse}")
                    texts.append(text.strip())
    return keys, texts


def bible_en_es():
    """English (KJV) -> Spanish (Reina-Valera 1909) verse pairs, split by "<book> <ch>:<verse>".

    Book names are pysword's ("Genesis", "I Samuel", "Song of Solomon"). Verses empty on either
    side are dropped (18, where the Spanish versification merges or moves a verse), which leaves
    the 31,084 pairs of ASSETS.md. Caveat: around those gaps a few chapters (e.g. Numbers 13,
    Job 39-40, Jonah 2) are shifted by a verse in the Spanish module, so ~150 pairs are not
    translations of each other; they are kept so the benchmark matches ASSETS.md.
    """
    path = assets.sword_modules()
    keys, english = bible_verses(BIBLE_SOURCE, path)
    target_keys, spanish = bible_verses(BIBLE_TARGET, path)
    if keys != target_keys:  # both declare KJV versification; anything else breaks alignment
        raise UserError(f"{BIBLE_SOURCE} and {BIBLE_TARGET} do not share a versification")
    kept = [i for i, (en, es) in enumerate(zip(english, spanish, strict=True)) if en and es]
    if len(kept) < len(keys):
        log.info("bible_en_es: dropped %d verses empty in one language", len(keys) - len(kept))
    splits = _split_pairs(
        [keys[i] for i in kept], [english[i] for i in kept], [spanish[i] for i in kept]
    )
    return splits, None


def _read_text(path: Path) -> str:
    """A file's text: UTF-8, or latin-1 for the one BBC file that is not UTF-8 (a £ sign)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def bbc_documents():
    """(label, file name, headline, body) of every BBC News document, in sorted order.

    The first line is the headline; the body is the remaining lines, stripped, blank lines
    dropped, joined by single spaces (the ASSETS.md rule).
    """
    root = assets.data_file("bbc_news")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            lines = [line.strip() for line in _read_text(file).splitlines()]
            body = " ".join(line for line in lines[1:] if line)
            yield folder.name, file.name, lines[0] if lines else "", body


def bbc_headlines():
    """BBC News 2004-05: article body -> headline, split by "<label>/<file name>"."""
    keys, bodies, headlines = [], [], []
    for label, file_name, headline, body in bbc_documents():
        keys.append(f"{label}/{file_name}")
        bodies.append(body)
        headlines.append(headline)
    return _split_pairs(keys, bodies, headlines), None


def bbc_topic():
    """BBC News 2004-05: the whole document (headline and body) -> one of 5 topics."""
    keys, texts, labels = [], [], []
    for label, file_name, headline, body in bbc_documents():
        keys.append(f"{label}/{file_name}")
        texts.append(f"{headline} {body}".strip())
        labels.append(label)
    return _split_pairs(keys, texts, labels), sorted(set(labels))


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence of a CoNLL-style file: one `word<TAB>tag` (or space-separated,
    the tag last) per line, a blank line between sentences."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if len(fields) < 2:
                raise UserError(
                    f"{path}, line {number}: {line.strip()!r} has no tag; each line must be "
                    "'word<TAB>tag', with a blank line between sentences"
                )
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return sentences


def _tagged(sentences) -> Examples:
    return Examples(
        text=[" ".join(w) for w, _ in sentences],
        label=[t for _, t in sentences],
        words=[w for w, _ in sentences],
    )


def wnut16():
    """WNUT-16 NER tweets (10 entity types, BIO); sentence i: i % 10 == 0 test, 1 validation."""
    sentences = read_conll(assets.data_file("wnut16"))
    by_split = {s: [] for s in SPLITS}
    for i, sentence in enumerate(sentences):
        by_split[{0: "test", 1: "validation"}.get(i % 10, "train")].append(sentence)
    tags = {t for _, sentence_tags in sentences for t in sentence_tags}
    return {s: _tagged(v) for s, v in by_split.items()}, ["O", *sorted(tags - {"O"})]


BUILTIN = {
    "rotten_tomatoes": rotten_tomatoes,
    "bible_en_es": bible_en_es,
    "bbc_headlines": bbc_headlines,
    "bbc_topic": bbc_topic,
    "wnut16": wnut16,
}


def load(data_config):
    """`config.data` -> ({split: Examples}, label names or None)."""
    from jaxft.data import glue, tfds_source, user_data

    name = data_config.source
    if name in BUILTIN:
        return BUILTIN[name]()
    columns = (
        data_config.text_column,
        data_config.label_column,
        data_config.text_pair_column or None,
    )
    if name == "files":
        return user_data.local_files(dict(data_config.files), *columns)
    if name == "disk":
        return user_data.from_disk(data_config.path, *columns)
    if name == "function":
        return user_data.from_function(data_config.function, *columns)
    if name.startswith("glue:"):
        if not data_config.path:
            raise UserError(f"data.source={name!r} needs data.path: your local GLUE folder")
        return glue.load(name.partition(":")[2], data_config.path)
    if name.startswith("tfds:"):
        return tfds_source.load(name.partition(":")[2], data_config.path, *columns)
    known = sorted(BUILTIN) + ["files", "disk", "function", "glue:<task>", "tfds:<name>"]
    raise UserError(f"unknown data source {name!r}; use one of {known}")
