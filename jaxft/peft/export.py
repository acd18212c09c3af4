"""Back to Hugging Face: merged checkpoints, and LoRA adapters in HF PEFT's format (both ways).

- `save_hf(params, model, base_dir, out, label_names)`: LoRA merged and IA³ folded into plain
  weights, written as a `*ForSequenceClassification` folder (`config.json`, `model.safetensors`,
  tokenizer files) that `transformers.AutoModelForSequenceClassification` loads.
- `save_peft(params, model, base_dir, out, lora_cfg)`: `adapter_config.json` +
  `adapter_model.safetensors` (the head as `modules_to_save`) for `peft.PeftModel`.
- `save_t5(params, model, hf_config, out)`: a merged `T5ForConditionalGeneration` folder.
- `load_peft(params, adapter_dir)`: an adapter trained with HF PEFT -> LoRA leaves in jaxft params.
"""

import json
import math
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxft.errors import UserError
from jaxft.models import bert, heads, hf
from jaxft.peft import ia3, lora, paths

PEFT_PREFIX = "base_model.model."
HF_CLASSES = {"bert": "BertForSequenceClassification"}
# Token classification and QA heads are the same Dense on every hidden state in BERT and RoBERTa.
HF_TOKEN_CLASSES = {
    "bert": "BertForTokenClassification",
    "roberta": "RobertaForTokenClassification",
}
HF_QA_CLASSES = {"bert": "BertForQuestionAnswering", "roberta": "RobertaForQuestionAnswering"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
)


def _check_exportable(model):
    if model.head is None:
        raise UserError("export needs a model with a classification head")
    model_type = model.config.model_type
    if model.head.kind in ("token_classification", "question_answering"):
        if model_type not in HF_TOKEN_CLASSES:
            raise UserError(f"{model.head.kind} export supports {sorted(HF_TOKEN_CLASSES)}")
        return
    if model_type not in HF_CLASSES:
        raise UserError(
            f"export of {model_type!r} models is not supported yet: Hugging Face's "
            f"{model_type} classification head differs from jaxft's (pooler + classifier)"
        )
    if model.head.pooling != "cls" or not model.config.add_pooling_layer:
        raise UserError(
            "this run pools with task.pooling='mean', which BertForSequenceClassification cannot "
            "express (it classifies the [CLS] pooler output); train with task.pooling=cls to export"
        )


def _name_map(model) -> dict[str, tuple[str, str]]:
    prefix = bert.MODEL_TYPES[model.config.model_type] + "."
    names = {p: (prefix + k, kind) for p, (k, kind) in bert.hf_name_map(model.config).items()}
    names.update(heads.hf_name_map(model.head))
    return names


def _to_hf(array, kind):
    return np.ascontiguousarray(np.asarray(array, np.float32).T if kind == "linear" else array)


def save_hf(params, model, base_dir, out, label_names=None) -> Path:
    """A merged Hugging Face checkpoint of `params` (LoRA merged, IA³ folded)."""
    _check_exportable(model)
    plain = ia3.fold(lora.merge(params))
    flat = paths.flatten(plain)
    token_task = model.head.kind in ("token_classification", "question_answering")
    if token_task:  # *ForTokenClassification and *ForQuestionAnswering have no pooler
        flat = {p: v for p, v in flat.items() if not p.startswith("pooler/")}
    names = _name_map(model)
    leftover = sorted(p for p in flat if p not in names)
    if leftover:
        raise UserError(
            f"these parameters have no place in a plain Hugging Face BERT: {leftover[:4]} ... "
            "(adapters, prompts and prefixes cannot be merged). Export with --format peft "
            "where HF PEFT supports the strategy (LoRA), or keep the jaxft workdir."
        )
    state = {names[p][0]: _to_hf(v, names[p][1]) for p, v in flat.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = hf.read_config(Path(base_dir))
    num_labels = model.head.num_labels
    label_names = list(label_names or [f"LABEL_{i}" for i in range(num_labels)])
    classes = {"token_classification": HF_TOKEN_CLASSES, "question_answering": HF_QA_CLASSES}.get(
        model.head.kind, HF_CLASSES
    )
    config.update(
        architectures=[classes[model.config.model_type]],
        num_labels=num_labels,
        id2label={str(i): n for i, n in enumerate(label_names)}
        if num_labels > 1
        else {"0": "LABEL_0"},
        label2id={n: i for i, n in enumerate(label_names)} if num_labels > 1 else {"LABEL_0": 0},
        problem_type="regression" if num_labels == 1 else "single_label_classification",
        classifier_dropout=model.head.dropout,
    )
    if token_task:
        del config["problem_type"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (Path(base_dir) / name).is_file():
            shutil.copy(Path(base_dir) / name, out / name)
    return out


def save_t5(params, model, hf_config: dict, out, tokenizer_dir=None) -> Path:
    """A `T5ForConditionalGeneration` folder of a seq2seq model's `params` (LoRA merged, IA³
    folded): `config.json` (the run's config), `model.safetensors` and the tokenizer files."""
    from jaxft.models import t5

    if not isinstance(model, t5.T5Model) or model.encoder_only:
        raise UserError("save_t5 exports T5 encoder-decoder models")
    flat = paths.flatten(ia3.fold(lora.merge(params)))
    names = t5.hf_name_map(model.config)
    leftover = sorted(p for p in flat if p not in names)
    if leftover:
        raise UserError(
            f"these parameters have no place in a plain Hugging Face T5: {leftover[:4]} ... "
            "(adapters, prompts and prefixes cannot be merged); keep the jaxft workdir."
        )
    state = {names[p][0]: _to_hf(v, names[p][1]) for p, v in flat.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = dict(hf_config, architectures=["T5ForConditionalGeneration"])
    config.setdefault("is_encoder_decoder", True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if tokenizer_dir and (Path(tokenizer_dir) / name).is_file():
            shutil.copy(Path(tokenizer_dir) / name, out / name)
    return out


def save_peft(params, model, base_dir, out, lora_cfg) -> Path:
    """The LoRA adapter and head of `params` in HF PEFT's on-disk format."""
    _check_exportable(model)
    flat = paths.flatten(params)
    names = _name_map(model)
    others = sorted(p for p in paths.flatten(lora.merge(params)) if p not in names)
    if others:
        raise UserError(
            f"--format peft exports LoRA adapters only; this run also trained {others[:3]} ..."
        )
    modules = [p[: -len("/lora_a")] for p in flat if p.endswith("/lora_a")]
    if not modules:
        raise UserError("no LoRA leaves in this run; --format peft needs strategy lora")
    state, targets = {}, []
    for module in modules:
        hf_module = names[f"{module}/kernel"][0][: -len(".weight")]
        targets.append(hf_module.split(".", 1)[1])  # without the bert. prefix
        state[f"{PEFT_PREFIX}{hf_module}.lora_A.weight"] = _to_hf(
            flat[f"{module}/lora_a"], "linear"
        )
        state[f"{PEFT_PREFIX}{hf_module}.lora_B.weight"] = _to_hf(
            flat[f"{module}/lora_b"], "linear"
        )
    if lora_cfg.bias != "none":
        # HF PEFT's bias="all" means every parameter named bias (LayerNorm biases too); the
        # bias of a LoRA-wrapped layer is saved under its `base_layer`.
        for p, v in flat.items():
            module = p[: -len("/bias")]
            if p.endswith("/bias") and not p.startswith("head/"):
                wrapped = f"{module}/lora_a" in flat
                if lora_cfg.bias == "lora_only" and not wrapped:
                    continue
                key = names[p][0]
                if wrapped:
                    key = key[: -len(".bias")] + ".base_layer.bias"
                state[PEFT_PREFIX + key] = _to_hf(v, "copy")
    for p in ("head/classifier/kernel", "head/classifier/bias"):
        state[PEFT_PREFIX + names[p][0]] = _to_hf(flat[p], names[p][1])
    rank = flat[f"{modules[0]}/lora_a"].shape[1]
    scale = float(flat[f"{modules[0]}/lora_scale"])
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": str(base_dir),
        "r": rank,
        "lora_alpha": scale * (math.sqrt(rank) if lora_cfg.rslora else rank),
        "use_rslora": bool(lora_cfg.rslora),
        "lora_dropout": float(lora_cfg.dropout),
        "target_modules": sorted(targets),
        "bias": lora_cfg.bias,
        "modules_to_save": ["classifier"],
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def load_peft(params, model, adapter_dir):
    """Add the LoRA adapter (and head) of an HF PEFT folder to base `params`.

    Returns `(params, mask)` like a strategy, the LoRA leaves and the head marked trainable.
    """
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"{adapter_dir} has no adapter_config.json: not an HF PEFT adapter folder")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA":
        raise UserError(f"{adapter_dir}: peft_type {config.get('peft_type')!r}; jaxft imports LORA")
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    by_hf = {k: (p, kind) for p, (k, kind) in _name_map(model).items()}
    rank = int(config["r"])
    scale = config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)
    flat = paths.flatten(params)
    trainable = []
    for key, value in state.items():
        if ".original_module." in key:  # PEFT's copy of the untrained head: not needed
            continue
        name = key.removeprefix(PEFT_PREFIX)
        name = name.replace(".base_layer.", ".").replace(".modules_to_save.", ".")
        for suffix, leaf in ((".lora_A.weight", "lora_a"), (".lora_B.weight", "lora_b")):
            if name.endswith(suffix):
                module_key = name[: -len(suffix)] + ".weight"
                if module_key not in by_hf:
                    raise UserError(
                        f"{adapter_dir}: adapter key {key} targets no layer of this model"
                    )
                module = by_hf[module_key][0][: -len("/kernel")]
                expected = (
                    (flat[f"{module}/kernel"].shape[0], rank)
                    if leaf == "lora_a"
                    else (rank, flat[f"{module}/kernel"].shape[1])
                )
                if value.T.shape != expected:
                    raise UserError(
                        f"{adapter_dir}: {key} has shape {value.shape}; this base model needs "
                        f"{expected[::-1]}. The adapter was trained on another base model."
                    )
                flat[f"{module}/{leaf}"] = jnp.asarray(value.T)
                flat[f"{module}/lora_scale"] = jnp.asarray(scale, jnp.float32)
                trainable.append(f"{module}/{leaf}")
                break
        else:
            if name not in by_hf:
                raise UserError(
                    f"{adapter_dir}: adapter key {key} matches no parameter of this model"
                )
            path, kind = by_hf[name]
            array = value.T if kind == "linear" else value
            if array.shape != flat[path].shape:
                raise UserError(
                    f"{adapter_dir}: {key} has shape {value.shape}, the model's {path} "
                    f"{flat[path].shape}: trained for another base or label count"
                )
            flat[path] = jnp.asarray(array)
            trainable.append(path)
    new = paths.unflatten(flat)
    return new, paths.mask_from_paths(new, trainable)
