"""What MLPClassifier and MLPRegressor share: the parameters, the network, and training by `bp.fit`
under scikit-learn's rules.

One call of `fit` is one `bp.fit` of up to `max_iter` epochs (`partial_fit`: one epoch) with
the losses of backprop/sklearn/losses.py, and a callback that applies scikit-learn's rules at
the end of each epoch, as `sklearn.neural_network.MLPClassifier` does:

- `loss_curve_` gets the epoch's mean batch loss, penalty included (weighted by batch rows);
- without `early_stopping`: an epoch whose loss is not below `best_loss_ - tol` counts as one
  without improvement; with it: an epoch whose validation score (accuracy, or R^2) is not above
  the best score + `tol` does, and the weights of the best score are put back at the end;
- more than `n_iter_no_change` such epochs in a row stop training, except with
  `solver="sgd", learning_rate="adaptive"`, where they divide the learning rate by 5 instead
  (until it is 1e-6 or less);
- `learning_rate="invscaling"` (sgd) sets lr = learning_rate_init / (t + 1) ** power_t after
  each epoch, t being the number of samples seen;
- reaching `max_iter` without stopping gives a ConvergenceWarning.

The optimizers are backprop's, with torch.optim's definitions: SGD's momentum buffer holds
gradients, not steps, so it matches scikit-learn's velocity exactly while the learning rate is
constant; Adam adds `epsilon` after its bias correction, scikit-learn before it.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from backprop.boundary import checked_sample_weight, to_numpy
from backprop.callbacks import Callback
from backprop.checks import check_bool, check_int, check_real
from backprop.layers import BatchNorm, Dense, Dropout
from backprop.network import Sequential
from backprop.optim import SGD, Adam
from backprop.training import fit, predict

# scikit-learn's activation names -> backprop's.
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
DTYPES = ("float64", "float32")
# scikit-learn's batch_size="auto": min(200, n_samples).
AUTO_BATCH = 200
# Below this learning rate, learning_rate="adaptive" stops instead of dividing it again.
ADAPTIVE_LR_FLOOR = 1e-6


class _EpochEnd(Callback):
    """Hands each epoch's loss to the estimator's rules, and ends fit when they say so."""

    def __init__(self, estimator, samples: int, validation, incremental: bool):
        self.estimator, self.samples = estimator, samples
        self.validation, self.incremental = validation, incremental

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self.estimator._end_epoch(metrics["loss"], self.samples, self.validation, self.incremental):
            self.stop_training = True


def _weights_and_buffers(net) -> tuple:
    """Host copies of the network's weights and layer buffers (what early stopping puts back)."""
    with net.backend.on_device():
        return to_numpy(net.store.data), [to_numpy(buffer) for buffer in net.buffers()]


def _put_weights_and_buffers(net, saved: tuple) -> None:
    data, buffers = saved
    backend = net.backend
    with backend.on_device():
        net.store.data[...] = backend.asarray(data)
        for buffer, values in zip(net.buffers(), buffers):
            buffer[...] = backend.asarray(values)


class _Snapshot:
    """An estimator as it is before a fit: its attributes (lists copied: fit appends to them),
    and the training state of its network and optimizer, which a warm or partial fit changes in
    place."""

    def __init__(self, estimator):
        self.attributes = {k: list(v) if isinstance(v, list) else v for k, v in estimator.__dict__.items()}
        net, optimizer = estimator.__dict__.get("network_"), estimator.__dict__.get("_optimizer")
        self.network = None if net is None else (
            _weights_and_buffers(net), net.counter_values(), net.epochs_trained, net.training)
        self.optimizer = None if optimizer is None else (
            optimizer.step_count, optimizer.state_arrays(), optimizer.lr)

    def restore(self, estimator) -> None:
        estimator.__dict__.clear()
        estimator.__dict__.update(self.attributes)
        net, optimizer = estimator.__dict__.get("network_"), estimator.__dict__.get("_optimizer")
        if self.network is not None:
            saved, counters, net.epochs_trained, net.training = self.network
            _put_weights_and_buffers(net, saved)
            net.set_counters(counters)
        if self.optimizer is not None:
            step_count, arrays, optimizer.lr = self.optimizer
            optimizer.load_state(step_count, arrays)


def _dense(X):
    """X as a dense array (the network multiplies dense matrices)."""
    return X.toarray() if scipy.sparse.issparse(X) else X


class MLPBase(BaseEstimator):
    """The shared part of MLPClassifier and MLPRegressor (see the module docstring).

    A subclass defines `_validate_input(X, y, incremental, reset) -> (X, Y)` (Y 2-D, one
    column per network output), `_loss()`, `_score_outputs(outputs, Y, w)`
    (the validation score of the network's outputs) and `out_activation_`.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, device="cpu", dtype="float64", dropout=0.0, batch_norm=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.dtype = dtype
        self.dropout = dropout
        self.batch_norm = batch_norm

    # ------------------------------------------------------------------ parameters

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (numbers.Integral, np.integer)) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"hidden_layer_sizes must be a positive integer or a sequence of them, got "
                            f"{type(sizes).__name__} {sizes!r}") from None
        return [check_int(f"hidden_layer_sizes[{i}]", size, wanted="a positive integer")
                for i, size in enumerate(sizes)]

    def _check_params(self) -> None:
        """Every parameter, checked before fit changes anything (scikit-learn's ranges)."""
        self._hidden_sizes()
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported: backprop trains by mini-batch backpropagation; "
                             "use solver='adam' or 'sgd' (or scikit-learn's own MLP for L-BFGS)")
        for name, value, options in (("activation", self.activation, tuple(ACTIVATIONS)),
                                     ("solver", self.solver, SOLVERS),
                                     ("learning_rate", self.learning_rate, LEARNING_RATES),
                                     ("dtype", self.dtype, DTYPES)):
            if not isinstance(value, str) or value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")
        if self.batch_size != "auto":
            check_int("batch_size", self.batch_size, wanted="'auto' or a positive integer")
        check_int("max_iter", self.max_iter, wanted="a positive integer")
        if not (isinstance(self.n_iter_no_change, float) and self.n_iter_no_change == math.inf):
            check_int("n_iter_no_change", self.n_iter_no_change, wanted="a positive integer or numpy.inf")
        check_real("alpha", self.alpha)
        check_real("power_t", self.power_t)
        check_real("tol", self.tol)
        for name in ("learning_rate_init", "epsilon"):
            check_real(name, getattr(self, name), low_open=True)
        check_real("momentum", self.momentum, 0.0, 1.0, high_open=True)
        for name in ("validation_fraction", "beta_1", "beta_2", "dropout"):
            check_real(name, getattr(self, name), 0.0, 1.0, high_open=True)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping", "batch_norm"):
            check_bool(name, getattr(self, name))
        if self.early_stopping and self.validation_fraction == 0.0:
            raise ValueError("early_stopping=True needs validation_fraction > 0, got 0.0")
        if not isinstance(self.verbose, (bool, numbers.Integral)):
            raise TypeError(f"verbose must be a boolean or an integer, got {type(self.verbose).__name__} "
                            f"{self.verbose!r}")

    # ------------------------------------------------------------------ the network

    def _network(self, n_features: int, n_outputs: int, seed: int) -> Sequential:
        """Dense layers of `hidden_layer_sizes` with the activation (each followed by BatchNorm
        with `batch_norm`, and Dropout with `dropout` > 0), then a linear Dense layer of the
        outputs (logits for a classifier; the loss applies softmax or sigmoid)."""
        layers, width = [], n_features
        for size in self._hidden_sizes():
            layers.append(Dense(width, size, activation=ACTIVATIONS[self.activation]))
            if self.batch_norm:
                layers.append(BatchNorm(size))
            if self.dropout:
                layers.append(Dropout(self.dropout))
            width = size
        layers.append(Dense(width, n_outputs))
        return Sequential(*layers, device=self.device, dtype=self.dtype, seed=seed)

    def _dense_layers(self) -> list[Dense]:
        return [layer for layer in self.network_.layers if isinstance(layer, Dense)]

    def _dense_parameters(self, attribute: str) -> list:
        """The Dense layers' parameters behind `coefs_` (weights) or `intercepts_` (biases)."""
        check_is_fitted(self)
        name = {"coefs_": "weight", "intercepts_": "bias"}[attribute]
        return [getattr(layer, name) for layer in self._dense_layers()]

    def _get_values(self, attribute: str) -> list[np.ndarray]:
        params = self._dense_parameters(attribute)
        with self.network_.backend.on_device():
            return [to_numpy(param.data) for param in params]

    def _set_values(self, attribute: str, values) -> None:
        """Write one array per Dense layer into the network, every shape checked before any is written."""
        params = self._dense_parameters(attribute)
        values = list(values)
        if len(values) != len(params):
            raise ValueError(f"{attribute} must be a list of {len(params)} arrays, one per Dense layer, "
                             f"got {len(values)}")
        for i, (param, value) in enumerate(zip(params, values)):
            if np.shape(value) != param.shape:
                raise ValueError(f"{attribute}[{i}] must have shape {param.shape}, got {np.shape(value)}")
        with self.network_.backend.on_device():
            old = [to_numpy(param.data) for param in params]
            try:
                for param, value in zip(params, values):
                    param.data = value
            except BaseException:  # a refused array (NaN, say) leaves the layers before it as they were
                for param, value in zip(params, old):
                    param.data = value
                raise

    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight matrix of each Dense layer, (inputs, outputs) as scikit-learn's (host
        copies; assigning a list of them writes them into the network)."""
        return self._get_values("coefs_")

    @coefs_.setter
    def coefs_(self, values) -> None:
        self._set_values("coefs_", values)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias vector of each Dense layer (host copies; assignable, as coefs_)."""
        return self._get_values("intercepts_")

    @intercepts_.setter
    def intercepts_(self, values) -> None:
        self._set_values("intercepts_", values)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "network_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # accepted, and made dense
        return tags

    # ------------------------------------------------------------------ training

    def _architecture(self) -> dict:
        """The parameters that shape the network (a warm start must keep them)."""
        return {"hidden_layer_sizes": tuple(self._hidden_sizes()), "activation": self.activation,
                "dtype": self.dtype, "dropout": float(self.dropout), "batch_norm": bool(self.batch_norm)}

    def _check_same_architecture(self) -> None:
        for name, value in self._architecture().items():
            fitted = self._fitted_architecture[name]
            if value != fitted:
                raise ValueError(f"warm_start and partial_fit go on training the fitted network, but {name} is now "
                                 f"{value!r} and the network was built with {fitted!r}; set it back, or fit "
                                 "without warm_start")

    def _initialize(self, n_features: int, n_outputs: int, rng: np.random.RandomState) -> None:
        """A new network and a fresh record of training (the first fit, or a fit without warm_start)."""
        self.network_ = self._network(n_features, n_outputs, seed=int(rng.randint(np.iinfo(np.int32).max)))
        self._fitted_architecture = self._architecture()
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden_sizes()) + 2
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
            self._best_weights = _weights_and_buffers(self.network_)
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _new_optimizer(self):
        params = self.network_.parameters()
        if self.solver == "sgd":
            return SGD(params, lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return Adam(params, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _split(self, X, Y, weights, rng):
        """(train, validation): validation_fraction of the rows held out with early_stopping
        (stratified for a single-output classifier, as scikit-learn does), else None."""
        if not self.early_stopping:
            return (X, Y, weights), None
        stratify = Y if is_classifier(self) and Y.shape[1] == 1 else None
        X_train, X_val, Y_train, Y_val, w_train, w_val = train_test_split(
            X, Y, weights, random_state=rng, test_size=self.validation_fraction, stratify=stratify)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        return (X_train, Y_train, w_train), (X_val, Y_val, w_val)

    def _fit(self, X, y, sample_weight, incremental: bool):
        """fit and partial_fit. Whatever fails (bad parameters or data, a diverged fit, no memory
        for a new network) leaves the estimator exactly as it was: its attributes, and the weights,
        buffers and optimizer state of a network that training continues (warm_start,
        partial_fit), are put back before the error goes on."""
        before = _Snapshot(self)
        try:
            self._train(*self._prepare(X, y, sample_weight, incremental), incremental)
        except BaseException:
            before.restore(self)
            raise
        return self

    def _prepare(self, X, y, sample_weight, incremental: bool):
        """Everything checked, the network and optimizer ready: (training rows, validation, batch size)."""
        self._check_params()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first_pass = not hasattr(self, "network_") or (not self.warm_start and not incremental)
        if not first_pass:
            self._check_same_architecture()
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        X = _dense(X)
        weights = checked_sample_weight(sample_weight, X.shape[0])
        rng = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], Y.shape[1], rng)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs but the network was fitted with {self.n_outputs_}")
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._new_optimizer()
        train, validation = self._split(X, Y, weights, rng)
        n = train[0].shape[0]
        if self.batch_size == "auto":
            return train, validation, min(AUTO_BATCH, n)
        if self.batch_size > n:
            # stacklevel 1: the line scikit-learn's own MLP attributes this warning to, its own
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          stacklevel=1)
        return train, validation, min(self.batch_size, n)

    def _train(self, train, validation, batch_size: int, incremental: bool) -> None:
        """One bp.fit under scikit-learn's rules (the module docstring)."""
        X_train, Y_train, w_train = train
        penalized = self._dense_layers()
        for layer in penalized:  # the penalty (alpha / 2) ||W||^2, which fit divides by each batch's weight
            layer.l2 = 0.5 * self.alpha
        self.n_iter_ = 0
        try:
            fit(self.network_, X_train, Y_train, loss=self._loss(), optimizer=self._optimizer,
                epochs=1 if incremental else self.max_iter, batch_size=batch_size, shuffle=self.shuffle,
                progress=False, sample_weight=w_train, penalty_scale="weight",
                callbacks=[_EpochEnd(self, X_train.shape[0], validation, incremental)])
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=1)  # where scikit-learn's is
        finally:
            for layer in penalized:
                layer.l2 = 0.0
        if self.early_stopping:
            _put_weights_and_buffers(self.network_, self._best_weights)

    def _end_epoch(self, loss: float, samples: int, validation, incremental: bool) -> bool:
        """scikit-learn's end of an epoch (see the module docstring); True to stop training."""
        self.n_iter_ += 1
        self.t_ += samples
        self.loss_ = loss
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        self._count_no_improvement(validation)
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._optimizer.lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            message = (f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                       "consecutive epochs.")
            if not adaptive or self._optimizer.lr <= ADAPTIVE_LR_FLOOR:
                if self.verbose:
                    print(message + (" Learning rate too small." if adaptive else "") + " Stopping.")
                return True
            self._optimizer.lr /= 5.0
            self._no_improvement_count = 0
            if self.verbose:
                print(message + f" Setting learning rate to {self._optimizer.lr:f}")
        if not incremental and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning, stacklevel=1)  # where scikit-learn's is
        return False

    def _count_no_improvement(self, validation) -> None:
        if self.early_stopping:
            X_val, Y_val, w_val = validation
            outputs = self._outputs(X_val)
            score = self._score_outputs(outputs, Y_val, w_val) if np.isfinite(outputs).all() else np.nan
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = _weights_and_buffers(self.network_)
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])

    # ------------------------------------------------------------------ the public calls

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y), from new weights (or the current ones with warm_start=True); returns self.
        `sample_weight` weights each row's loss."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _outputs(self, X) -> np.ndarray:
        """The network's outputs (logits or values) for X, already validated, in X's float
        dtype: scikit-learn's answers follow the input's, whatever the network computes in."""
        return predict(self.network_, _dense(X)).astype(X.dtype, copy=False)

    def _checked_outputs(self, X) -> np.ndarray:
        """The network's outputs for X, after checking X against what fit saw."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32), reset=False)
        return self._outputs(X)
