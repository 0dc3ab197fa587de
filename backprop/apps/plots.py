"""The picture of a training run: loss and accuracy per epoch, and the test confusion matrix.

Drawn with matplotlib's headless Agg backend, so it works without a display.
"""

from __future__ import annotations

import numpy as np


def plot_training(history: dict, confusion: np.ndarray, class_names: list[str], path: str,
                  title: str = "", best_epoch: int | None = None) -> str:
    """Write a PNG to `path`: the loss curves, the accuracy curves (train and validation; the
    epoch whose weights were kept marked), and the confusion matrix. Returns `path`."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError('the training plot needs matplotlib: pip install "backprop-gpu[examples]"') from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_loss, ax_acc, ax_cm) = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.05]})
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
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
    losses = [v for key in ("loss", "val_loss") for v in history.get(key, []) if v > 0]
    if losses and max(losses) > 10 * min(losses):  # a long fall reads best on a log scale
        ax_loss.set_yscale("log")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_loss.set_title("loss per epoch")
    ax_acc.set_title("accuracy per epoch")

    classes = confusion.shape[0]
    image = ax_cm.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax_cm, fraction=0.046, pad=0.04)
    ticks = np.arange(classes)
    if classes <= 30:
        ax_cm.set_xticks(ticks, class_names, rotation=90 if classes > 12 else 0)
        ax_cm.set_yticks(ticks, class_names)
    if classes <= 20:  # the counts, written where they stay readable
        threshold = confusion.max() / 2
        for i in range(classes):
            for j in range(classes):
                if confusion[i, j]:
                    ax_cm.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                               color="white" if confusion[i, j] > threshold else "black")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    ax_cm.set_title(f"test confusion matrix (accuracy {100 * accuracy:.1f}%)")
    ax_cm.set_xlabel("predicted class")
    ax_cm.set_ylabel("true class")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
