"""MLPClassifier: scikit-learn's multi-layer perceptron classifier, trained by backprop."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit, log_softmax, softmax
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import validate_data

from backprop.sklearn.base import MLPBase
from backprop.sklearn.losses import SigmoidCrossEntropy, SoftmaxCrossEntropy


class MLPClassifier(ClassifierMixin, MLPBase):
    """A drop-in for `sklearn.neural_network.MLPClassifier`, trained by backprop.

    The same parameters, with scikit-learn's meanings (solvers "adam" and "sgd"; "lbfgs" is
    refused), and ours: `device` ("cpu", "cuda", ...), `dtype` ("float64", as scikit-learn
    computes; "float32" is faster), `dropout` (a Dropout of that rate after each hidden layer)
    and `batch_norm` (a BatchNorm after each hidden layer). Class labels of any kind (strings,
    integers), two or more classes, or a multi-label indicator matrix, as scikit-learn takes them.

    The network (`network_`, a `bp.Sequential`) ends in a linear layer: with several classes
    its outputs are the logits of a softmax, else one sigmoid logit per output (two classes:
    one output, as scikit-learn). The loss is the cross-entropy of those probabilities, plus
    scikit-learn's L2 penalty (backprop/sklearn/losses.py); training follows scikit-learn's
    rules (backprop/sklearn/base.py). Fitted: `classes_`, `n_features_in_`,
    `feature_names_in_` (from a DataFrame), `loss_`, `loss_curve_`, `best_loss_`,
    `validation_scores_`, `best_validation_score_`, `n_iter_`, `t_`, `n_layers_`,
    `n_outputs_`, `out_activation_`, `coefs_`, `intercepts_`, `network_`.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @property
    def out_activation_(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss(self):
        return SoftmaxCrossEntropy() if self.out_activation_ == "softmax" else SigmoidCrossEntropy()

    def _validate_input(self, X, y, incremental, reset):
        """(X, Y): X checked, Y the labels binarized (one column per output); sets `classes_`
        on a first fit, and checks y's classes against them otherwise, as scikit-learn does."""
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(np.float64)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing the training so far; `classes` (every label the
        classifier will see) is required on the first call."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = unique_labels(classes)
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                             f"{self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    # ------------------------------------------------------------------ from outputs to answers

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The probabilities scikit-learn's network ends in: softmax over the classes, else a
        sigmoid per output (one column for two classes)."""
        return softmax(logits, axis=1) if self.out_activation_ == "softmax" else expit(logits)

    def _labels(self, logits: np.ndarray):
        probabilities = self._probabilities(logits)
        if probabilities.shape[1] == 1:
            probabilities = probabilities.ravel()
        return self._label_binarizer.inverse_transform(probabilities)

    def _score_outputs(self, logits, Y, sample_weight):
        """Accuracy of the network's answers for the binarized labels Y (early stopping's score)."""
        return accuracy_score(self._label_binarizer.inverse_transform(Y), self._labels(logits),
                              sample_weight=sample_weight)

    def predict(self, X):
        """The class labels of X (an indicator matrix for multi-label targets)."""
        return self._labels(self._checked_outputs(X))

    def predict_proba(self, X):
        """The probability of each class in `classes_` (of each label, multi-label), per row of X."""
        probabilities = self._probabilities(self._checked_outputs(X))
        if probabilities.shape[1] == 1:  # two classes: scikit-learn gives both columns
            return np.hstack([1.0 - probabilities, probabilities])
        return probabilities

    def predict_log_proba(self, X):
        """log(predict_proba(X)), computed from the logits (finite where the probability underflows)."""
        logits = self._checked_outputs(X)
        if self.out_activation_ == "softmax":
            return log_softmax(logits, axis=1)
        if logits.shape[1] == 1:
            return np.hstack([log_expit(-logits), log_expit(logits)])
        return log_expit(logits)
