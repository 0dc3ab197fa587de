"""scikit-learn estimators trained by backprop: drop-ins for scikit-learn's MLPs.

    from backprop.sklearn import MLPClassifier, MLPRegressor

They keep scikit-learn's parameters and meanings (see backprop/sklearn/base.py for the training
rules, backprop/sklearn/losses.py for the objectives) and work in Pipeline, GridSearchCV and
cross_val_score. They need scikit-learn (`pip install "backprop-gpu[sklearn]"`).
"""

try:
    import sklearn  # noqa: F401
except ImportError as exc:
    raise ImportError('backprop.sklearn needs scikit-learn: pip install "backprop-gpu[sklearn]"') from exc

from backprop.sklearn.classifier import MLPClassifier
from backprop.sklearn.regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
