"""Figures as pure functions: arrays (or history records) in, a matplotlib Figure out."""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # scripts write files and need no screen; a notebook keeps
    matplotlib.use("Agg")  # its inline backend, so that its figures show
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
        ax_acc.annotate(
            f"best test {100 * best['test_accuracy']:.2f}%",
            (best["epoch"], 100 * best["test_accuracy"]),
            textcoords="offset points",
            xytext=(-60, -25),
            arrowprops={"arrowstyle": "->"},
        )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(x)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- attribution figures ---------------------------------------------------------------------
# One convention everywhere: unsigned maps in UNSIGNED_CMAP from 0 to their max, signed maps in
# SIGNED_CMAP symmetric about 0 (red: for the class, blue: against, white: zero) under the
# digit's outline, the digit in grey beneath.

import numpy as np  # noqa: E402

UNSIGNED_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"
OK_COLOUR, WRONG_COLOUR = "#1a7f37", "#cf222e"


def is_signed(heatmap) -> bool:
    """Whether a map carries meaningful negative values (more than 1% of its peak magnitude)."""
    h = np.asarray(heatmap, np.float32)
    peak = np.abs(h).max()
    return bool(peak > 0 and h.min() < -0.01 * peak)


def draw_map(
    ax,
    image,
    heatmap,
    title: str = "",
    colorbar: bool = True,
    signed: bool | None = None,
    alpha: float = 0.65,
    vmax: float | None = None,
):
    """Draw ``heatmap`` (28, 28) over the grey ``image`` (28, 28) in [0, 1] on ``ax``."""
    h = np.asarray(heatmap, np.float32)
    signed = is_signed(h) if signed is None else signed
    peak = float(np.abs(h).max()) if vmax is None else vmax
    peak = peak if peak > 0 else 1.0
    if signed:  # a blend would turn zero grey; the digit is drawn as its outline instead
        im = ax.imshow(h, cmap=SIGNED_CMAP, vmin=-peak, vmax=peak)
        ax.contour(
            np.asarray(image).reshape(28, 28), levels=[0.5], colors="k", linewidths=0.5, alpha=0.6
        )
    else:
        ax.imshow(np.asarray(image).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(
            h,
            cmap=UNSIGNED_CMAP,
            vmin=0 if h.min() >= 0 else float(h.min()),
            vmax=peak,
            alpha=alpha,
        )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=6)
        cb.formatter.set_powerlimits((-2, 3))
        cb.update_ticks()
    return im


def _namer(class_names):
    """class index -> its name (``class_names[k]``), or the number itself."""
    return (lambda k: str(int(k))) if class_names is None else (lambda k: class_names[int(k)])


def plot_digit_analysis(
    image,
    maps: dict,
    probabilities,
    label: int | None = None,
    title: str = "",
    columns: int = 4,
    class_names=None,
):
    """Single-digit analysis: the digit, its top-3 predictions, and one overlay per method.

    Args:
      image: (28, 28) in [0, 1]. maps: method name -> (28, 28) attribution.
      probabilities: (10,) softmax output. label: the true class, if known.
      class_names: the dataset's class names (default: the class numbers).
    """
    name_of = _namer(class_names)
    probs = np.asarray(probabilities)
    rows = 1 + -(-len(maps) // columns)
    fig = plt.figure(figsize=(2.6 * columns, 2.5 * rows))
    grid = fig.add_gridspec(rows, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(np.asarray(image).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
    ax.set_title("input" + (f" (true {name_of(label)})" if label is not None else ""), fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 1:])
    top = np.argsort(probs)[::-1][:3]
    colours = [OK_COLOUR if label is None or t == label else WRONG_COLOUR for t in top]
    ax.barh([f"class {name_of(t)}" for t in top][::-1], probs[top][::-1], color=colours[::-1])
    for y, p in enumerate(probs[top][::-1]):
        ax.text(min(p + 0.01, 0.85), y, f"{p:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_title("top-3 predictions (probability)", fontsize=9)
    for i, (name, heatmap) in enumerate(maps.items()):
        draw_map(fig.add_subplot(grid[1 + i // columns, i % columns]), image, heatmap, name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_method_grid(
    images,
    maps: dict,
    labels=None,
    predictions=None,
    normalize: bool = False,
    title: str = "",
    cell: float = 1.35,
    row_titles=None,
    class_names=None,
):
    """Rows of digits x columns of methods; each row marked correct (green) or wrong (red).

    Args:
      images: (N, 28, 28) in [0, 1]. maps: method -> (N, 28, 28).
      labels, predictions: (N,) ints, optional. row_titles: (N,) strings shown above each row's
      label.
      class_names: the dataset's class names (default: the class numbers).
      normalize: min-max every map to [0, 1] and share one
        colour scale (the seed's GOOD vs BAD convention); otherwise each map keeps its own scale.
    """
    name_of = _namer(class_names)
    images = np.asarray(images).reshape(-1, 28, 28)
    n, names = len(images), list(maps)
    column_signed = {name: is_signed(maps[name]) for name in names}
    fig, axes = plt.subplots(
        n, len(names) + 1, figsize=(cell * (len(names) + 1) + 0.6, cell * n + 0.8), squeeze=False
    )
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(images[r], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None and predictions is not None:
            ok = int(labels[r]) == int(predictions[r])
            prefix = f"{row_titles[r]}\n" if row_titles is not None else ""
            ax.set_ylabel(
                f"{prefix}{'✓' if ok else '✗'} true {name_of(labels[r])}\n"
                f"pred {name_of(predictions[r])}",
                color=OK_COLOUR if ok else WRONG_COLOUR,
                fontsize=8,
            )
            for spine in ax.spines.values():
                spine.set_edgecolor(OK_COLOUR if ok else WRONG_COLOUR)
                spine.set_linewidth(2)
        for c, name in enumerate(names):
            h = np.asarray(maps[name][r], np.float32)
            if normalize:
                lo, hi = h.min(), h.max()
                h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
                axes[r, c + 1].imshow(h, cmap=UNSIGNED_CMAP, vmin=0, vmax=1)
                axes[r, c + 1].set_xticks([])
                axes[r, c + 1].set_yticks([])
            else:  # one sign convention per column, decided over all of its maps
                draw_map(axes[r, c + 1], images[r], h, colorbar=False, signed=column_signed[name])
            if r == 0:
                axes[r, c + 1].set_title(name, fontsize=8, rotation=20)
    axes[0, 0].set_title("input", fontsize=8)
    if normalize:
        fig.colorbar(
            plt.cm.ScalarMappable(cmap=UNSIGNED_CMAP),
            ax=axes,
            fraction=0.015,
            pad=0.01,
            label="min-max scaled attribution",
        )
    fig.suptitle(title, y=1 + 0.5 / fig.get_figheight())  # above the rotated column titles
    return fig


def plot_confusion_matrix(confusion, title: str = "Confusion matrix (test set)", class_names=None):
    """(K, K) counts, rows = true class, columns = predicted; the diagonal greyed out of the colour
    scale; ``class_names`` label the axes (default: the class numbers)."""
    cm = np.asarray(confusion)
    off = cm.astype(float).copy()
    np.fill_diagonal(off, np.nan)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    im = ax.imshow(off, cmap="Reds")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if i != j else "#555",
            )
    ticks = [_namer(class_names)(k) for k in range(cm.shape[0])]
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=title,
        xticks=range(cm.shape[1]),
        yticks=range(cm.shape[0]),
    )
    ax.set_xticklabels(ticks, rotation=45 if class_names is not None else 0, fontsize=7)
    ax.set_yticklabels(ticks, fontsize=7)
    fig.colorbar(im, ax=ax, label="errors (off-diagonal)")
    fig.tight_layout()
    return fig


def plot_image_grid(
    images, row_labels=None, col_labels=None, title: str = "", cell: float = 1.2, cmap: str = "gray"
):
    """(R, C, 28, 28) images in [0, 1] as a labelled grid (e.g. activation maximization per
    class)."""
    images = np.asarray(images)
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(
        rows, cols, figsize=(cell * cols + 0.5, cell * rows + 0.6), squeeze=False
    )
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[r, c].reshape(28, 28), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col_labels is not None and r == 0:
                ax.set_title(str(col_labels[c]), fontsize=8)
            if row_labels is not None and c == 0:
                ax.set_ylabel(str(row_labels[r]), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` (PNG) and free it."""
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# ---- generative models -------------------------------------------------------------------------


def plot_metric_curves(epochs: list[dict], panels: dict, title: str = "Training"):
    """One panel per entry of ``panels`` (panel title -> keys of the epoch records), metric vs
    epoch."""
    x = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels.items()):
        for key in keys:
            ax.plot(x, [e.get(key, np.nan) for e in epochs], "o-", label=key)
        ax.set(xlabel="epoch", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xticks(x)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- explanation leaderboard (mnistxai.pipelines.evaluate)
# ----------------------------------------------


def plot_perturbation_curves(curves: dict, title: str = "Perturbation curves"):
    """One panel per curve kind (e.g. "deletion", "insertion"): {kind: {method: (L+1,) mean curve}},
    target-class probability against the fraction of pixels removed or inserted."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (kind, by_method) in zip(axes[0], curves.items()):
        for method, curve in by_method.items():
            curve = np.asarray(curve)
            style = "--" if method in ("random", "sobel") else "-"
            ax.plot(np.linspace(0, 1, len(curve)), curve, style, label=method, lw=1.3)
        ax.set(xlabel="fraction of pixels", ylabel="target probability", title=kind, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_randomization_cascade(
    stages, similarity: dict, title: str = "Model-parameter randomization"
):
    """Mean similarity to the trained model's maps as layers are randomized from the top:
    ``similarity`` = {measure: {method: (len(stages),) means}} (e.g. "spearman", "ssim")."""
    fig, axes = plt.subplots(
        1, len(similarity), figsize=(5.2 * len(similarity), 3.8), squeeze=False
    )
    x = np.arange(len(stages) + 1)
    for ax, (measure, by_method) in zip(axes[0], similarity.items()):
        for method, values in by_method.items():
            style = "--" if method in ("random", "sobel") else "-o"
            ax.plot(x, np.concatenate([[1.0], values]), style, label=method, lw=1.2, ms=3)
        ax.set_xticks(x, ["trained"] + [f"+{s}" for s in stages], rotation=45, fontsize=8)
        ax.set(ylabel=measure, title=f"{measure} vs trained maps", ylim=(-0.2, 1.05))
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metric_bars(table: dict, better: dict, title: str = "Leaderboard", columns: int = 4):
    """A bar chart per metric: ``table`` = {metric: {method: (mean, standard error)}}, ``better``
    = {metric: "lower" | "higher"}; error bars are one standard error, baselines hatched."""
    rows = -(-len(table) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, (metric, by_method) in zip(axes.flat, table.items()):
        names = list(by_method)
        means = np.array([by_method[m][0] for m in names], float)
        ses = np.array([by_method[m][1] for m in names], float)
        bars = ax.bar(range(len(names)), means, yerr=ses, capsize=2, color="tab:blue")
        for bar, name in zip(bars, names):
            if name in ("random", "sobel"):
                bar.set_color("tab:gray")
                bar.set_hatch("//")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_title(f"{metric} ({better.get(metric, '?')} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(table) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- synthesis: activation maximization and latent walks ---------------------------------------


def plot_am_gallery(
    rows: dict,
    predictions: dict,
    probabilities: dict,
    title: str = "Activation maximization",
    class_names=None,
):
    """One row per way of synthesizing (e.g. "pixels", "DGN-AM"), one column per class.

    ``rows`` = {name: (10, 28, 28) images in [0, 1]}; ``predictions`` / ``probabilities`` = {name:
    (10,)}
    the CNN's class and its probability for each image. A red title marks an image the CNN does not
    assign to its column's class.
    """
    names = list(rows)
    classes = len(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(names), classes, figsize=(1.25 * classes + 0.8, 1.45 * len(names) + 0.6), squeeze=False
    )
    for r, name in enumerate(names):
        for c in range(classes):
            ax = axes[r, c]
            ax.imshow(np.asarray(rows[name][c]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            pred, prob = int(predictions[name][c]), float(probabilities[name][c])
            name_of = _namer(class_names)
            ax.set_title(
                f"{name_of(c)}: CNN {name_of(pred)} ({prob:.2f})",
                fontsize=7,
                color="k" if pred == c else "tab:red",
            )
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_latent_walks(
    images,
    probabilities,
    ts,
    t_flip,
    contrast,
    start_class,
    end_class,
    pair_titles,
    title: str = "Latent walks",
):
    """Each row a walk between two digits: the decoded steps with the CNN's class and probability, a
    red line at the decision flip, the contrastive difference image across it, and the probabilities
    of the start and end classes along the path.

    Args:
      images: (P, S, 28, 28) decoded steps in [0, 1]. probabilities: (P, S, 10) the CNN's.
      ts: (S,) the path positions. t_flip: (P,) the flip point (NaN where nothing flips).
      contrast: (P, 28, 28) in [-1, 1]. start_class, end_class: (P,) classes whose probabilities are
      drawn.
      pair_titles: P row labels.
    """
    images, probabilities, ts = np.asarray(images), np.asarray(probabilities), np.asarray(ts)
    pairs, steps = images.shape[:2]
    fig = plt.figure(figsize=(0.95 * steps + 4.6, 1.25 * pairs + 0.7))
    # an empty column keeps the probability panel's tick labels off the contrast image
    grid = fig.add_gridspec(
        pairs, steps + 3, width_ratios=[1] * steps + [1.15, 0.45, 3.0], wspace=0.08, hspace=0.45
    )
    for p in range(pairs):
        predicted = probabilities[p].argmax(-1)
        row = []
        for s in range(steps):
            ax = fig.add_subplot(grid[p, s])
            row.append(ax)
            ax.imshow(images[p, s].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"{predicted[s]} ({probabilities[p, s].max():.2f})",
                fontsize=7,
                color="k" if predicted[s] == predicted[0] else "tab:red",
            )
            if s == 0:
                ax.set_ylabel(pair_titles[p], fontsize=8)
        after = int(np.searchsorted(ts, t_flip[p], side="right")) if np.isfinite(t_flip[p]) else 0
        if (
            0 < after < steps
        ):  # a red bar between the last step before the flip and the first after it
            left, right = row[after - 1].get_position(), row[after].get_position()
            x = (left.x1 + right.x0) / 2
            fig.add_artist(plt.Line2D([x, x], [left.y0, left.y1], color="tab:red", lw=2.5))
        ax = fig.add_subplot(grid[p, steps])
        peak = max(float(np.abs(contrast[p]).max()), 1e-6)
        ax.imshow(np.asarray(contrast[p]).reshape(28, 28), cmap=SIGNED_CMAP, vmin=-peak, vmax=peak)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("after - before", fontsize=7)
        ax = fig.add_subplot(grid[p, steps + 2])
        ax.plot(ts, probabilities[p, :, start_class[p]], "o-", ms=2.5, label=f"p({start_class[p]})")
        ax.plot(ts, probabilities[p, :, end_class[p]], "s-", ms=2.5, label=f"p({end_class[p]})")
        if np.isfinite(t_flip[p]):
            ax.axvline(t_flip[p], color="tab:red", ls="--", lw=1)
        ax.set(ylim=(-0.05, 1.05), xlim=(0, 1))
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, loc="center right")
        if p == pairs - 1:
            ax.set_xlabel("t (red: flip)", fontsize=7)
    fig.suptitle(title)
    return fig


# ---- leaderboard statistics: rank intervals and quality against cost --------------------------

BASELINE_NAMES = ("random", "sobel")


def plot_rank_intervals(
    ranks: dict,
    better: dict,
    w: tuple | None = None,
    title: str = "Ranks",
    columns: int = 4,
):
    """A panel per metric: each method's median rank (1 = best) with its bootstrap interval as
    an error bar, methods ordered by median rank. ``ranks`` = {metric: {method: (median, low,
    high)}}, ``better`` = {metric: "lower" | "higher"}; ``w`` = (W, low, high): Kendall's W across
    the metrics, in the title. Baselines in grey."""
    rows = -(-len(ranks) // columns) if ranks else 1
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(4.2 * columns, 0.25 * _most(ranks) + 1.6 * rows + 0.6),
        squeeze=False,
    )
    for ax, (metric, by_method) in zip(axes.flat, ranks.items()):
        known = {m: v for m, v in by_method.items() if np.isfinite(v[0])}
        names = sorted(known, key=lambda m: (known[m][0], m))
        med = np.array([known[m][0] for m in names], float)
        lo = np.array([known[m][1] for m in names], float)
        hi = np.array([known[m][2] for m in names], float)
        lo, hi = np.where(np.isfinite(lo), lo, med), np.where(np.isfinite(hi), hi, med)
        y = np.arange(len(names))
        colours = ["tab:gray" if m in BASELINE_NAMES else "tab:blue" for m in names]
        ax.hlines(y, lo, hi, colors=colours, lw=1.5)
        ax.scatter(med, y, c=colours, s=14, zorder=3)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0.5, max(len(by_method), 1) + 0.5)
        ax.set_xlabel("rank (1 = best)", fontsize=8)
        ax.set_title(f"{metric} ({better.get(metric, '?')} is better)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(ranks) :]:
        ax.axis("off")
    if w is not None and np.isfinite(w[0]):
        ci = f" [{w[1]:.2f}, {w[2]:.2f}]" if np.isfinite(w[1]) else ""
        title = f"{title}: Kendall's W = {w[0]:.2f}{ci} across {len(ranks)} metrics"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _most(ranks: dict) -> int:
    return max((len(v) for v in ranks.values()), default=1)


def pareto_front(cost, quality, better: str = "higher") -> np.ndarray:
    """bool mask of the points no other point beats: at most the cost and at least the quality
    (``better``="higher"; at most, for "lower"), strictly better in one of them."""
    c = np.asarray(cost, float)
    q = np.asarray(quality, float)
    q = q if better == "higher" else -q
    ok = np.isfinite(c) & np.isfinite(q)
    front = np.zeros(len(c), bool)
    for i in np.flatnonzero(ok):
        beaten = ok & (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        front[i] = not beaten.any()
    return front


def plot_pareto(panels: dict, title: str = "Quality against cost"):
    """A panel per metric category: ``panels`` = {category: (metric, better, {method: (FLOPs per
    image, mean)})}; x = FLOPs per image (log), y = the metric's mean, the Pareto front (no
    method both cheaper and better) drawn and its methods labelled in bold. Methods without a
    cost (the baselines) are not plotted."""
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax, (category, (metric, better, points)) in zip(axes.flat, panels.items()):
        names = [m for m, (c, q) in points.items() if np.isfinite(c) and c > 0 and np.isfinite(q)]
        cost = np.array([points[m][0] for m in names], float)
        quality = np.array([points[m][1] for m in names], float)
        front = pareto_front(cost, quality, better)
        ax.scatter(cost[~front], quality[~front], s=16, color="tab:blue", alpha=0.7)
        ax.scatter(cost[front], quality[front], s=26, color="tab:red", zorder=3)
        order = np.argsort(cost[front])
        ax.step(cost[front][order], quality[front][order], where="post", color="tab:red", lw=1)
        for name, c, q, on in zip(names, cost, quality, front):
            ax.annotate(
                name,
                (c, q),
                fontsize=6,
                fontweight="bold" if on else "normal",
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs per image (XLA)", fontsize=8)
        ax.set_ylabel(f"{metric} ({better} is better)", fontsize=8)
        ax.set_title(category, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
