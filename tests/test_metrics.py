import numpy as np
import pytest

from jaxft.metrics import classification as m


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 2])
    out = m.classification(labels, preds, 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # per-class F1: class0 p=1/2 r=1/2 -> .5; class1 p=2/3 r=2/3; class2 1.0
    assert out["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_learn(seed):
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    preds[:80] = labels[:80]
    out = m.classification(labels, preds, 4)
    assert out["mcc"] == pytest.approx(sklearn.matthews_corrcoef(labels, preds))
    assert out["macro_f1"] == pytest.approx(sklearn.f1_score(labels, preds, average="macro"))


def test_mcc_binary_perfect_and_inverse():
    y = np.array([0, 1, 0, 1])
    assert m.classification(y, y, 2)["mcc"] == pytest.approx(1.0)
    assert m.classification(y, 1 - y, 2)["mcc"] == pytest.approx(-1.0)
    assert m.classification(y, np.zeros(4, int), 2)["mcc"] == 0.0


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    out = m.regression(y, y**3)
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.9 < out["pearson"] < 1.0
    assert out["mse"] == pytest.approx(np.mean((y - y**3) ** 2))


def test_validation_loss_is_the_mean_cross_entropy():
    import optax

    from jaxft.metrics import classification as metrics_lib

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.0, 0.0]])
    labels = np.array([0, 2, 0])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    out = metrics_lib.from_logits(labels, logits, is_regression=False)
    assert out["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert out["accuracy"] == pytest.approx(2 / 3)
