"""How exact are the gradient methods on real digits? Figures for a trained CNN.

    python benchmarks/gradient_check.py --checkpoint runs/cnn [--digits 16] [--ig-digits 256]

Prints, on the first test digits:
- ties: 2x2 windows of the first max-pool whose maximum is positive and shared (per digit);
- ``explain("saliency", signed=True)`` against ``jax.vjp`` of the Flax model
(``classifier.logits``):
  per-image max |difference| / max |Flax gradient|, in float32 and float64;
- a directional finite difference along d = 1[x = 0], which keeps every tie (float64, h = 1e-6):
  <g, d> of explain's and of the Flax gradient against the finite difference;
- IG completeness: |convergence delta| / |F(x) - F(black)| at 50 and 128 Gauss-Legendre steps
  (median, 95th percentile, maximum, count above 1%).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import xai
from mnistxai.training.checkpoint import load_classifier
from mnistxai.data import load, to_model_input
from mnistxai.models.cnn import max_pool_2x2


def flax_grad(clf, x, t):
    logits, vjp = jax.vjp(clf.logits, x)
    return vjp(jax.nn.one_hot(t, logits.shape[-1], dtype=logits.dtype))[0][..., 0]


def tied_windows(clf, x) -> np.ndarray:
    """Per digit: first-pool windows whose positive maximum is attained more than once."""
    a = clf.features(x, "conv2")
    b, h, w, c = a.shape
    y = max_pool_2x2(a)
    ties = (a.reshape(b, h // 2, 2, w // 2, 2, c) == y[:, :, None, :, None]).sum((2, 4))
    return np.asarray(((ties > 1) & (y > 0)).sum((1, 2, 3)))


def relative(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return np.abs(a - ref).max((1, 2)) / np.abs(ref).max((1, 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/cnn")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--digits", type=int, default=16)
    ap.add_argument("--ig-digits", type=int, default=256)
    args = ap.parse_args()
    clf = load_classifier(args.checkpoint)
    images, _ = load("mnist", "test", data_dir=args.data_dir)
    x32 = jnp.asarray(to_model_input(images[: args.digits]))
    t = jnp.argmax(clf.logits(x32), -1)
    ties = tied_windows(clf, x32)
    print(
        f"tied positive first-pool windows per digit: median {np.median(ties):.0f}, "
        f"range {ties.min()}-{ties.max()} of {14 * 14 * 32}"
    )

    err32 = relative(
        xai.explain("saliency", clf, x32, t, signed=True).attributions, flax_grad(clf, x32, t)
    )
    with jax.enable_x64(True):
        c64 = clf.astype(jnp.float64)
        x64 = np.asarray(x32, np.float64)
        g_explain = xai.explain("saliency", c64, x64, t, signed=True).attributions
        g_flax = flax_grad(c64, jnp.asarray(x64), t)
        err64 = relative(g_explain, g_flax)
        d = (x64[..., 0] == 0).astype(np.float64)
        h = 1e-6
        at = lambda z: np.asarray(c64.logits(z))[np.arange(len(x64)), np.asarray(t)]
        fd = (at(x64 + h * d[..., None]) - at(x64 - h * d[..., None])) / (2 * h)
        along_explain = np.asarray((g_explain * d).sum((1, 2)))
        along_flax = np.asarray((g_flax * d).sum((1, 2)))
    print(
        f"saliency vs Flax gradient, max |diff| / max |grad| per digit: float32 median "
        f"{np.median(err32):.2e} max {err32.max():.2e}; float64 median {np.median(err64):.2e} "
        f"max {err64.max():.2e}"
    )
    rel_fd = np.abs(along_explain - fd) / np.abs(fd)
    print(
        f"directional FD along 1[x = 0] (float64): explain off by median {np.median(rel_fd):.2e}, "
        f"max {rel_fd.max():.2e}; Flax off by max "
        f"{(np.abs(along_flax - fd) / np.abs(fd)).max():.2e}"
    )
    for i in range(min(3, len(fd))):
        print(
            f"  digit {i}: FD {fd[i]:.4f}, Flax {along_flax[i]:.4f}, explain {along_explain[i]:.4f}"
        )

    xi = jnp.asarray(to_model_input(images[: args.ig_digits]))
    ti = jnp.argmax(clf.logits(xi), -1)
    gap = xai._core.at_targets(clf.logits(xi), ti) - xai._core.at_targets(
        clf.logits(jnp.zeros_like(xi)), ti
    )
    for steps in (50, 128):
        res = xai.explain("integrated_gradients", clf, xi, ti, steps=steps)
        r = np.abs(np.asarray(res.extras["convergence_delta"])) / np.abs(np.asarray(gap))
        print(
            f"IG {steps:3d} steps, |delta| / |F(x) - F(0)| on {len(r)} digits: median "
            f"{100 * np.median(r):.3f}%, 95th {100 * np.percentile(r, 95):.3f}%, max "
            f"{100 * r.max():.3f}%, above 1%: {(r > 0.01).sum()}"
        )


if __name__ == "__main__":
    main()
