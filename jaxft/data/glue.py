"""GLUE tasks from a local copy of the GLUE data (the TSV folders of GLUE's download script).

`data.source="glue:<task>"` with `data.path` at the GLUE root (holding `MRPC/`, `CoLA/`, ...) or
at one task's folder. Splits: train.tsv -> train, dev.tsv -> validation (MNLI: dev_matched ->
validation, dev_mismatched -> validation_mismatched); GLUE's test files have no labels and are
not read. Each task's official metric is in `OFFICIAL_METRIC`; every metric jaxft computes for
the task kind is reported alongside it.
"""

import csv
import dataclasses
import logging
from pathlib import Path

from jaxft.data.sources import Examples
from jaxft.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    folder: str  # the folder name GLUE's download script uses
    text: str | int  # column of the first text: a header name, or an index for header-less files
    label: str | int
    pair: str | int | None = None
    labels: tuple[str, ...] | None = ("0", "1")  # None: regression
    header: bool = True
    files: tuple[tuple[str, str], ...] = (("train", "train.tsv"), ("validation", "dev.tsv"))


NLI = ("entailment", "not_entailment")
TASKS = {
    "cola": Task("CoLA", text=3, label=1, header=False),
    "sst2": Task("SST-2", text="sentence", label="label"),
    "mrpc": Task("MRPC", text="#1 String", pair="#2 String", label="Quality"),
    "qqp": Task("QQP", text="question1", pair="question2", label="is_duplicate"),
    "stsb": Task("STS-B", text="sentence1", pair="sentence2", label="score", labels=None),
    "mnli": Task(
        "MNLI",
        text="sentence1",
        pair="sentence2",
        label="gold_label",
        labels=("entailment", "neutral", "contradiction"),
        files=(
            ("train", "train.tsv"),
            ("validation", "dev_matched.tsv"),
            ("validation_mismatched", "dev_mismatched.tsv"),
        ),
    ),
    "qnli": Task("QNLI", text="question", pair="sentence", label="label", labels=NLI),
    "rte": Task("RTE", text="sentence1", pair="sentence2", label="label", labels=NLI),
    "wnli": Task("WNLI", text="sentence1", pair="sentence2", label="label"),
}
# The metric GLUE's leaderboard reports (MRPC and QQP also report accuracy; STS-B Spearman).
OFFICIAL_METRIC = {
    "cola": "mcc",
    "sst2": "accuracy",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "pearson",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}


def task_of(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown GLUE task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def task_dir(root, task: Task) -> Path:
    """The task's folder: `root` itself when it holds train.tsv, else `root/<folder>`."""
    root = Path(root).expanduser()
    for folder in (root, root / task.folder):
        if (folder / "train.tsv").is_file() or (folder / task.files[1][1]).is_file():
            return folder
    raise UserError(
        f"no GLUE {task.folder} data in {root}: expected {root / task.folder}/train.tsv "
        "(set data.path to your GLUE root or the task's folder)"
    )


def read_tsv(path: Path, task: Task) -> Examples:
    """One split's examples. Rows with missing fields (QQP's train file has a few) are skipped
    with a warning naming their lines."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = {}
    if task.header:
        header, rows, first_line = rows[0], rows[1:], 2
        for key in (task.text, task.pair, task.label):
            if key is not None and key not in header:
                raise UserError(f"{path}: no column {key!r} in its header {header}")
        columns = {name: i for i, name in enumerate(header)}
    else:
        first_line = 1
    index = [columns.get(k, k) for k in (task.text, task.pair, task.label)]
    wanted = max(i for i in index if i is not None)
    examples = Examples(text=[], label=[], text_pair=[] if task.pair is not None else None)
    skipped = []
    for line, row in enumerate(rows, first_line):
        if len(row) <= wanted or not row[index[2]].strip():
            skipped.append(line)
            continue
        examples.text.append(row[index[0]])
        if task.pair is not None:
            examples.text_pair.append(row[index[1]])
        label = row[index[2]].strip()
        examples.label.append(float(label) if task.labels is None else label)
    if skipped:
        log.warning(
            "%s: skipped %d rows with missing fields (lines %s)",
            path,
            len(skipped),
            ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else ""),
        )
    if not len(examples):
        raise UserError(f"{path} has no usable rows")
    return examples


def load(name: str, root) -> tuple[dict[str, Examples], list[str] | None]:
    """({split: Examples}, label names or None for STS-B) of one GLUE task."""
    task = task_of(name)
    folder = task_dir(root, task)
    splits = {}
    for split, file_name in task.files:
        if (folder / file_name).is_file():
            splits[split] = read_tsv(folder / file_name, task)
    if "train" not in splits:
        raise UserError(f"{folder} has no train.tsv")
    return splits, list(task.labels) if task.labels else None
