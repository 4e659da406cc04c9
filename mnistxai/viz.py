"""Figures as pure functions: arrays (or history records) in, a matplotlib Figure out."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # scripts write files; nothing here needs a screen
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(epochs: list[dict], title: str = "Training"):
    """Loss and accuracy per epoch, train and test, from ``history['epochs']`` records."""
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "o-"), ("test", "s--")):
        ax_loss.plot(x, [e[f"{split}_loss"] for e in epochs], style, label=split)
        ax_acc.plot(x, [100 * e[f"{split}_accuracy"] for e in epochs], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if epochs:
        best = max(epochs, key=lambda e: e["test_accuracy"])
        ax_acc.annotate(f"best test {100 * best['test_accuracy']:.2f}%", (best["epoch"], 100 * best["test_accuracy"]),
                        textcoords="offset points", xytext=(-60, -25), arrowprops={"arrowstyle": "->"})
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(x)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
