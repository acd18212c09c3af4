"""WNUT-16 NER, jaxft against HF PyTorch with the randomness made identical: do the two trainers
follow the same trajectory?

`benchmarks/ner_hf.py` compares the two over seeds, where head init, dropout masks and batch
order all differ (with `--paired`, dropout masks alone). This script removes those differences:
dropout 0 everywhere, jaxft's
initialised classifier copied into `BertForTokenClassification`, and HF fed jaxft's batch
indices at every step. It trains both, interleaved, on real all-MiniLM-L6-v2 and the WNUT-16
train split with the experiment's other settings (batch 32, lr 5e-5, linear decay, clip 1.0,
5 epochs), records loss, grad norm and (every 30 steps) the largest parameter difference, and
scores the test split each side's own way.

    python benchmarks/ner_trajectory.py                  # 300 steps: ~25 minutes on 2 cores
    STEPS=60 python benchmarks/ner_trajectory.py         # one epoch

Result (2026-11-26, 2-core CPU, 300 steps): loss differs by at most 1.5e-5 at any step, the
parameters by 3.0e-5 at the end, and both score test entity F1 0.3278 with the same tag on all
4,891 test words (`benchmarks/results/ner_trajectory.json`).
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)
sys.path.insert(0, ROOT + "/benchmarks")

STEPS = int(os.environ.get("STEPS", "300"))
SEED = int(os.environ.get("SEED", "0"))
OUT = os.environ.get("OUT", ROOT + "/benchmarks/results/ner_trajectory.json")


def main():
    import jax
    import ner_hf  # benchmarks/ner_hf.py: HF's data, batches, scoring
    import side_by_side
    import torch
    import transformers

    from jaxft import assets, models, peft
    from jaxft import config as config_lib
    from jaxft.data import sources
    from jaxft.models import bert
    from jaxft.train import experiment, loop, optim, tokens
    from jaxft.train import state as state_lib

    torch.set_num_threads(2)
    # ---------------- jaxft side, as loop.train_and_evaluate builds it -----------------
    config = config_lib.load_experiment(f"{ROOT}/experiments/wnut_ner.py")
    config.seed = SEED
    config.train.progress = False
    config.model_config.hidden_dropout_prob = 0.0
    config.model_config.attention_probs_dropout_prob = 0.0
    config.task.head_dropout = 0.0
    exp = experiment.prepare(config)
    cfg = experiment.resolved_config(exp)
    rng_init, rng_dropout = loop.init_rngs(cfg.seed)
    exp.model = loop.with_speed_options(loop.with_strategy(exp.model, cfg.strategy), cfg)
    assert exp.model.config.hidden_dropout_prob == 0.0
    assert exp.model.config.attention_probs_dropout_prob == 0.0
    assert exp.model.head.dropout == 0.0, exp.model.head
    params, mask = peft.apply(exp.params, cfg.strategy, rng_init)
    params = loop.store_frozen(params, mask, cfg.param_dtype)
    train = exp.data["train"]
    bs = cfg.train.batch_size
    steps_per_epoch = -(-len(train) // bs)
    total_steps = steps_per_epoch * cfg.train.epochs
    print(
        "jaxft: train",
        len(train),
        "steps/epoch",
        steps_per_epoch,
        "total",
        total_steps,
        "sort_window",
        cfg.data.sort_window,
        "buckets",
        exp.buckets,
        flush=True,
    )
    tx, lr_schedule = optim.make(cfg.optim, peft.paths.split(params, mask)[0], total_steps)
    state = state_lib.create(params, mask, tx, rng_dropout)
    runner = loop.make_runner(exp, cfg, state, tx)
    state = runner.place_state(state)
    pad = exp.tokenizer.pad_token_id or 0

    # ---------------- HF side, as benchmarks/ner_hf.py builds it -----------------------
    torch.manual_seed(SEED)
    model_dir = assets.model_dir("all-MiniLM-L6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    splits, names = sources.wnut16()
    assert list(names) == list(exp.label_names), (names, exp.label_names)
    index = {n: i for i, n in enumerate(names)}

    hf_train, hf_test = (ner_hf.hf_encode(tokenizer, splits[s], index) for s in ("train", "test"))
    # Same examples, same token ids and labels, in the same order, on both sides.
    assert len(hf_train) == len(train)
    for i, (ids, labels) in enumerate(hf_train):
        assert list(train.input_ids[i]) == ids and list(train.token_labels[i]) == labels, i

    hf = transformers.BertForTokenClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
    )
    print(
        "HF attn impl:",
        hf.config._attn_implementation,
        "dropouts",
        hf.config.hidden_dropout_prob,
        hf.config.attention_probs_dropout_prob,
        hf.config.classifier_dropout,
        hf.dropout.p,
        flush=True,
    )
    name_map = bert.hf_name_map(exp.model.config)
    name_map = {p: ("bert." + k, kind) for p, (k, kind) in name_map.items()}
    name_map["head/classifier/kernel"] = ("classifier.weight", bert.LINEAR)
    name_map["head/classifier/bias"] = ("classifier.bias", bert.COPY)
    flat0 = models.flatten(jax.device_get(state.params))
    assert set(flat0) == set(name_map), set(flat0) ^ set(name_map)
    hf_params = dict(hf.named_parameters())
    assert {k for k, _ in name_map.values()} == set(hf_params)
    ner_hf.set_classifier(hf, flat0["head/classifier/kernel"], flat0["head/classifier/bias"])

    def hf_as_flax():
        return {
            p: bert.to_flax(hf_params[k].detach().numpy(), kind)
            for p, (k, kind) in name_map.items()
        }

    def max_diff(flat_j):
        theirs = hf_as_flax()
        worst, where = 0.0, None
        for p, v in theirs.items():
            d = float(np.max(np.abs(np.asarray(flat_j[p]) - v)))
            if d > worst:
                worst, where = d, p
        return worst, where

    d0 = max_diff(flat0)
    print("initial max param diff", d0, flush=True)
    assert d0[0] == 0.0

    optimizer = torch.optim.AdamW(hf.parameters(), lr=cfg.optim.lr, weight_decay=0.0, eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(optimizer, 0, total_steps)
    hf.train()

    # ---------------- train, interleaved ------------------------------------------------
    rec = []

    def all_batches():
        for e in range(cfg.train.epochs):
            yield from loop.train_batches(exp, cfg, e)

    t0 = time.perf_counter()
    for k, (indices, batch) in enumerate(all_batches()):
        if k >= STEPS:
            break
        lr_j = float(lr_schedule(k))
        lr_t = sched.get_last_lr()[0]
        state, metrics = runner.step(state, runner.put_batch(batch))
        ids, m, labels = ner_hf.collate([hf_train[i] for i in indices])
        loss_t, gn = side_by_side.torch_train_step(
            hf, optimizer, sched, input_ids=ids, attention_mask=m, labels=labels
        )
        metrics = jax.device_get(metrics)
        if (k + 1) % 30 == 0 or k == 0:
            flat_j = models.flatten(jax.device_get(state.params))
            pd, where = max_diff(flat_j)
        else:
            pd, where = -1.0, ""
        r = {
            "step": k + 1,
            "n": len(indices),
            "width_j": int(batch["input_ids"].shape[1]),
            "width_t": int(ids.shape[1]),
            "loss_j": float(metrics["loss"]),
            "loss_t": float(loss_t.item()),
            "gn_j": float(metrics["grad_norm"]),
            "gn_t": gn,
            "lr_j": lr_j,
            "lr_t": lr_t,
            "param_diff": pd,
            "param_diff_at": where,
        }
        r["dloss"] = abs(r["loss_j"] - r["loss_t"])
        rec.append(r)
        print(
            f"step {k + 1:3d} n={r['n']} loss j={r['loss_j']:.6f} t={r['loss_t']:.6f} "
            f"d={r['dloss']:.2e} gn j={r['gn_j']:.5f} t={r['gn_t']:.5f} "
            f"lr {lr_j:.3e}/{lr_t:.3e} pdiff={pd:.2e} ({where}) "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )

    # ---------------- evaluate on test --------------------------------------------------
    params_j = state.params
    f1_j = experiment.score(exp, params_j, "test", runner.eval_step)
    gold, pred = ner_hf.hf_tags(hf, hf_test, names)
    f1_t = ner_hf._entity_scores(gold, pred)
    print("jaxft test:", f1_j, flush=True)
    print("HF    test:", f1_t, flush=True)
    # Word-level agreement of the two models' test predictions.
    pj = tokens.word_predictions(
        exp.data["test"],
        params_j,
        runner.eval_step,
        cfg.train.eval_batch_size,
        exp.buckets,
        pad,
        tokens.outside_id(names),
    )
    pred_j = [[names[t] for t in s] for s in pj]
    pairs = zip(pred_j, pred, strict=True)
    same = sum(a == b for x, y in pairs for a, b in zip(x, y, strict=True))
    total = sum(len(x) for x in pred)
    print(f"word predictions identical: {same}/{total}", flush=True)

    dl = [r["dloss"] for r in rec]
    summary = {
        "max_dloss": max(dl),
        "dloss_at": {
            s: rec[s - 1]["dloss"] for s in (1, 10, 30, 60, 120, 180, 240, 300) if s <= len(rec)
        },
        "final_param_diff": rec[-1]["param_diff"],
        "final_param_diff_at": rec[-1]["param_diff_at"],
        "test_jaxft": f1_j,
        "test_hf": f1_t,
        "words_same": same,
        "words_total": total,
    }
    print(json.dumps(summary, indent=1, default=float))
    with open(OUT, "w") as f:
        json.dump({"summary": summary, "steps": rec}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
