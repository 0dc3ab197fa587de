"""MLPRegressor: scikit-learn's multi-layer perceptron regressor, trained by backprop."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import column_or_1d
from sklearn.utils.validation import validate_data

from backprop.sklearn.base import MLPBase
from backprop.sklearn.losses import HalfSquaredError


class MLPRegressor(RegressorMixin, MLPBase):
    """A drop-in for `sklearn.neural_network.MLPRegressor`, trained by backprop.

    The same parameters as MLPClassifier (see it), plus scikit-learn's `loss`, which must be
    "squared_error": `loss_` is half the mean squared error, plus the L2 penalty. One or several
    outputs (y of shape (n,) or (n, outputs)); the network ends in a linear layer.
    """

    out_activation_ = "identity"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, outputs): one network output each
        return tags

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, device="cpu", dtype="float64", dropout=0.0,
                 batch_norm=False):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, device=device, dtype=dtype, dropout=dropout,
            batch_norm=batch_norm)
        self.loss = loss

    def _check_params(self) -> None:
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error' (scikit-learn's 'poisson' is not supported), "
                             f"got {self.loss!r}")
        super()._check_params()

    def _loss(self):
        return HalfSquaredError()

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y.reshape(y.shape[0], -1).astype(np.float64)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the training so far."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _score_outputs(self, outputs, Y, sample_weight):
        """R^2 of the network's outputs for Y (early stopping's score)."""
        return r2_score(Y, outputs, sample_weight=sample_weight)

    def predict(self, X):
        """The predicted values: shape (n,) for one output, (n, outputs) for several."""
        outputs = self._checked_outputs(X)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs
