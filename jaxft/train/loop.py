"""`train_and_evaluate(config, workdir)`: the readable training loop.

experiment config -> data (tokenized, bucketed) -> model + params -> strategy mask -> masked AdamW
-> jitted train step -> evaluation -> workdir (config.json, metrics.jsonl, eval.json, tb/,
checkpoints/). The first two arrows and the evaluation are `experiment.py`'s.
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
from jaxft.data import batching
from jaxft.errors import UserError
from jaxft.models import bert
from jaxft.train import checkpoint, distributed, experiment, optim, parallel, step
from jaxft.train import state as state_lib
from jaxft.train.writer import MetricWriter

log = logging.getLogger(__name__)


def with_strategy(model, strategy_cfg):
    """The model with the config fields its strategy needs (LoRA dropout, adapter activation)."""
    options = peft.model_options(strategy_cfg)
    return model.clone(config=dataclasses.replace(model.config, **options))


def with_speed_options(model, cfg):
    """The model with the experiment's attention kernel, layer scan and remat settings."""
    options = {"attention": cfg.attention, "dropout_seed": cfg.seed}
    if isinstance(model.config, bert.BertConfig):
        options.update(scan_layers=cfg.scan_layers, remat=cfg.remat)
    elif (cfg.scan_layers, cfg.remat) != (False, "none"):
        raise UserError(
            "scan_layers and remat are implemented for the BERT family only; "
            f"this is a {type(model.config).__name__} model: leave them at their defaults"
        )
    elif cfg.attention == "flash":
        raise UserError(
            "attention='flash' (jaxft's flash kernel, no attention bias) is for the BERT family; "
            f"this is a {type(model.config).__name__} model, whose relative position bias it "
            "does not take: use auto, explicit, fused or cudnn_dropout"
        )
    return model.clone(config=dataclasses.replace(model.config, **options))


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


def make_runner(exp: experiment.Experiment, cfg, state, tx):
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


def train_batches(exp: experiment.Experiment, cfg, epoch: int, skip: int = 0):
    """(indices, batch) of one training epoch from its `skip`-th batch on, in the shuffled order
    the seed and epoch fix (a resume and a side-by-side benchmark take the same batches)."""
    return batching.batches(
        exp.data["train"],
        cfg.train.batch_size,
        exp.buckets,
        exp.tokenizer.pad_token_id or 0,
        True,
        cfg.seed,
        epoch,
        exp.target_buckets,
        skip=skip,
        sort_window=cfg.data.sort_window,
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
    exp = experiment.prepare(config)
    if "train" not in exp.data:
        raise UserError("the data source has no 'train' split")
    cfg = experiment.resolved_config(exp)
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
        result = experiment.score(
            exp, runner.saveable(state).params, "validation", runner.eval_step
        )
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
            epoch_batches = train_batches(exp, cfg, epoch, skip=seen_in_epoch)
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
                result = experiment.score(exp, trained.params, "validation", runner.eval_step)
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
        split: experiment.score(exp, params, split, runner.eval_step)
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
