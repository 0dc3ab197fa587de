"""A failed fit leaves a scikit-learn estimator exactly as it was: its attributes, its network's
weights and buffers and its optimizer's state (a refit that runs out of memory, a warm or
partial fit that diverges); a refused coefs_ assignment writes no layer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

import backprop as bp
from backprop.sklearn import MLPClassifier, MLPRegressor

X, y = make_classification(n_samples=80, n_features=6, n_informative=4, n_classes=3, random_state=0)


def fitted(**params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, **params).fit(X, y)


def everything(est) -> list:
    net = est.network_
    return [sorted(k for k in vars(est)), est.classes_.tolist(), est.n_iter_, list(est.loss_curve_),
            net.store.data.tobytes(), [b.tobytes() for b in net.buffers()], est.predict(X).tolist(),
            est._optimizer.step_count, {k: v.tobytes() for k, v in est._optimizer.state_arrays().items()}]


def test_a_refit_that_runs_out_of_memory_keeps_the_old_classes_and_network(monkeypatch):
    est = fitted()
    before = everything(est)

    def no_memory(*args, **kwargs):
        raise MemoryError("no memory for the new network")

    monkeypatch.setattr(MLPClassifier, "_network", no_memory)
    labels = np.arange(80) % 5  # other classes, and more of them
    with pytest.raises(MemoryError):
        est.fit(X, labels)
    assert everything(est) == before


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_a_continued_fit_that_diverges_leaves_weights_optimizer_and_attributes(how):
    est = fitted(warm_start=(how == "warm_start"), solver="sgd", momentum=0.9, learning_rate_init=0.01, batch_size=8)
    before = everything(est)
    est.set_params(learning_rate_init=1e300)
    if how == "partial_fit":
        est._optimizer.lr = 1e300  # partial_fit continues the optimizer it has
    train = est.partial_fit if how == "partial_fit" else est.fit
    with pytest.raises(bp.TrainingDivergedError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(X * 1e6, y)
    assert everything(est) == before


def test_a_refused_coefs_assignment_writes_no_layer():
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, X[:, 0])
    good = [np.ones_like(c) for c in est.coefs_]
    bad = [good[0], np.full_like(est.coefs_[1], np.nan)]
    before = [c.copy() for c in est.coefs_]
    with pytest.raises(ValueError):
        est.coefs_ = bad
    for old, now in zip(before, est.coefs_):
        assert np.array_equal(old, now)
