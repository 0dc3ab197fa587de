"""GridSearchCV over Pipeline(StandardScaler(), MLPClassifier) on the digits: backprop.sklearn's
MLPClassifier (float64, its default, and float32) against scikit-learn's, the same grid and
settings; the time of each whole search and its accuracy.

    python benchmarks/sklearn_grid_search.py [--rounds 3] [--jobs 2]

Each round times one search per side, the sides' order rotating from round to round, in one
pool of `--jobs` worker processes (joblib's loky; with 2 workers on 2 cores it gives each one
BLAS thread), warmed up first so no side pays for starting it or for its imports. Every fit
runs exactly `max_iter` epochs (n_iter_no_change = max_iter), so both sides do the same work.
Prints a Markdown table: the median time over the rounds (the best beside it), the ratio to
scikit-learn's median, the best parameters, their mean cross-validation accuracy and the refitted
best pipeline's accuracy on the held-out 20 %.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, ParameterGrid, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backprop.sklearn import MLPClassifier

GRID = {"mlpclassifier__hidden_layer_sizes": [(64,), (128,)], "mlpclassifier__alpha": [1e-4, 1e-2],
        "mlpclassifier__learning_rate_init": [1e-3, 1e-2]}
EPOCHS = 60
SETTINGS = dict(max_iter=EPOCHS, n_iter_no_change=EPOCHS, random_state=0)
SIDES = {
    "backprop.sklearn, float64": lambda: MLPClassifier(**SETTINGS),
    "backprop.sklearn, float32": lambda: MLPClassifier(dtype="float32", **SETTINGS),
    "scikit-learn": lambda: SkMLPClassifier(**SETTINGS),
}


def search(estimator, jobs: int, grid=GRID) -> GridSearchCV:
    return GridSearchCV(make_pipeline(StandardScaler(), estimator), grid, cv=3, n_jobs=jobs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="GridSearchCV's n_jobs")
    args = parser.parse_args()
    # Every fit ends at max_iter on purpose (see above); scikit-learn passes this filter on to
    # its workers.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    for make in SIDES.values():  # warm-up: the pool, each side's imports in the workers
        tiny = {"mlpclassifier__max_iter": [1], "mlpclassifier__n_iter_no_change": [1]}
        search(make(), args.jobs, tiny).fit(X_train, y_train)
    names = list(SIDES)
    times: dict[str, list[float]] = {name: [] for name in names}
    results = {}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            start = time.perf_counter()
            fitted = search(SIDES[name](), args.jobs).fit(X_train, y_train)
            times[name].append(time.perf_counter() - start)
            results[name] = fitted
    reference = statistics.median(times["scikit-learn"])
    print(f"{len(X_train)} training digits, {len(ParameterGrid(GRID))} grid points x 3 folds + 1 refit, "
          f"{EPOCHS} epochs each, n_jobs={args.jobs}, {args.rounds} rounds\n")
    print("| side | search time, median (best) | / scikit-learn | best parameters | CV accuracy | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        fitted, median = results[name], statistics.median(times[name])
        best = ", ".join(f"{k.split('__')[1]}={v}" for k, v in fitted.best_params_.items())
        print(f"| {name} | {median:.1f} s ({min(times[name]):.1f} s) | {median / reference:.2f} | {best} | "
              f"{fitted.best_score_:.4f} | {fitted.score(X_test, y_test):.4f} |")


if __name__ == "__main__":
    main()
