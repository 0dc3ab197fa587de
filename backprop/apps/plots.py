"""The picture of a training run: loss and accuracy per epoch, then panels of the test results
(the confusion matrix, a 2-D classifier's decision boundary, a regression's predicted against
true values).

Drawn with matplotlib's headless Agg backend, so it works without a display. A panel is a
function `draw(fig, ax)`, made by `confusion_panel`, `boundary_panel` or `regression_panel`.
"""

from __future__ import annotations

import numpy as np

BOUNDARY_GRID = 200  # points per axis of the decision-boundary grid


def plot_training(history: dict, path: str, panels=(), title: str = "", best_epoch: int | None = None) -> str:
    """Write a PNG to `path`: the loss curves, the accuracy curves when there are any (train and
    validation; the epoch whose weights were kept marked), then `panels`. Returns `path`."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError('the training plot needs matplotlib: pip install "backprop-gpu[examples]"') from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves = [("loss", "loss")] + ([("accuracy", "accuracy")] if history.get("accuracy") else [])
    count = len(curves) + len(panels)
    fig, axes = plt.subplots(1, count, figsize=(5.3 * count, 4.8), squeeze=False)
    axes = list(axes[0])
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, (key, label) in zip(axes, curves):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(epochs, values, style, label=("validation " if prefix else "training ") + label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, linestyle=":", label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{label} per epoch")
    losses = [v for key in ("loss", "val_loss") for v in history.get(key, []) if v > 0]
    if losses and max(losses) > 10 * min(losses):  # a long fall reads best on a log scale
        axes[0].set_yscale("log")
    for ax, draw in zip(axes[len(curves):], panels):
        draw(fig, ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_panel(confusion: np.ndarray, class_names: list[str]):
    """The test confusion matrix, counts written in where they stay readable."""

    def draw(fig, ax):
        classes = confusion.shape[0]
        image = ax.imshow(confusion, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = np.arange(classes)
        if classes <= 30:
            ax.set_xticks(ticks, class_names, rotation=90 if classes > 12 else 0)
            ax.set_yticks(ticks, class_names)
        if classes <= 20:
            threshold = confusion.max() / 2
            for i in range(classes):
                for j in range(classes):
                    if confusion[i, j]:
                        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if confusion[i, j] > threshold else "black")
        accuracy = np.trace(confusion) / max(confusion.sum(), 1)
        ax.set_title(f"test confusion matrix (accuracy {100 * accuracy:.1f}%)")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")

    return draw


def boundary_panel(predict_class, X: np.ndarray, y: np.ndarray, class_names: list[str]):
    """A 2-D classifier's decision regions (`predict_class(points)` -> class indices, over a grid
    spanning X with a margin) with the test points on top, coloured by their true class."""

    def draw(fig, ax):
        low, high = X.min(axis=0), X.max(axis=0)
        margin = 0.1 * np.maximum(high - low, 1e-9)
        u = np.linspace(low[0] - margin[0], high[0] + margin[0], BOUNDARY_GRID)
        v = np.linspace(low[1] - margin[1], high[1] + margin[1], BOUNDARY_GRID)
        grid_u, grid_v = np.meshgrid(u, v)
        regions = predict_class(np.c_[grid_u.ravel(), grid_v.ravel()]).reshape(grid_u.shape)
        classes = len(class_names)
        ax.contourf(grid_u, grid_v, regions, levels=np.arange(classes + 1) - 0.5, cmap="coolwarm", alpha=0.35)
        for k, name in enumerate(class_names):
            chosen = y == k
            colour = _class_colour(k, classes)
            ax.scatter(X[chosen, 0], X[chosen, 1], s=10, color=colour, edgecolors="black", linewidths=0.3,
                       label=f"class {name}")
        ax.set_title("decision boundary, test samples")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.legend(loc="best", fontsize=8)

    return draw


def _class_colour(k: int, classes: int):
    """Class k's colour on the coolwarm map that the regions use."""
    import matplotlib

    return matplotlib.colormaps["coolwarm"](k / max(classes - 1, 1))


def regression_panel(true: np.ndarray, predicted: np.ndarray, target_name: str):
    """Predicted against true values of the test set, with the line where they are equal."""

    def draw(fig, ax):
        t, p = np.ravel(true), np.ravel(predicted)
        ax.scatter(t, p, s=10, alpha=0.6)
        low, high = min(t.min(), p.min()), max(t.max(), p.max())
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--", label="predicted = true")
        ax.set_title(f"test set: predicted against true {target_name}")
        ax.set_xlabel(f"true {target_name}")
        ax.set_ylabel(f"predicted {target_name}")
        ax.grid(alpha=0.3)
        ax.legend()

    return draw
