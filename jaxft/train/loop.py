"""`train_and_evaluate(config, workdir)`: the readable training loop.

experiment config -> data (tokenized, bucketed) -> model + params -> strategy mask -> masked AdamW
-> jitted train step -> evaluation -> workdir (config.json, metrics.jsonl, eval.json, tb/,
checkpoints/).
"""

import contextlib
import dataclasses
import json
import logging
import signal
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxft import config as config_lib
from jaxft import models, peft
from jaxft.data import batching, sources, tasks
from jaxft.errors import UserError
from jaxft.metrics import classification as metrics_lib
from jaxft.models import bert, t5
from jaxft.train import checkpoint, distributed, optim, parallel, qa, seq2seq, step, tokens
from jaxft.train import state as state_lib
from jaxft.train.writer import MetricWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Experiment:
    """Everything a run needs besides the optimizer: model, params, tokenizer and data."""

    config: object
    model: object
    params: dict
    tokenizer: object
    label_names: list[str] | None
    data: dict[str, batching.Encoded]
    buckets: list[int]
    # Seq2seq only: padded target lengths, and each split's reference texts (for BLEU/ROUGE).
    target_buckets: list[int] | None = None
    references: dict[str, list[str]] | None = None
    # Question answering only: each split's questions, and their windows (data holds these).
    raw: dict | None = None
    windows: dict | None = None

    @property
    def regression(self) -> bool:
        return self.config.task.kind == "regression"

    @property
    def seq2seq(self) -> bool:
        return self.config.task.kind == "seq2seq"


def load_tokenizer(config):
    """The run's tokenizer: `config.tokenizer` (a folder or built-in name), else the model's."""
    from transformers import AutoTokenizer

    from jaxft import assets

    if config.tokenizer:
        folder = assets.tokenizer_dir(config.tokenizer)
    elif not models.has_weights(config.model):
        raise UserError(
            f"{config.model!r} is a built-in architecture without tokenizer files: set the "
            "config key `tokenizer` (e.g. tokenizer='t5', the real T5 vocabulary)"
        )
    else:
        folder = assets.model_dir(str(config.model))
    options = {}
    model_type = models.hf_config(config.model, config.model_config.to_dict()).get("model_type")
    if config.task.kind == "token_classification" and model_type == "roberta":
        options["add_prefix_space"] = True  # byte-level BPE needs it for pre-split words
    return AutoTokenizer.from_pretrained(str(folder), **options)


def build_model(config, num_labels, rng=None, load_weights=True):
    """(model, params) for the config's task: pretrained weights, random ones when
    `config.random_init`, or None when `load_weights=False` (a workdir restores them)."""
    head = {k: k for k in ("seq2seq", "token_classification", "question_answering")}
    kwargs = dict(
        head=head.get(config.task.kind, "classification"),
        num_labels=num_labels,
        dtype=config.dtype,
        pooling=config.task.pooling,
        head_dropout=None if config.task.head_dropout < 0 else config.task.head_dropout,
        config_overrides=config.model_config.to_dict(),
    )
    if config.task.kind == "seq2seq":
        model_type = models.hf_config(config.model, kwargs["config_overrides"]).get("model_type")
        if model_type not in t5.MODEL_TYPES:
            raise UserError(
                f"task.kind=seq2seq needs an encoder-decoder model (T5); {config.model!r} is a "
                f"{model_type!r} encoder"
            )
    if load_weights and not config.random_init:
        return models.from_pretrained(config.model, rng=rng, **kwargs)
    model = models.build_model(config.model, **kwargs)
    if not load_weights:
        return model, None
    return model, models.init_params(model, jax.random.key(config.seed) if rng is None else rng)


def num_outputs(config, label_names) -> int | None:
    if config.task.kind == "seq2seq":
        return None
    if config.task.kind == "question_answering":
        return 2  # start and end logits
    return 1 if config.task.kind == "regression" else len(label_names)


def prepare(config, splits=None, load_weights=True) -> Experiment:
    """Read and tokenize the data, then build the model with a head sized for its labels
    (with its pretrained weights unless `load_weights=False`, for restoring a workdir)."""
    config_lib.validate(config)
    if config.task.kind == "question_answering":
        return _prepare_qa(config, splits, load_weights)
    raw, dataset_labels = sources.load(config.data)
    if config.data.max_train_examples and "train" in raw:
        raw["train"] = _first_examples(raw["train"], config.data.max_train_examples)
    if config.task.kind == "seq2seq":
        return _prepare_seq2seq(config, raw, splits, load_weights)
    label_names = tasks.label_names_for(
        config.task.kind, raw, config.task.label_names or dataset_labels
    )
    tokenizer = load_tokenizer(config)
    data = {}
    for split in splits or raw:
        _check_split(raw, split)
        if config.task.kind == "token_classification":
            data[split] = tokens.prepare_split(split, raw[split], tokenizer, config, label_names)
            continue
        labels = tasks.encode_labels(config.task.kind, split, raw[split], label_names)
        data[split] = batching.tokenize(tokenizer, raw[split], labels, config.data.max_length)
        if data[split].truncated:
            log.warning(
                "%s: %d of %d examples truncated to max_length=%d",
                split,
                data[split].truncated,
                len(data[split]),
                config.data.max_length,
            )
    model, params = build_model(
        config, num_outputs(config, label_names), jax.random.key(config.seed), load_weights
    )
    buckets = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    return Experiment(config, model, params, tokenizer, label_names, data, buckets)


def _first_examples(examples: sources.Examples, n: int) -> sources.Examples:
    pair = examples.text_pair
    return sources.Examples(examples.text[:n], examples.label[:n], pair and pair[:n])


def _check_split(raw, split):
    if split not in raw:
        raise UserError(f"the data source has no {split!r} split (it has {sorted(raw)})")


def _prepare_qa(config, splits, load_weights) -> Experiment:
    from jaxft.data import squad

    if config.data.source != "squad":
        raise UserError(
            "task.kind=question_answering reads SQuAD-format JSON: set data.source=squad and "
            "data.files.<split>"
        )
    raw = squad.load(dict(config.data.files))
    if config.data.max_train_examples and "train" in raw:
        q, n = raw["train"], config.data.max_train_examples
        raw["train"] = squad.Questions(q.ids[:n], q.questions[:n], q.contexts[:n], q.answers[:n])
    qa.check_version(raw, config.task.squad_v2)
    tokenizer = load_tokenizer(config)
    windows = {}
    for split in splits or raw:
        _check_split(raw, split)
        windows[split] = qa.make_windows(tokenizer, raw[split], config)
        log.info(
            "%s: %d questions in %d windows", split, len(raw[split]), len(windows[split].question)
        )
    model, params = build_model(config, 2, jax.random.key(config.seed), load_weights)
    return Experiment(
        config,
        model,
        params,
        tokenizer,
        None,
        {split: w.encoded for split, w in windows.items()},
        batching.bucket_lengths(config.data.max_length, config.data.buckets),
        raw=raw,
        windows=windows,
    )


def _prepare_seq2seq(config, raw, splits, load_weights) -> Experiment:
    tokenizer = load_tokenizer(config)
    model, params = build_model(config, None, jax.random.key(config.seed), load_weights)
    seq2seq.check_tokenizer(tokenizer, model.config, config.tokenizer or config.model)
    data, references = {}, {}
    for split in splits or raw:
        _check_split(raw, split)
        data[split], references[split] = seq2seq.prepare_split(split, raw[split], tokenizer, config)
    d = config.data
    return Experiment(
        config,
        model,
        params,
        tokenizer,
        None,
        data,
        batching.bucket_lengths(d.max_length, d.buckets),
        target_buckets=batching.bucket_lengths(d.max_target_length, d.target_buckets or d.buckets),
        references=references,
    )


def all_logits(data, params, eval_step, batch_size, buckets, pad_id, num_outputs) -> np.ndarray:
    """`eval_step(params, batch)` [examples, num_outputs] for every example of `data`, in order
    (logits, or any per-example vector such as pooled features)."""
    logits = np.zeros((len(data), num_outputs), np.float32)
    for indices, batch in batching.batches(data, batch_size, buckets, pad_id):
        logits[indices] = np.asarray(eval_step(params, batch))[: len(indices)]
    return logits


def score(exp: Experiment, params, split: str, eval_step) -> dict:
    """Metrics of `params` on one split (every example counted once; padding rows dropped)."""
    if exp.seq2seq:
        return seq2seq.score(exp, params, split, eval_step)
    if exp.config.task.kind == "token_classification":
        return tokens.score(exp, params, split, eval_step)
    if exp.config.task.kind == "question_answering":
        return qa.score(exp, params, split, eval_step)
    data = exp.data[split]
    logits = all_logits(
        data,
        params,
        eval_step,
        exp.config.train.eval_batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
        num_outputs(exp.config, exp.label_names),
    )
    return metrics_lib.from_logits(data.labels, logits, exp.regression)


def resolved_config(exp: Experiment):
    """The config as run: label names filled in, so eval/predict rebuild the same head."""
    config = exp.config.copy_and_resolve_references()
    if exp.label_names is not None:
        config.task.label_names = tuple(exp.label_names)
    return config


def with_strategy(model, strategy_cfg):
    """The model with the config fields its strategy needs (LoRA dropout, adapter activation)."""
    options = peft.model_options(strategy_cfg)
    return model.clone(config=dataclasses.replace(model.config, **options))


def with_speed_options(model, cfg):
    """The model with the experiment's attention kernel, layer scan and remat settings."""
    options = {"attention": cfg.attention, "scan_layers": cfg.scan_layers, "remat": cfg.remat}
    if isinstance(model.config, bert.BertConfig):
        return model.clone(config=dataclasses.replace(model.config, **options))
    if (cfg.scan_layers, cfg.remat) != (False, "none"):
        raise UserError(
            "scan_layers and remat are implemented for the BERT family only; "
            f"this is a {type(model.config).__name__} model: leave them at their defaults"
        )
    return model


def init_rngs(seed: int):
    """(strategy init key, dropout key): the same for a run and for restoring its workdir."""
    return jax.random.split(jax.random.key(seed))


def write_base_model(workdir: Path, config) -> None:
    """Record the base model's config, so a checkpoint is never restored onto another base."""
    hf_config = models.hf_config(config.model, config.model_config.to_dict())
    base = {"model": str(config.model), "config": hf_config}
    (workdir / "base_model.json").write_text(json.dumps(base, indent=2, sort_keys=True))


def use_compile_cache(path: str) -> None:
    """Keep compiled XLA executables in `path` across runs (JAX's persistent compilation cache):
    a later run whose step has the same shapes, settings and JAX version loads it instead of
    compiling again. JAX keeps executables that took over a second to compile; the setting is
    process-wide and holds from the next compilation on. "" leaves JAX's own setting alone."""
    if path:
        jax.config.update("jax_compilation_cache_dir", str(Path(path).expanduser()))


def make_runner(exp: Experiment, cfg, state, tx):
    """The compiled train and eval steps of a run, on the devices `cfg` asks for."""
    return parallel.make_runner(
        cfg,
        state,
        lambda axis_name: step.make_train_step(
            exp.model,
            tx,
            exp.regression,
            cfg.task.label_smoothing,
            accum_steps=cfg.train.grad_accum_steps,
            axis_name=axis_name,
            dropout_rng=cfg.train.dropout_rng,
        ),
        step.make_eval_step(exp.model),
    )


def train_and_evaluate(config, workdir) -> dict:
    """Train per `config`, evaluate, and write the workdir contract. Returns eval.json's dict.
    In a multi-host run every process calls it; only process 0 writes files other than
    checkpoints (which every process writes its shards of)."""
    use_compile_cache(config.get("compile_cache", ""))
    workdir = Path(workdir)
    if checkpoint.has_checkpoint(workdir):
        # Found before any work, not when saving after the whole run.
        raise UserError(
            f"{workdir} already holds a finished run; train into a new --workdir "
            "(or delete that one)"
        )
    main = distributed.is_main_process()
    workdir.mkdir(parents=True, exist_ok=True)
    exp = prepare(config)
    if "train" not in exp.data:
        raise UserError("the data source has no 'train' split")
    cfg = resolved_config(exp)
    if main:
        (workdir / "config.json").write_text(config_lib.to_json(cfg))
        write_base_model(workdir, cfg)

    rng_init, rng_dropout = init_rngs(cfg.seed)
    exp.model = with_speed_options(with_strategy(exp.model, cfg.strategy), cfg)
    params, mask = peft.apply(exp.params, cfg.strategy, rng_init)
    params = store_frozen(params, mask, cfg.param_dtype)
    log.info(peft.summary(params, mask))
    writer = MetricWriter(workdir, enabled=main)
    writer.write(
        0,
        "setup",
        {
            "trainable_params": peft.paths.count(peft.paths.split(params, mask)[0]),
            "total_params": peft.paths.count(params),
            "strategy": cfg.strategy.name,
        },
    )
    if peft.names(cfg.strategy) == ["features"]:
        if exp.seq2seq or exp.config.task.kind in ("token_classification", "question_answering"):
            raise UserError(
                "the features strategy trains a sentence classifier on pooled features; "
                f"task.kind={exp.config.task.kind} needs another strategy (e.g. frozen)"
            )
        from jaxft.train import features

        return features.train_and_evaluate(exp, cfg, params, workdir, writer)

    train = exp.data["train"]
    bs = cfg.train.batch_size
    steps_per_epoch = -(-len(train) // bs)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    tx, lr_schedule = optim.make(cfg.optim, peft.paths.split(params, mask)[0], total_steps)
    state = state_lib.create(params, mask, tx, rng_dropout)
    runner = make_runner(exp, cfg, state, tx)
    log.info("devices: %s", runner.description)
    pad = exp.tokenizer.pad_token_id or 0
    log.info(
        "train: %d examples, %d steps of %d; buckets %s pad %.1f%% of token slots",
        len(train),
        total_steps,
        bs,
        exp.buckets,
        100 * batching.padding_fraction(train, bs, exp.buckets, cfg.seed, cfg.data.sort_window),
    )

    state = runner.place_state(state)
    state_mgr = checkpoint.state_manager(workdir, cfg.train.keep_checkpoints)
    best_mgr = cfg.train.best_metric and checkpoint.best_manager(workdir, cfg.train.best_metric)
    restored, meta = checkpoint.restore_state(state_mgr, runner.saveable(state))
    start_step = 0
    if meta is not None:
        check_resume_config(meta["config"], cfg)
        state = runner.place_state(restored)
        start_step = int(meta["step"])
        writer.drop_after(start_step)
        log.info("resuming from %s/%d", state_mgr.directory, start_step)
    elif cfg.train.eval_before and "validation" in exp.data:
        result = score(exp, runner.saveable(state).params, "validation", runner.eval_step)
        writer.write(0, "validation", dict(result, epoch=-1))
        log.info("before training: validation %s", _fmt(result))

    def save(step_count):
        meta = {"step": step_count, "config": cfg.to_dict()}
        checkpoint.save_state(state_mgr, runner.saveable(state), meta)

    pending, seen, t_log = [], 0, time.perf_counter()
    bar = tqdm(
        total=total_steps,
        disable=not (cfg.train.progress and main),
        unit="step",
        dynamic_ncols=True,
    )
    bar.update(start_step)
    step_count = start_step
    with preemption_notice() as preempted:
        for epoch in range(start_step // steps_per_epoch, cfg.train.epochs):
            seen_in_epoch = step_count - epoch * steps_per_epoch  # > 0 only when resuming
            epoch_batches = batching.batches(
                train,
                bs,
                exp.buckets,
                pad,
                True,
                cfg.seed,
                epoch,
                exp.target_buckets,
                skip=seen_in_epoch,
                sort_window=cfg.data.sort_window,
            )
            placed = ((i, runner.put_batch(b)) for i, b in epoch_batches)
            for indices, batch in batching.prefetch(placed, cfg.train.prefetch):
                state, metrics = runner.step(state, batch)
                pending.append(metrics)  # device arrays: no host sync until the next log
                seen += len(indices)
                step_count += 1
                bar.update(1)
                if step_count % cfg.train.log_every == 0 or step_count == total_steps:
                    fetched = jax.device_get(pending)
                    elapsed = time.perf_counter() - t_log
                    record = {
                        "loss": float(np.mean([m["loss"] for m in fetched])),
                        "grad_norm": float(np.mean([m["grad_norm"] for m in fetched])),
                        "lr": float(lr_schedule(step_count - 1)),
                        "samples_per_s": seen / elapsed,
                        "epoch": epoch,
                    }
                    writer.write(step_count, "train", record)
                    check_finite(fetched, step_count - len(fetched) + 1, cfg)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{seen / elapsed:.0f}")
                    pending, seen, t_log = [], 0, time.perf_counter()
                every = cfg.train.checkpoint_every
                periodic = bool(every) and step_count % every == 0
                if periodic and step_count < total_steps:
                    save(step_count)
                if preempted(step_count) and step_count < total_steps:
                    if not periodic:
                        save(step_count)
                    state_mgr.wait_until_finished()
                    writer.close()
                    raise Preempted(step_count, workdir)
                if step_count >= total_steps:
                    break
            if cfg.train.eval_every_epoch and "validation" in exp.data:
                trained = runner.saveable(state)
                result = score(exp, trained.params, "validation", runner.eval_step)
                writer.write(step_count, "validation", dict(result, epoch=epoch))
                bar.write(f"epoch {epoch + 1}: validation " + _fmt(result))
                if best_mgr:
                    checkpoint.save_best(
                        best_mgr, cfg.train.best_metric, step_count, trained.trainable, result
                    )
                t_log = time.perf_counter()  # keep eval time out of samples/s
            if step_count >= total_steps:
                break
    bar.close()
    state_mgr.wait_until_finished()

    # Only the trained leaves are saved; the rest is rebuilt from the base model and strategy.
    final = runner.saveable(state)
    trained, kept_step = final.trainable, step_count
    if best_mgr:
        kept_step, trained, value = checkpoint.restore_best(
            best_mgr, cfg.train.best_metric, trained
        )
        writer.write(step_count, "best", {cfg.train.best_metric: value, "best_step": kept_step})
        log.info("best validation %s=%.4f at step %d", cfg.train.best_metric, value, kept_step)
    checkpoint.save_params(workdir, kept_step, trained)
    params = peft.paths.merge(trained, final.frozen)
    results = {
        split: score(exp, params, split, runner.eval_step)
        for split in cfg.train.eval_splits
        if split in exp.data
    }
    return finish(workdir, writer, step_count, results)


def store_frozen(params, mask, dtype: str):
    """Cast the leaves the strategy does not train to `dtype` (bfloat16 halves their memory);
    trained leaves stay float32, since bf16 master weights lose updates below 2**-8 of a weight."""
    if dtype == "float32":
        return params
    trainable, frozen = peft.paths.split(params, mask)
    frozen = jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, models.DTYPES[dtype]), frozen)
    return peft.paths.merge(trainable, frozen)


class Preempted(Exception):  # noqa: N818 - a signal, not an error
    """Raised after a SIGTERM: the state was saved and the same command resumes the run."""

    def __init__(self, step: int, workdir):
        super().__init__(f"preempted at step {step}: state saved in {workdir}/train_state")
        self.step = step


@contextlib.contextmanager
def preemption_notice():
    """Turn SIGTERM (a preemption notice) into a flag the loop checks after every step, so the
    run saves its state and exits instead of dying mid-step. Yields `preempted(step) -> bool`.

    With several processes JAX's runtime catches the notice on any of them and picks one step
    at which all of them save (a save is collective), via `reached_preemption_sync_point`."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        yield multihost_utils.reached_preemption_sync_point
        return
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no notice can be received here
        yield lambda step: False
        return
    try:
        yield lambda step: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)


# Settings that may change between a run and its resume without changing what it computes:
# a resume may land on another device count or mesh shape.
RESUME_FREE_KEYS = (
    "train.progress",
    "train.allow_config_change",
    "train.keep_checkpoints",
    "train.prefetch",
    "train.parallel",
    "mesh.data",
    "mesh.fsdp",
    "mesh.rules",
    "attention",
    "scan_layers",
    "remat",
    "compile_cache",
)


def check_resume_config(saved: dict, cfg) -> None:
    """A resume must continue the same run: any other setting change is an error, unless
    `train.allow_config_change` says it is meant."""
    if cfg.train.allow_config_change:
        return
    old = config_lib.flat_items(saved)
    new = config_lib.flat_items(cfg.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    changed = [k for k in changed if k not in RESUME_FREE_KEYS]
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise UserError(
            f"the workdir's checkpoint was trained with other settings ({details}). Rerun with "
            "the original settings to resume, use a new --workdir, or pass "
            "--config.train.allow_config_change=true to resume with the new ones."
        )


def check_finite(fetched: list[dict], first_step: int, cfg) -> None:
    """Stop at the first logged step whose loss or gradient norm is not finite: every later
    update would be garbage. Checked when metrics are fetched, so it costs no extra host sync."""
    for offset, metrics in enumerate(fetched):
        if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])):
            raise UserError(
                f"non-finite loss or gradient at step {first_step + offset} "
                f"(loss={float(metrics['loss'])}, grad_norm={float(metrics['grad_norm'])}); "
                f"nothing was saved from this run. Lower optim.lr (now {cfg.optim.lr}), keep "
                f"optim.clip_norm > 0 (now {cfg.optim.clip_norm}) or use dtype=float32 "
                f"(now {cfg.dtype})."
            )


def finish(workdir: Path, writer: MetricWriter, step_count: int, results: dict) -> dict:
    """Log the final metrics and write eval.json."""
    for split, result in results.items():
        writer.write(step_count, split, dict(result, final=True))
    writer.close()
    if distributed.is_main_process():
        (workdir / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def _fmt(result: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in result.items())
