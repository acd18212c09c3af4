"""Sentence-level metrics on host numpy arrays: accuracy, macro-F1, MCC; Pearson, Spearman."""

import numpy as np
import scipy.special
import scipy.stats


def from_logits(labels: np.ndarray, logits: np.ndarray, is_regression: bool) -> dict:
    """The metrics of a split from the model's outputs [examples, outputs]: regression metrics,
    or accuracy, macro-F1, MCC and the mean cross-entropy (`loss`, the training objective)."""
    if is_regression:
        return regression(labels, logits[:, 0])
    return {
        **classification(labels, logits.argmax(-1), logits.shape[-1]),
        "loss": cross_entropy(labels, logits),
    }


def cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    logits = np.asarray(logits, np.float64)
    picked = logits[np.arange(len(labels)), np.asarray(labels)]
    return float(np.mean(scipy.special.logsumexp(logits, axis=-1) - picked))


def classification(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    confusion = np.zeros((num_labels, num_labels), np.float64)  # [true, predicted]
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    result = {
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "macro_f1": float(f1.mean()),
        "mcc": matthews(confusion),
    }
    if num_labels == 2:  # binary: F1 of the positive class (label index 1), as GLUE's MRPC/QQP
        result["f1"] = float(f1[1])
    return result


def matthews(confusion: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0 when undefined, as scikit-learn."""
    t, p = confusion.sum(1), confusion.sum(0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - t @ p
    cov_pp, cov_tt = n * n - p @ p, n * n - t @ t
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def regression(labels: np.ndarray, predictions: np.ndarray) -> dict:
    labels, predictions = np.asarray(labels, np.float64), np.asarray(predictions, np.float64)
    constant = np.std(labels) == 0 or np.std(predictions) == 0
    return {
        "mse": float(np.mean(np.square(labels - predictions))),
        "pearson": 0.0 if constant else float(scipy.stats.pearsonr(labels, predictions)[0]),
        "spearman": 0.0 if constant else float(scipy.stats.spearmanr(labels, predictions)[0]),
    }
