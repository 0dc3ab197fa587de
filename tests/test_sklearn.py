"""backprop.sklearn: scikit-learn's own estimator checks, scikit-learn's meanings (step by step
against scikit-learn's MLPs from the same weights), pickling and copies, and the same training as
bp.fit (the README's example runs in tests/test_readme.py)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency, parametrize_with_checks

import backprop as bp
from backprop.backends import get_backend
from backprop.backends.base import Backend
from backprop.sklearn import MLPClassifier, MLPRegressor
from backprop.sklearn.losses import HalfSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy


# scikit-learn's own test suite runs its MLPs' checks with max_iter=100.
CHECKED = [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)]

# In float32 these checks compare two fits, or predictions of the same rows in batches of other
# sizes, with assert_allclose(rtol=1e-7), finer than float32 resolves (eps = 1.2e-7): the
# results agree to float32 rounding, not to 1e-7 (all three fail on our machines; whether subset
# invariance does depends on the BLAS). Every other check must pass in float32 too.
FLOAT32_ROUNDING = {
    "check_sample_weight_equivalence_on_dense_data":
        "float32 rounding: weighting a row by 2 and repeating it sum in another order (rtol 1e-7 < float32 eps)",
    "check_sample_weight_equivalence_on_sparse_data":
        "float32 rounding: weighting a row by 2 and repeating it sum in another order (rtol 1e-7 < float32 eps)",
    "check_methods_subset_invariance":
        "float32 rounding: a row's outputs differ in their last bits with the batch's size (BLAS kernels)",
}

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check passes in float64, the default: nothing is skipped."""
    check(estimator)


@parametrize_with_checks([clone(e).set_params(dtype="float32") for e in CHECKED],
                         expected_failed_checks=lambda estimator: FLOAT32_ROUNDING)
def test_scikit_learn_estimator_checks_float32(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=lambda e: type(e).__name__)
def test_dataframe_column_names_are_kept_and_checked(estimator):
    """scikit-learn runs this pandas check apart from the others: feature_names_in_ from a
    DataFrame, a warning or an error when later calls disagree with it."""
    check_dataframe_column_names_consistency(type(estimator).__name__, clone(estimator))


# ---------------------------------------------------------------------- the losses


def _targets(kind, rng, rows, outputs):
    if kind == "classes":
        return np.eye(outputs)[rng.integers(0, outputs, rows)]
    if kind == "labels":
        return rng.integers(0, 2, (rows, outputs)).astype(float)
    return rng.normal(size=(rows, outputs))


@pytest.mark.parametrize("loss, kind, outputs, scale", [
    (SoftmaxCrossEntropy, "classes", 4, 1), (SigmoidCrossEntropy, "labels", 3, 1),
    (HalfSquaredError, "values", 1, 1), (HalfSquaredError, "values", 3, 3),
], ids=["softmax", "sigmoid", "squared", "squared-3-outputs"])
def test_the_losses_are_array_api_code_whose_gradient_is_their_derivative(loss, kind, outputs, scale):
    """On array-api-strict as on NumPy; dL/dz by central differences of L (for the squared error
    of k outputs, scikit-learn's gradient is k times it)."""
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, outputs)) * 3
    target = _targets(kind, rng, 5, outputs)
    on_numpy = get_backend("cpu", "float64")
    value, grad = loss().value_and_grad(on_numpy, z, target)
    strict_value, strict_grad = loss().value_and_grad(Backend(xp, "float64"), xp.asarray(z), xp.asarray(target))
    np.testing.assert_allclose(float(strict_value), float(value), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(strict_grad), grad, rtol=1e-13, atol=1e-16)
    step, numeric = 1e-6, np.zeros_like(z)
    for index in np.ndindex(z.shape):
        shifted = [z.copy(), z.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        up, down = (float(loss().value_and_grad(on_numpy, s, target)[0]) for s in shifted)
        numeric[index] = (up - down) / (2 * step)
    np.testing.assert_allclose(grad, scale * numeric, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------- scikit-learn's meanings


def _from_the_same_weights(ours, theirs, X, y):
    """Both estimators fitted once (warm_start, one epoch) so that they exist, then given our
    weights and a fresh best loss: their next fit starts from the same place."""
    for estimator in (ours, theirs):
        estimator.set_params(warm_start=True, max_iter=1, shuffle=False).fit(X, y)
    theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
    ours.best_loss_ = theirs.best_loss_ = np.inf


def _assert_same_training(ours, theirs, X, y, sample_weight, epochs, rtol):
    for estimator in (ours, theirs):
        estimator.set_params(max_iter=epochs).fit(X, y, sample_weight=sample_weight)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=rtol)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)  # weights are O(0.1-1): atol is rtol there


def _classification(n_classes, seed=0):
    X, y = make_classification(n_samples=90, n_features=6, n_informative=4, n_classes=n_classes,
                               random_state=seed)
    return X, y


# Plain SGD and SGD with momentum at a constant learning rate take scikit-learn's steps exactly
# (torch's momentum buffer is scikit-learn's velocity divided by -lr); Adam adds epsilon after
# its bias correction where scikit-learn adds it before, a relative 1e-6 on a step here.
SAME_STEPS = [
    pytest.param(dict(solver="sgd", momentum=0.0, learning_rate="invscaling", learning_rate_init=0.2), 1e-9,
                 id="sgd-invscaling"),
    pytest.param(dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.05), 1e-9,
                 id="sgd-nesterov"),
    pytest.param(dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, learning_rate_init=0.05), 1e-9,
                 id="sgd-momentum"),
    pytest.param(dict(solver="adam", learning_rate_init=0.01, epsilon=1e-11), 1e-6, id="adam"),
]


@pytest.mark.parametrize("settings, rtol", SAME_STEPS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_classifier_trains_as_scikit_learn_does(settings, rtol, n_classes):
    """alpha (0.5 alpha ||W||^2 over each batch's total weight), sample weights, batches, the
    log-loss of a sigmoid (two classes) or a softmax, loss_ and loss_curve_ (penalty included),
    the solvers and their learning rates: the same numbers as scikit-learn's MLPClassifier."""
    X, y = _classification(n_classes)
    params = dict(hidden_layer_sizes=(7, 5), activation="tanh", alpha=0.3, batch_size=16, **settings)
    ours, theirs = MLPClassifier(**params), SkMLPClassifier(**params)
    _from_the_same_weights(ours, theirs, X, y)
    weights = np.random.default_rng(1).uniform(0.1, 3.0, len(y))
    _assert_same_training(ours, theirs, X, y, weights, epochs=4, rtol=rtol)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=rtol * 10)


@pytest.mark.parametrize("settings, rtol", SAME_STEPS[:2])
def test_a_multilabel_classifier_trains_as_scikit_learn_does(settings, rtol):
    X, Y = make_multilabel_classification(n_samples=80, n_features=5, n_classes=3, random_state=0)
    params = dict(hidden_layer_sizes=(6,), activation="logistic", alpha=0.1, batch_size=20, **settings)
    ours, theirs = MLPClassifier(**params), SkMLPClassifier(**params)
    _from_the_same_weights(ours, theirs, X, Y)
    _assert_same_training(ours, theirs, X, Y, None, epochs=3, rtol=rtol)
    assert np.array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_the_regressor_trains_as_scikit_learn_does(n_outputs):
    """loss_ is half the squared error averaged over rows and outputs, plus the penalty; the
    gradient is scikit-learn's (half the squared error summed over the outputs)."""
    X, y = make_regression(n_samples=70, n_features=5, n_targets=n_outputs, noise=1.0, random_state=0)
    y = y / np.std(y)
    params = dict(hidden_layer_sizes=(8,), activation="relu", alpha=0.2, batch_size=25, solver="sgd",
                  momentum=0.9, learning_rate_init=0.01)
    ours, theirs = MLPRegressor(**params), SkMLPRegressor(**params)
    _from_the_same_weights(ours, theirs, X, y)
    weights = np.random.default_rng(2).uniform(0.1, 3.0, len(y))
    _assert_same_training(ours, theirs, X, y, weights, epochs=4, rtol=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8)


def test_adaptive_learning_rate_and_stopping_follow_scikit_learn():
    """learning_rate="adaptive": more than n_iter_no_change epochs without a loss tol below the
    best divide the rate by 5, until it is at most 1e-6; then training stops. Same epochs, same
    weights as scikit-learn."""
    X, y = _classification(3)
    params = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, learning_rate="adaptive",
                  learning_rate_init=1e-5, tol=10.0, n_iter_no_change=1, batch_size=30)
    ours, theirs = MLPClassifier(**params), SkMLPClassifier(**params)
    _from_the_same_weights(ours, theirs, X, y)
    _assert_same_training(ours, theirs, X, y, None, epochs=50, rtol=1e-9)
    # epoch 1 improves on best_loss_ = inf; then every second epoch ends a run of 2 > 1 epochs
    # without improvement: lr 1e-5 -> 2e-6 (epoch 3) -> 4e-7 (epoch 5), and at epoch 7 it stops
    assert ours.n_iter_ == 7


@pytest.mark.parametrize("estimator, data", [(MLPClassifier, _classification(3)),
                                             (MLPRegressor, make_regression(n_samples=60, n_features=4,
                                                                            random_state=0))],
                         ids=["classifier", "regressor"])
def test_tol_and_n_iter_no_change_stop_on_the_training_loss(estimator, data):
    """A tol larger than any improvement: every epoch after the first (which improves on
    best_loss_ = inf) counts as one without improvement, and fit stops after
    n_iter_no_change + 1 of them, as scikit-learn's does."""
    X, y = data
    params = dict(hidden_layer_sizes=(5,), tol=1e6, n_iter_no_change=3, random_state=0)
    ours = estimator(**params).fit(X, y)
    assert ours.n_iter_ == len(ours.loss_curve_) == 5
    theirs = {MLPClassifier: SkMLPClassifier, MLPRegressor: SkMLPRegressor}[estimator](**params).fit(X, y)
    assert theirs.n_iter_ == 5
    assert ours.best_loss_ == min(ours.loss_curve_)
    assert ours.validation_scores_ is None


def test_early_stopping_keeps_the_weights_of_the_best_validation_score():
    """early_stopping=True: the validation score (accuracy) decides, and the weights of its best
    epoch are put back; a fit stopped right at that epoch has exactly those weights."""
    X, y = load_digits(return_X_y=True)
    X = X[:600] / 16.0
    params = dict(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                  tol=0.0, learning_rate_init=0.05, max_iter=60, random_state=0)
    full = MLPClassifier(**params).fit(X, y[:600])
    scores = full.validation_scores_
    best = int(np.argmax(scores))
    assert full.best_validation_score_ == scores[best]
    assert full.best_loss_ is None
    assert len(scores) == full.n_iter_ < 60 and full.n_iter_ - 1 - best > 3 - 1  # stopped by the rule
    assert best + 1 < full.n_iter_  # the last epoch was not the best: something was put back
    stopped_there = MLPClassifier(**{**params, "max_iter": best + 1}).fit(X, y[:600])
    for a, b in zip(full.coefs_ + full.intercepts_, stopped_there.coefs_ + stopped_there.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_partial_fit_continues_one_epoch_at_a_time():
    X, y = _classification(3)
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:40], y[:40], classes=[0, 1, 2])
    clf.partial_fit(X[40:], y[40:])
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 2
    assert clf.network_.epochs_trained == 2
    with pytest.raises(ValueError, match="early_stopping"):
        clone(clf).set_params(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_targets_strings_multilabel_and_multi_output():
    """Labels of any kind train as their positions in classes_ do; multi-label targets and
    multi-output regression get one network output per column."""
    X, y = _classification(3)
    names = np.array(["cat", "dog", "emu"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"] and clf.out_activation_ == "softmax"
    by_number = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y + 10)
    np.testing.assert_array_equal(clf.predict(X), np.array(["cat", "dog", "emu"])[by_number.predict(X) - 10])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-10)

    binary = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X, y == 1)
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    assert binary.coefs_[-1].shape == (8, 1) and binary.predict_proba(X).shape == (len(y), 2)

    X_ml, Y_ml = make_multilabel_classification(n_samples=60, n_features=5, n_classes=4, random_state=0)
    multilabel = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X_ml, Y_ml)
    assert multilabel.predict(X_ml).shape == Y_ml.shape and multilabel.predict_proba(X_ml).shape == Y_ml.shape

    X_r, Y_r = make_regression(n_samples=60, n_features=4, n_targets=3, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X_r, Y_r)
    assert reg.predict(X_r).shape == (60, 3) and reg.n_outputs_ == 3
    assert [c.shape for c in reg.coefs_] == [(4, 8), (8, 3)] and [b.shape for b in reg.intercepts_] == [(8,), (3,)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_answers_follow_the_dtype_of_x_as_scikit_learns_do(dtype):
    X, y = make_regression(n_samples=30, n_features=3, n_targets=2, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype=dtype, random_state=0).fit(X, y)
    assert reg.predict(X).dtype == np.float64 and reg.predict(X.astype(np.float32)).dtype == np.float32
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dtype=dtype, random_state=0).fit(X, y[:, 0] > 0)
    assert clf.predict_proba(X).dtype == np.float64 and clf.predict_proba(X.astype(np.float32)).dtype == np.float32


def test_dropout_and_batch_norm_join_the_network():
    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), dropout=0.1, batch_norm=True, learning_rate_init=0.01,
                        max_iter=20, random_state=0, early_stopping=True).fit(X[:500] / 16.0, y[:500])
    kinds = [type(layer).__name__ for layer in clf.network_.layers]
    assert kinds == ["Dense", "BatchNorm", "Dropout", "Dense", "BatchNorm", "Dropout", "Dense"]
    assert clf.n_layers_ == 4 and len(clf.coefs_) == 3
    assert np.array_equal(clf.predict(X[500:600] / 16.0), clf.predict(X[500:600] / 16.0))  # eval mode
    assert clf.score(X[500:800] / 16.0, y[500:800]) > 0.75


@pytest.mark.parametrize("params, match", [
    (dict(solver="lbfgs"), "solver='lbfgs' is not supported"),
    (dict(solver="newton"), "solver must be one of"),
    (dict(activation="gelu"), "activation must be one of"),
    (dict(alpha=-1.0), "alpha must be"),
    (dict(hidden_layer_sizes=(4, 0)), r"hidden_layer_sizes\[1\] must be a positive integer"),
    (dict(batch_size=0), "batch_size must be 'auto' or a positive integer"),
    (dict(momentum=1.5), "momentum must be in"),
    (dict(dtype="float16"), "dtype must be one of"),
    (dict(early_stopping=True, validation_fraction=0.0), "validation_fraction > 0"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_parameters_are_refused_by_fit_before_anything_changes(params, match):
    X, y = _classification(2)
    clf = MLPClassifier(**params)
    with pytest.raises((ValueError, TypeError), match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "network_") and not hasattr(clf, "n_features_in_")


@pytest.mark.parametrize("change", [dict(hidden_layer_sizes=(6,)), dict(activation="tanh"), dict(dtype="float32")])
def test_a_warm_start_refuses_parameters_that_reshape_the_network(change):
    X, y = _classification(2)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, warm_start=True, random_state=0).fit(X, y)
    before = clf.coefs_
    name = next(iter(change))
    with pytest.raises(ValueError, match=f"{name} is now .* and the network was built with"):
        clf.set_params(**change).fit(X, y)
    for a, b in zip(clf.coefs_, before):
        np.testing.assert_array_equal(a, b)
    clf.set_params(warm_start=False).fit(X, y)  # what the message advises: a new network


@pytest.mark.parametrize("refit", [
    dict(sample_weight=np.ones(5)),  # found after X and y were checked
    dict(y_classes=4, batch_norm=True, batch_size=89),  # found by bp.fit: 90 rows leave a last batch of 1 for BatchNorm
], ids=["sample_weight", "bp.fit"])
def test_a_refused_fit_leaves_a_fitted_estimator_as_it_was(refit):
    X, y = _classification(3)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    before = (clf.network_, clf.coefs_, list(clf.classes_), clf.n_features_in_, list(clf.loss_curve_))
    X_new, y_new = _classification(refit.pop("y_classes", 3), seed=1)
    X_new = np.hstack([X_new, X_new[:, :1]])  # another feature count, too
    with pytest.raises(ValueError):
        clf.set_params(**{k: v for k, v in refit.items() if k != "sample_weight"})
        clf.fit(X_new, y_new, sample_weight=refit.get("sample_weight"))
    assert clf.network_ is before[0] and clf.n_features_in_ == before[3] == 6
    assert list(clf.classes_) == before[2] and clf.loss_curve_ == before[4]
    for a, b in zip(clf.coefs_, before[1]):
        np.testing.assert_array_equal(a, b)
    assert clf.predict(X).shape == (90,)


def test_the_regressor_refuses_the_poisson_loss():
    X, y = make_regression(n_samples=20, n_features=3, random_state=0)
    with pytest.raises(ValueError, match="loss must be 'squared_error'"):
        MLPRegressor(loss="poisson").fit(X, np.abs(y))


# ---------------------------------------------------------------------- copies, pickles, equivalence


def test_coefs_and_intercepts_are_scikit_learns_layout_both_ways():
    """Given scikit-learn's fitted weights, the classifier answers as scikit-learn's does."""
    X, y = _classification(3)
    theirs = SkMLPClassifier(hidden_layer_sizes=(7, 5), max_iter=30, random_state=0).fit(X, y)
    ours = MLPClassifier(hidden_layer_sizes=(7, 5), max_iter=1, random_state=1).fit(X, y)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_array_equal(a, b)
    before = ours.coefs_
    with pytest.raises(ValueError, match=r"coefs_\[2\] must have shape \(5, 3\), got \(5, 2\)"):
        ours.coefs_ = before[:2] + [np.zeros((5, 2))]
    for a, b in zip(ours.coefs_, before):  # nothing was written
        np.testing.assert_array_equal(a, b)


def test_clone_get_params_and_set_params():
    clf = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.1, device="cpu", dtype="float32", dropout=0.2)
    assert clf.get_params()["dtype"] == "float32" and clf.get_params()["dropout"] == 0.2
    copy_ = clone(clf)
    assert copy_.get_params() == clf.get_params() and copy_ is not clf
    clf.set_params(hidden_layer_sizes=(3, 4), dtype="float64")
    X, y = _classification(2)
    clf.fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(6, 3), (3, 4), (4, 1)]
    assert not hasattr(clone(clf), "network_")


@pytest.mark.parametrize("duplicate", [lambda e: pickle.loads(pickle.dumps(e)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
def test_a_fitted_estimator_pickles_and_copies_with_its_optimizer(duplicate):
    """A copy predicts the same and, its Adam state copied too, trains on exactly as the original."""
    X, y = _classification(3)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(X, y)
    twin = duplicate(clf)
    assert twin.network_ is not clf.network_
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    assert not np.array_equal(twin.predict_proba(X), clf.predict_proba(X))  # the copy is separate
    twin.partial_fit(X, y)
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))


def test_a_network_pickled_on_a_gpu_unpickles_on_the_cpu_with_one_warning():
    """Pickled where its network was on a GPU, an estimator loads where none is usable: on the
    CPU, with one warning, as bp.load does."""
    if any(device.startswith("cuda") for device in bp.available_devices()):
        pytest.skip("a GPU is usable here")
    X, y = _classification(2)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    backend = copy.copy(clf.network_.backend)  # the same arrays, said to be on a GPU
    backend.device = "cuda:0"
    clf.network_.backend = backend
    data = pickle.dumps(clf)
    with pytest.warns(RuntimeWarning, match="cuda:0, which is not usable here") as caught:
        loaded = pickle.loads(data)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert loaded.network_.device == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_grid_search_sends_estimators_to_worker_processes():
    X, y = _classification(2)
    search = GridSearchCV(MLPClassifier(max_iter=20, random_state=0), {"hidden_layer_sizes": [(4,), (8,)]},
                          cv=2, n_jobs=2).fit(X, y)
    assert search.best_params_["hidden_layer_sizes"] in [(4,), (8,)]
    assert search.best_estimator_.network_.layers[0].out_features == search.best_params_["hidden_layer_sizes"][0]


def test_the_classifier_trains_as_bp_fit_does_on_the_same_network():
    """Same data, seed and settings (alpha=0, Adam): the estimator's network is bp.fit's."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with pytest.warns(ConvergenceWarning):
        clf = MLPClassifier(hidden_layer_sizes=(32,), alpha=0.0, batch_size=64, learning_rate_init=0.01,
                            max_iter=4, random_state=0).fit(X, y)
    net = bp.Sequential(bp.Dense(64, 32, activation="relu"), bp.Dense(32, 10), dtype="float64",
                        seed=clf.network_.seed)
    bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01), epochs=4,
           batch_size=64, progress=False)
    np.testing.assert_array_equal(clf.predict(X), bp.predict(net, X).argmax(axis=1))
    np.testing.assert_allclose(clf.predict_proba(X), bp.predict(net, X, activation="softmax"), rtol=1e-9, atol=1e-12)
    assert clf.score(X, y) > 0.9
