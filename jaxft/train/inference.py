"""Evaluate and predict from a finished workdir (config.json + checkpoints/)."""

import json
from pathlib import Path

import jax
import numpy as np

from jaxft import config as config_lib
from jaxft import models, peft
from jaxft.data import batching, sources
from jaxft.errors import UserError
from jaxft.train import checkpoint, experiment, loop, qa, seq2seq, step, tokens

# Config fields that change parameter shapes or meaning (BERT family, then T5).
STRUCTURAL_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "feed_forward_proj",
    "tie_word_embeddings",
)


def check_base_model(workdir: Path, config) -> None:
    """Refuse to restore a checkpoint onto a base model other than the one it was trained on."""
    from jaxft import models

    recorded = workdir / "base_model.json"
    if not recorded.is_file():
        return
    saved = json.loads(recorded.read_text())["config"]
    current = models.hf_config(config.model, config.model_config.to_dict())
    keys = STRUCTURAL_KEYS
    differ = [
        f"{k}: trained on {saved.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    if differ:
        raise UserError(
            f"{workdir} was trained on another base model than {config.model}: "
            + "; ".join(differ)
            + ". Point config.json's 'model' at the original base."
        )


def load_workdir(workdir):
    """(config, model, params, tokenizer) of a trained run.

    The checkpoint holds the trained leaves; the frozen rest comes from the base model with the
    run's strategy applied again (nothing of the base is needed for full fine-tuning).
    """
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise UserError(
            f"{workdir} has no config.json: is it the --workdir of a `jaxft train` run?"
        )
    config = config_lib.from_json_file(workdir / "config.json")
    loop.use_compile_cache(config.get("compile_cache", ""))
    check_base_model(workdir, config)
    label_names = list(config.task.label_names) or None
    needs_base = peft.names(config.strategy) != ["full"]
    model, base = experiment.build_model(
        config, experiment.num_outputs(config, label_names), load_weights=needs_base
    )
    if base is None:
        base = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
    params, mask = peft.apply(base, config.strategy, loop.init_rngs(config.seed)[0])
    template, frozen = peft.paths.split(params, mask)
    _, trained = checkpoint.restore_params(workdir, template)
    model = loop.with_speed_options(loop.with_strategy(model, config.strategy), config)
    return config, model, peft.paths.merge(trained, frozen), experiment.load_tokenizer(config)


def evaluate(workdir, splits) -> dict:
    config, model, params, _ = load_workdir(workdir)
    exp = experiment.prepare(config, splits=splits, load_weights=False)
    exp.model = model  # with the strategy's options, as trained
    eval_step = jax.jit(step.make_eval_step(model))
    return {split: experiment.score(exp, params, split, eval_step) for split in splits}


def predict(workdir, texts: list[str], text_pairs: list[str] | None = None) -> list[dict]:
    """Per text: the predicted label and every label's probability (or the regression value)."""
    config, model, params, tokenizer = load_workdir(workdir)
    if not texts:
        raise UserError("no text to predict: pass TEXT arguments or --input FILE.jsonl")
    if config.task.kind == "seq2seq":
        return seq2seq.predict(config, model, params, tokenizer, texts)
    eval_step = jax.jit(step.make_eval_step(model))
    if config.task.kind == "token_classification":
        return tokens.predict(config, params, tokenizer, eval_step, texts)
    if config.task.kind == "question_answering":
        return qa.predict(config, params, tokenizer, eval_step, texts, text_pairs)
    examples = sources.Examples(text=list(texts), label=[0] * len(texts), text_pair=text_pairs)
    data = batching.tokenize(
        tokenizer, examples, np.zeros(len(texts), np.int32), config.data.max_length
    )
    lengths = batching.bucket_lengths(config.data.max_length, config.data.buckets)
    logits = experiment.all_logits(
        data,
        params,
        eval_step,
        config.train.eval_batch_size,
        lengths,
        tokenizer.pad_token_id or 0,
        model.head.num_labels,
    )
    results = []
    for text, row in zip(texts, logits, strict=True):
        if config.task.kind == "regression":
            results.append({"text": text, "value": float(row[0])})
            continue
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        names = list(config.task.label_names)
        results.append(
            {
                "text": text,
                "label": names[int(probs.argmax())],
                "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)},
            }
        )
    return results


def read_jsonl(path) -> tuple[list[str], list[str] | None]:
    texts, pairs = [], []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if "text" not in row:
                raise UserError(f"{path}, line {i + 1}: no 'text' field")
            texts.append(str(row["text"]))
            pairs.append(row.get("text_pair"))
    return texts, (pairs if any(p is not None for p in pairs) else None)


def export(workdir, fmt: str, out) -> Path:
    """`jaxft export`: a merged HF checkpoint (`hf`) or an HF PEFT adapter (`peft`)."""
    from jaxft import assets
    from jaxft.peft import export as export_lib

    config, model, params, _ = load_workdir(workdir)
    if config.task.kind == "seq2seq":
        if fmt != "hf":
            raise UserError("seq2seq runs export with --format hf (a T5ForConditionalGeneration)")
        hf_config = models.hf_config(config.model, config.model_config.to_dict())
        tokenizer_dir = (
            assets.tokenizer_dir(config.tokenizer)
            if config.tokenizer
            else assets.model_dir(config.model)
        )
        return export_lib.save_t5(params, model, hf_config, out, tokenizer_dir)
    base_dir = assets.model_dir(config.model)
    if fmt == "hf":
        return export_lib.save_hf(params, model, base_dir, out, list(config.task.label_names))
    if fmt == "peft":
        return export_lib.save_peft(params, model, base_dir, out, config.strategy.lora)
    raise UserError(f"unknown export format {fmt!r}; use hf or peft")
