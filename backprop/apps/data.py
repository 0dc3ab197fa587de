"""Data sets for the command line and the tests: scikit-learn's bundled digits, split stratified."""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays of sizes ~fractions * n (the last takes the rest), each class split alike."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        cuts = np.cumsum([int(round(f * idx.size)) for f in fractions])
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [rng.permutation(np.concatenate(p)) for p in parts]


def load_digits_split(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2):
    """sklearn's 8x8 handwritten digits (1797 images, 10 classes; bundled, no download), pixels
    scaled to [0, 1], split stratified into (X_train, y_train, X_val, y_val, X_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError('the digits data set needs scikit-learn: pip install "backprop-gpu[examples]"') from exc
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float64)
    y = digits.target.astype(np.int64)
    test, val, train = stratified_split(y, (test_fraction, val_fraction), seed)
    return X[train], y[train], X[val], y[val], X[test], y[test]
