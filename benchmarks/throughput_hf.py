"""The PyTorch baseline of `throughput.py`: a random-init Hugging Face model (+PEFT for LoRA) of
a row's shape and strategy, and its train step timed as the jaxft rows' are. Runs in the torch
child process only, which never imports JAX.

The step is the HF Trainer's: bf16 autocast over fp32 weights when the row computes in bf16,
AdamW (fused on CUDA), grad-norm clip 1.0; `torch.compile` for the "compile" variant, whose
compile time is its first steps minus as many steady steps.
"""

import gc
import time


def hf_model(arch: str, shape: dict, strategy: str, device: str, lora: dict):
    """BertForSequenceClassification (2 labels) or T5ForConditionalGeneration of `shape`, with
    PEFT LoRA (`lora`: rank, alpha, dropout, targets) or a frozen backbone, in train mode."""
    import torch
    import transformers

    torch.manual_seed(0)
    if arch == "bert":
        config = transformers.BertConfig(**shape, num_labels=2)
        model = transformers.BertForSequenceClassification(config)
        backbone = model.bert
    else:
        config = transformers.T5Config(
            **shape, feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0
        )
        model = transformers.T5ForConditionalGeneration(config)
        backbone = None
    if strategy == "lora":
        import peft

        config = peft.LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["targets"]),
            task_type="SEQ_CLS" if arch == "bert" else "SEQ_2_SEQ_LM",
        )
        model = peft.get_peft_model(model, config)
    elif strategy == "frozen":
        for p in backbone.parameters():
            p.requires_grad = False
    return model.to(device).train()


def time_train_step(row, shape: dict, batch: dict, steps: int, warmup: int, lora: dict) -> dict:
    """{seconds_per_step, compile_s, memory_gb} of `row`'s HF train step on `batch` (the jaxft
    rows' numpy batch; its example weights are dropped, the ids passed as int64)."""
    import numpy as np
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # What earlier rows left (a compiled model kept by dynamo's caches) must not count in this
    # row's peak memory.
    torch._dynamo.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    model = hf_model(row.arch, shape, row.strategy, device, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=device == "cuda")
    inputs = {
        k: torch.from_numpy(v.astype(np.int64)).to(device)
        for k, v in batch.items()
        if k != "weights"
    }
    forward = torch.compile(model) if row.variant == "compile" else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=row.dtype == "bfloat16")

    def train_step():
        with autocast:
            loss = forward(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        train_step()
    sync()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    per_step = (time.perf_counter() - start) / steps
    compiled = row.variant == "compile"
    return dict(
        seconds_per_step=per_step,
        compile_s=max(first - max(warmup, 1) * per_step, 0.0) if compiled else 0.0,
        memory_gb=torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0,
    )
