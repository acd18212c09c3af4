"""SQuAD v1.1 / v2.0 JSON files: questions over contexts, with character-offset answers.

`data.source="squad"` reads `data.files.<split>` (the official JSON layout: data -> paragraphs ->
qas). Every answer is checked against its context: the text at `answer_start` must be the
answer, or the file is rejected with the question id and the field at fault.
"""

import dataclasses
import json
from pathlib import Path

from jaxft.errors import UserError


@dataclasses.dataclass
class Questions:
    """One split: parallel lists, one entry per question."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    # Gold answers per question: [(text, start character), ...]; [] = unanswerable (v2.0).
    answers: list[list[tuple[str, int]]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def unanswerable(self) -> int:
        return sum(not a for a in self.answers)


def read(path) -> Questions:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"SQuAD file not found: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(document, dict) or "data" not in document:
        raise UserError(f"{path}: expected SQuAD's layout {{'data': [articles]}}")
    split = Questions([], [], [], [])
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            context = paragraph["context"]
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"{path}, question {qa.get('id', f'data[{a}].paragraphs[{p}].qas[{q}]')}"
                split.ids.append(str(qa["id"]))
                split.questions.append(qa["question"])
                split.contexts.append(context)
                split.answers.append(_answers(qa, context, where))
    if not len(split):
        raise UserError(f"{path} holds no questions")
    return split


def _answers(qa: dict, context: str, where: str) -> list[tuple[str, int]]:
    if qa.get("is_impossible"):
        return []
    answers = []
    for i, answer in enumerate(qa.get("answers", [])):
        text, start = answer["text"], int(answer["answer_start"])
        found = context[start : start + len(text)]
        if found != text:
            raise UserError(
                f"{where}: answers[{i}].answer_start={start} points at {found!r} in the "
                f"context, not at the answer {text!r}; fix answer_start (the answer's first "
                "character in the context, counted from 0)"
            )
        answers.append((text, start))
    if not answers:
        raise UserError(f"{where}: no answers and not is_impossible")
    return answers


def load(files: dict) -> dict[str, Questions]:
    splits = {split: read(path) for split, path in files.items() if path}
    if not splits:
        raise UserError("data.source='squad' needs data.files.train / validation / test paths")
    return splits
