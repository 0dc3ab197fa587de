"""fit's and evaluate's metrics against scikit-learn's functions on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    top_k_accuracy_score,
)

import backprop as bp

SCORES = {"precision": precision_score, "recall": recall_score, "f1": f1_score}


def _classifier(outputs, activation=None, absent=None, dtype="float64"):
    net = bp.Sequential(bp.Dense(5, 12, activation="tanh"), bp.Dense(12, outputs, activation=activation),
                        dtype=dtype, seed=3)
    if absent is not None:  # a class the network never predicts
        net.layers[1].bias.data[absent] = -100.0
    return net


def _features(n=157, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5))


CLASSIFIERS = {
    # name: (network, loss, targets, predicted labels from the outputs)
    "cross_entropy": (lambda: _classifier(4, absent=3), bp.CrossEntropyLoss(),
                      lambda rng, n: rng.integers(0, 3, n), lambda out: out.argmax(axis=1)),
    "cross_entropy_one_hot": (lambda: _classifier(3), bp.CrossEntropyLoss(),
                              lambda rng, n: np.eye(3)[rng.integers(0, 3, n)], lambda out: out.argmax(axis=1)),
    "bce": (lambda: _classifier(1, "sigmoid"), bp.BCELoss(), lambda rng, n: rng.integers(0, 2, n).astype(float),
            lambda out: (out[:, 0] > 0.5).astype(int)),
    "bce_with_logits": (lambda: _classifier(1), bp.BCEWithLogitsLoss(),
                        lambda rng, n: rng.integers(0, 2, n).astype(float), lambda out: (out[:, 0] > 0).astype(int)),
    "hinge": (lambda: _classifier(1), bp.HingeLoss(), lambda rng, n: rng.choice([-1.0, 1.0], n),
              lambda out: np.where(out[:, 0] > 0, 1.0, -1.0)),
    "multilabel": (lambda: _classifier(3), bp.BCEWithLogitsLoss(),
                   lambda rng, n: rng.integers(0, 2, (n, 3)).astype(float), lambda out: (out > 0).astype(int)),
}


def _true_labels(name, y):
    return y.argmax(axis=1) if name == "cross_entropy_one_hot" else y


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classification_metrics_are_scikit_learns_macro_scores(name):
    make, loss, targets, labels = CLASSIFIERS[name]
    net = make()
    X = _features()
    y = targets(np.random.default_rng(1), X.shape[0])
    results = bp.evaluate(net, X, y, loss, batch_size=40, metrics=["precision", "recall", "f1"])
    predicted, actual = labels(bp.predict(net, X)), _true_labels(name, y)
    for metric, score in SCORES.items():
        expected = score(actual, predicted, average="macro", zero_division=0)
        assert results[metric] == pytest.approx(expected, rel=1e-12, abs=1e-15), metric


def test_macro_scores_average_over_the_classes_in_the_targets_or_the_predictions():
    """Class 3 in neither (left out, as scikit-learn does); a class predicted but never true counts 0 recall."""
    net = _classifier(4, absent=3)
    X = _features()
    predicted = bp.predict(net, X).argmax(axis=1)
    y = np.where(predicted == 0, 1, predicted)  # class 0 predicted, never true
    results = bp.evaluate(net, X, y, bp.CrossEntropyLoss(), metrics=["precision", "recall", "f1"])
    for metric, score in SCORES.items():
        assert results[metric] == pytest.approx(score(y, predicted, average="macro", zero_division=0), rel=1e-12)
    assert results["precision"] < 1.0 and results["recall"] < 1.0


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_are_scikit_learns(outputs):
    rng = np.random.default_rng(2)
    X = _features()
    y = rng.normal(size=(X.shape[0], outputs)) * 3 + 1
    if outputs > 1:
        y[:, 1] = 2.5  # a constant output: r2 of 0 there, as scikit-learn's force_finite
    net = bp.Sequential(bp.Dense(5, 8, activation="relu"), bp.Dense(8, outputs), dtype="float64", seed=0)
    results = bp.evaluate(net, X, y, bp.MSELoss(), batch_size=32, metrics=["mae", "mse", "rmse", "r2"])
    pred = bp.predict(net, X)
    assert results["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert results["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-12)
    assert results["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-12)
    assert results["r2"] == pytest.approx(r2_score(y, pred), rel=1e-10)
    assert results["mse"] == pytest.approx(results["loss"], rel=1e-12)


def test_r2_of_a_perfect_constant_is_one_as_scikit_learns():
    net = bp.Sequential(bp.Dense(5, 1), dtype="float64", seed=0)
    net.layers[0].weight.data[...] = 0.0
    net.layers[0].bias.data[...] = 2.0
    X = _features(20)
    results = bp.evaluate(net, X, np.full(20, 2.0), bp.MAELoss(), metrics=["r2"])
    assert results["r2"] == r2_score(np.full(20, 2.0), np.full(20, 2.0)) == 1.0


def test_top_k_accuracy_is_scikit_learns():
    net = _classifier(5)
    X = _features()
    y = np.random.default_rng(4).integers(0, 5, X.shape[0])
    results = bp.evaluate(net, X, y, bp.CrossEntropyLoss(), batch_size=50,
                          metrics=[bp.TopKAccuracy(2), bp.TopKAccuracy(3)])
    scores = bp.predict(net, X)
    for k in (2, 3):
        expected = top_k_accuracy_score(y, scores, k=k, labels=range(5))
        assert results[f"top_{k}_accuracy"] == pytest.approx(expected, rel=1e-12)


def test_fit_records_each_metric_and_its_validation_value_equals_evaluate():
    X, y = _features(200), np.random.default_rng(5).integers(0, 3, 200)
    X_val, y_val = _features(80, seed=7), np.random.default_rng(6).integers(0, 3, 80)
    net = _classifier(3)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.SGD(net.parameters(), lr=0.1), epochs=3,
                     batch_size=32, validation_data=(X_val, y_val), progress=False, metrics=["f1", "recall"])
    assert list(history.history) == ["loss", "accuracy", "f1", "recall", "val_loss", "val_accuracy", "val_f1",
                                     "val_recall"]
    final = bp.evaluate(net, X_val, y_val, bp.CrossEntropyLoss(), metrics=["f1", "recall"])
    for key in ("f1", "recall", "loss"):
        assert history[f"val_{key}"][-1] == pytest.approx(final[key], rel=1e-12)


def test_fits_metrics_accumulate_over_the_epochs_batches():
    """At lr 0 the weights stay: the epoch's metrics over its batches are evaluate's over the data."""
    rng = np.random.default_rng(8)
    X = _features(130)
    y = rng.normal(size=(130, 2))
    net = bp.Sequential(bp.Dense(5, 8, activation="tanh"), bp.Dense(8, 2), dtype="float64", seed=1)
    history = bp.fit(net, X, y, loss=bp.MSELoss(), optimizer=bp.SGD(net.parameters(), lr=0.0), epochs=1,
                     batch_size=16, progress=False, metrics=["mae", "rmse", "r2"])
    pred = bp.predict(net, X)
    assert history["mae"][0] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert history["rmse"][0] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-12)
    assert history["r2"][0] == pytest.approx(r2_score(y, pred), rel=1e-10)


def test_unknown_or_inapplicable_metrics_are_refused_before_training():
    net = _classifier(3)
    before = bp.to_numpy(net.store.data).copy()
    X, y = _features(30), np.zeros(30, dtype=int)
    with pytest.raises(ValueError, match="unknown metric 'f2'; the metrics are accuracy, precision, recall, f1, "
                                         "mae, mse, rmse, r2"):
        bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), metrics=["f2"], progress=False)
    with pytest.raises(ValueError, match="metric 'mae' compares values with targets of the outputs' shape"):
        bp.evaluate(net, X, y, bp.CrossEntropyLoss(), metrics=["mae"])
    with pytest.raises(ValueError, match="metric 'f1' needs class predictions"):
        bp.evaluate(net, X, np.zeros((30, 3)), bp.MSELoss(), metrics=["f1"])
    with pytest.raises(ValueError, match="metric 'recall' is asked for twice"):
        bp.evaluate(net, X, y, bp.CrossEntropyLoss(), metrics=["recall", "recall"])
    with pytest.raises(TypeError, match="metrics must be a list"):
        bp.evaluate(net, X, y, bp.CrossEntropyLoss(), metrics="f1")
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        bp.TopKAccuracy(0)
    np.testing.assert_array_equal(bp.to_numpy(net.store.data), before)
