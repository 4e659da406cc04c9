"""The planted-shortcut comparison: a CNN trained on ``mnist_shortcut`` against the same CNN
trained with right for the right reasons (Ross et al. 2017), as numbers and one figure.

``compare(models, images, labels)`` measures each model on plain MNIST test digits
(``mnistxai.shortcut.reliance`` per method: marked / unmarked / marker-swapped accuracy, the
share of swapped digits that follow their marker, and the localisation metrics of the maps of
marked digits against the marker's mask); ``plot_shortcut_removal`` draws it: accuracies, the
localisation metrics per method before and after, and example maps with the marker outlined.
The demo report's "Planted shortcut" section and ``benchmarks/shortcut.py`` both use them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from mnistxai import shortcut
from mnistxai.report import viz

METHODS = ("saliency", "grad_x_input", "integrated_gradients")
ACCURACIES = ("accuracy_marked", "accuracy_unmarked", "accuracy_swapped", "follows_marker")


def compare(
    models: Mapping[str, object],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    methods: Sequence[str] = METHODS,
    explain_images: int = 256,
) -> dict:
    """``{model: {"accuracy_*": .., "follows_marker": .., "methods": {method: reliance}}}`` for
    the classifiers ``models`` (name -> ``Classifier``) on the plain uint8 digits ``images``
    (N, 28, 28) with their ``labels``; each method's ``reliance`` keeps its maps of the first
    ``explain_images`` marked digits (for the figure)."""
    out = {}
    for name, classifier in models.items():
        per_method = {
            m: shortcut.reliance(
                classifier, images, labels, method=m, explain_images=explain_images
            )
            for m in methods
        }
        first = next(iter(per_method.values()))
        out[name] = {k: first[k] for k in ACCURACIES} | {"methods": per_method}
    return out


def table(results: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per model and method, percentages and the localisation means."""
    first = next(iter(results.values()))
    metrics = list(next(iter(first["methods"].values()))["localisation"])
    header = ["model", "method", "marked", "unmarked", "swapped", "follows marker", "marker mass"]
    header += metrics
    rows = []
    for model, r in results.items():
        for method, m in r["methods"].items():
            rows.append(
                [model, method]
                + [f"{100 * r[k]:.1f}%" for k in ACCURACIES]
                + [f"{m['marker_mass_mean']:.3f}"]
                + [f"{m['localisation'][k]:.3f}" for k in metrics]
            )
    return header, rows


def _outline_marker(ax, mask):
    ax.contour(np.asarray(mask, float), levels=[0.5], colors="lime", linewidths=0.8)


def plot_shortcut_removal(results: dict, title: str = "Planted shortcut"):
    """Top: each model's accuracy on marked / unmarked / swapped test digits and the share of
    swapped digits following their marker; then one panel per localisation metric (how much
    each method's maps of marked digits sit on the marker, chance marked by a dotted line for
    relevance mass). Below, one row per model: every method's maps of the first marked digits,
    the marker outlined in green."""
    models = list(results)
    methods = list(next(iter(results.values()))["methods"])
    first_model = results[models[0]]["methods"][methods[0]]
    metrics = list(first_model["localisation"])
    panels = 1 + len(metrics)
    fig = plt.figure(figsize=(3.0 * max(panels, len(methods)), 3.2 + 2.6 * len(models)))
    columns = max(panels, len(methods))
    grid = fig.add_gridspec(1 + len(models), columns, height_ratios=[1.6] + [1] * len(models))

    width = 0.8 / len(models)
    ax = fig.add_subplot(grid[0, 0])
    for j, model in enumerate(models):
        values = [100 * results[model][k] for k in ACCURACIES]
        ax.bar(np.arange(len(ACCURACIES)) + j * width, values, width, label=model)
    ax.set_xticks(
        np.arange(len(ACCURACIES)) + width * (len(models) - 1) / 2,
        ["marked", "unmarked", "swapped", "follows\nmarker"],
        fontsize=7,
    )
    ax.set_ylabel("% of test digits", fontsize=8)
    ax.set_title("accuracy", fontsize=9)
    ax.legend(fontsize=7)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[0, 1 + i])
        for j, model in enumerate(models):
            values = [results[model]["methods"][m]["localisation"][metric] for m in methods]
            ax.bar(np.arange(len(methods)) + j * width, values, width, label=model)
        if metric == "relevance_mass_accuracy":
            ax.axhline(shortcut.MARKER_AREA, color="k", ls=":", lw=0.8)
        ax.set_xticks(
            np.arange(len(methods)) + width * (len(models) - 1) / 2,
            [m.replace("_", "\n") for m in methods],
            fontsize=6,
        )
        ax.set_ylim(0, 1)
        ax.set_title(metric.replace("_", " "), fontsize=9)

    images = first_model["marked"]
    masks = shortcut.find_markers(images)
    for row, model in enumerate(models, start=1):
        for col in range(grid.ncols):
            method, digit = methods[col % len(methods)], col // len(methods)
            if digit >= len(images):
                break
            ax = fig.add_subplot(grid[row, col])
            maps = results[model]["methods"][method]["maps"]
            viz.draw_map(ax, images[digit] / 255.0, maps[digit], colorbar=False)
            _outline_marker(ax, masks[digit])
            ax.set_title(f"{model}: {method}", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
