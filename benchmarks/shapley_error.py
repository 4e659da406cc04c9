"""How close each Shapley approximator gets to the exact Shapley values, per model evaluation.

    python benchmarks/shapley_error.py --checkpoint runs/cnn [--images 100] [--out FIG.png]

On a 4x4 grid of 7x7 patches (16 players, absent patches black) the exact Shapley values of the
target logit are computable (``exact_shapley``: all 2^16 coalitions). Every approximator is scored
against them on the same test digits: KernelSHAP, LIME and Shapley value sampling (plain and
antithetic) at growing budgets, feature ablation and occlusion with the patch as window, and the
gradient methods summed per patch (IG, DeepLIFT, gradient x input). The error of one image is the
relative L2 distance ||v - v*|| / ||v*|| of its 16 values; the table prints its median and 90th
percentile over the images, against model evaluations per image (the budget ``Method.passes``
counts, a gradient pass as one evaluation, and the mean the methods actually ran, which skip
coalitions that differ only in black patches), and the figure plots the medians against the
budget, log-log.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from mnistxai import data, xai
from mnistxai.training.checkpoint import load_classifier

PATCH = 7  # 28 / 7 = 4 patches a side: 16 players
BUDGETS = (32, 64, 128, 256, 512, 1024, 2048)  # coalitions per image (KernelSHAP, LIME)
PERMUTATIONS = (1, 2, 4, 8, 16, 32, 64)  # Shapley value sampling
SAMPLED = {
    "kernel_shap": [{"samples": b} for b in BUDGETS],
    "lime": [{"samples": b} for b in BUDGETS],
    "shapley_sampling": [{"samples": p} for p in PERMUTATIONS],
    "shapley_sampling (antithetic)": [{"samples": p, "antithetic": True} for p in PERMUTATIONS],
}
# one point each; pixel maps are summed per patch, group-valued maps read once per patch
SINGLE = {
    "feature_ablation": ("feature_ablation", {}, "mean"),
    "occlusion 7x7, stride 7": ("occlusion", {"window": PATCH, "stride": PATCH}, "mean"),
    "integrated_gradients": ("integrated_gradients", {}, "sum"),
    "deeplift": ("deeplift", {}, "sum"),
    "grad_x_input": ("grad_x_input", {}, "sum"),
}


def per_patch(maps: np.ndarray, how: str) -> np.ndarray:
    """(B, 28, 28) -> (B, 16): each patch's sum or mean."""
    b = maps.shape[0]
    blocks = maps.reshape(b, 28 // PATCH, PATCH, 28 // PATCH, PATCH).swapaxes(2, 3)
    blocks = blocks.reshape(b, -1, PATCH * PATCH)
    return blocks.sum(-1) if how == "sum" else blocks.mean(-1)


def relative_error(values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(values - truth, axis=1) / np.maximum(np.linalg.norm(truth, axis=1), 1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="workdir of a trained classifier")
    ap.add_argument("--images", type=int, default=100, help="test digits (default 100)")
    ap.add_argument("--out", default=None, help="write the error-vs-evaluations figure here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    clf = load_classifier(args.checkpoint)
    images = data.load(clf.dataset, "test")[0][: args.images]
    key = jax.random.key(args.seed)
    grid = {"patch": PATCH}

    start = time.perf_counter()
    exact = xai.explain("exact_shapley", clf, images, **grid)
    truth = np.asarray(exact.extras["group_values"], np.float64)
    seconds = time.perf_counter() - start
    targets = np.asarray(exact.targets)
    evaluations = sum(xai.METHODS["exact_shapley"].model_passes(grid))
    print(
        f"exact_shapley: {len(images)} test digits, 16 players, {evaluations:,} evaluations per "
        f"image at most, {np.mean(exact.extras['evaluated']):,.0f} run on average (patches that "
        f"are black cannot change the input), {seconds:.1f} s ({len(images) / seconds:.3f} "
        f"images/s, compilation included)"
    )
    print(
        f"{'method':32s} {'evaluations':>11s} {'run':>8s} {'median error':>13s} "
        f"{'p90 error':>10s} {'s':>7s}"
    )

    curves = {}

    def score(label, name, options, values_of):
        spec = xai.METHODS[name]
        t0 = time.perf_counter()
        res = xai.explain(name, clf, images, targets, key=key, **options)
        jax.block_until_ready(res)
        took = time.perf_counter() - t0
        err = relative_error(values_of(res), truth)
        evals = sum(spec.passes(spec.parse(options, len(images), clf)))
        ran = float(np.mean(res.extras["evaluated"])) if "evaluated" in res.extras else evals
        med, p90 = float(np.median(err)), float(np.percentile(err, 90))
        print(f"{label:32s} {evals:11,.0f} {ran:8,.0f} {med:13.4f} {p90:10.4f} {took:7.1f}")
        curves.setdefault(label, []).append((evals, med))

    group_values = lambda res: np.asarray(res.extras["group_values"], np.float64)  # noqa: E731
    for label, settings in SAMPLED.items():
        name = label.split(" ")[0]
        for options in settings:
            score(label, name, {**grid, **options}, group_values)
    for label, (name, options, how) in SINGLE.items():
        opts = {**grid, **options} if name in ("feature_ablation",) else options
        score(label, name, opts, lambda res, how=how: per_patch(np.asarray(res.attributions), how))

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for label, points in curves.items():
            e, m = zip(*points)
            style = "-o" if len(points) > 1 else "s"
            ax.plot(e, m, style, label=label, markersize=4)
        ax.axvline(evaluations, color="grey", ls=":", lw=1)
        ax.text(evaluations, ax.get_ylim()[1], " exact", va="top", ha="right", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model evaluations per image")
        ax.set_ylabel("median relative L2 error vs exact Shapley")
        ax.set_title(f"16 patches of 7x7, {len(images)} test digits")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
