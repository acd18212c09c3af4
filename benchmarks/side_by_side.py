"""What the jaxft-vs-Hugging-Face benchmarks share: steady-state throughput from a workdir's
log, the PyTorch train step, and the run's metadata (date, machine, versions, settings)."""

import os
import platform
from datetime import date

import numpy as np


def steady_samples_per_s(workdir) -> float:
    """Median train samples/s over the logged windows after the first, which holds compilation."""
    from jaxft.train.writer import read_metrics

    train = [r for r in read_metrics(workdir) if r["split"] == "train"]
    steady = [r["samples_per_s"] for r in train[1:]] or [train[0]["samples_per_s"]]
    return float(np.median(steady))


def torch_train_step(model, optimizer, scheduler, clip_norm=1.0, **inputs) -> tuple:
    """One step as HF's Trainer takes it: loss, backward, grad-norm clip, optimizer and
    schedule step. Returns (loss tensor, grad norm before clipping)."""
    import torch

    loss = model(**inputs).loss
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss, float(grad_norm)


def run_meta(settings: dict) -> dict:
    import jax
    import torch
    import transformers

    return {
        "date": str(date.today()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "settings": settings,
    }
