"""Faithfulness: does removing what a map calls important change the model's output?

Deletion and insertion (Petsiuk et al. 2018), region perturbation / pixel flipping with MoRF and
LeRF orders (Bach et al. 2015; Samek et al. 2017), faithfulness correlation (Bhatt et al. 2020) and
infidelity (Yeh et al. 2019). Each is written for one example and vmapped over the batch; the
perturbed inputs of one example (curve steps, random subsets, noise samples) go through the
model ``chunk_size`` at a time, so memory is bounded whatever the batch or step count. The score
function is wrapped in ``flat_batch``, so the model sees one flat batch per pass, not a vmapped
stack (about 2x faster on XLA:CPU; a score function must therefore not close over tracers to
benefit, and is never differentiated here).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai._jit import jit
from mnistxai.xai.paths import blur  # Gaussian, renormalised at the border
from mnistxai.xai.metrics._common import (DEFAULT_CHUNK, ScoreFn, check_inputs, check_positive,
                                          chunked, flat_batch, descending_order, example_keys, over_examples,
                                          pearson, plan, ranks_of)

ORDERS = ("morf", "lerf")


def trapezoid_auc(curve: jax.Array) -> jax.Array:
    """Area under (..., L+1) curves sampled at fractions 0, 1/L, ..., 1 (RISE's ``auc``)."""
    return (curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2) / (curve.shape[-1] - 1)


def _curve(score_fn, start, end, ranks, target, counts, per_pass):
    """Scores of ``target`` along the path where the features of rank < counts[s] come from
    ``end`` and the others from ``start`` (H, W, C); ``ranks`` (H, W); returns (len(counts),)."""
    counts = jnp.asarray(counts)

    def scores(idx):
        mask = ranks[None] < counts[idx][:, None, None]
        return score_fn(jnp.where(mask[..., None], end[None], start[None]))[:, target]
    return chunked(scores, counts.shape[0], per_pass)


def _step_counts(n_features: int, steps: int) -> np.ndarray:
    return np.round(np.linspace(0, n_features, steps + 1)).astype(np.int32)


@functools.partial(jit, static_argnames=("score_fn", "steps", "mode", "blur_sigma", "chunk_size"))
def _pixel_curves(score_fn, x, attributions, targets, keys, fill, *, steps, mode, blur_sigma,
                  chunk_size):
    score_fn = flat_batch(score_fn)
    n, h, w = attributions.shape
    counts = _step_counts(h * w, steps)
    per_example, per_pass = plan(n, steps + 1, chunk_size)

    def one(xi, ai, t, k, fi):
        ranks = ranks_of(descending_order(ai.ravel().astype(jnp.float32), k)).reshape(h, w)
        if mode == "deletion":
            start, end = xi, jnp.broadcast_to(fi, xi.shape)
        else:
            start = blur(xi, blur_sigma) if blur_sigma > 0 else jnp.broadcast_to(fi, xi.shape)
            end = xi
        return _curve(score_fn, start, end, ranks, t, counts, per_pass)
    curves = over_examples(one, (x, attributions, targets, keys, fill), n, per_example)
    return {"auc": trapezoid_auc(curves), "curve": curves}


def _fill(value, x):
    return jnp.broadcast_to(jnp.asarray(value, x.dtype), x.shape[:1] + (1, 1, x.shape[-1]))


def deletion(score_fn: ScoreFn, x, attributions, targets, *, steps: int = 16,
             baseline: float = 0.0, key: Optional[jax.Array] = None,
             chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Deletion AUC (Petsiuk et al. 2018, RISE, arXiv:1806.07421). Lower is better.

    Pixels are set to ``baseline`` (0 = black, RISE's deletion substrate) in descending order of
    the signed attribution, ``784 / steps`` at a time; the curve is the target's score after each
    step (steps + 1 points, the first on the intact image) and ``auc`` its trapezoid area with the
    x axis scaled to [0, 1], as RISE's code. Pass softmax probabilities as ``score_fn`` (RISE does).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)`` scores; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); steps: 16 (RISE uses 224 px per step on 224x224 images: 224 steps).
      key: breaks ties in the ranking uniformly at random (one key or (B,) keys); None breaks them
        by pixel index (Quantus's behaviour). A constant map with a key gives the random-order curve.
    Returns:
      ``{"auc": (B,), "curve": (B, steps + 1)}``.
    Quantus has no deletion/insertion metric; with ``steps=784`` and the AOPC instead of the AUC
    this curve is Quantus's ``PixelFlipping`` (black baseline).
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps, chunk_size=chunk_size)
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _pixel_curves(score_fn, x, attributions, targets, keys, _fill(baseline, x), steps=steps,
                         mode="deletion", blur_sigma=0.0, chunk_size=chunk_size)


def insertion(score_fn: ScoreFn, x, attributions, targets, *, steps: int = 16,
              canvas: float = 0.0, blur_sigma: float = 0.0, key: Optional[jax.Array] = None,
              chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Insertion AUC (Petsiuk et al. 2018, RISE). Higher is better.

    Starts from a canvas and puts the image's pixels back in descending attribution order; AUC of
    the target's score as in ``deletion``. The canvas is the constant ``canvas`` (default 0: black,
    MNIST's own background) or, with ``blur_sigma > 0``, the image blurred by that many pixels.
    Differs from RISE, whose canvas is always a blurred image (ImageNet has no neutral colour);
    on MNIST a blurred digit still shows its class, so every map would score alike.

    Returns ``{"auc": (B,), "curve": (B, steps + 1)}``; other arguments as ``deletion``.
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps, chunk_size=chunk_size)
    if blur_sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _pixel_curves(score_fn, x, attributions, targets, keys, _fill(canvas, x), steps=steps,
                         mode="insertion", blur_sigma=float(blur_sigma), chunk_size=chunk_size)


@functools.partial(jit, static_argnames=("score_fn", "patch", "regions", "order", "noise",
                                         "chunk_size"))
def _region_curves(score_fn, x, attributions, targets, keys, fill, *, patch, regions, order, noise,
                   chunk_size):
    score_fn = flat_batch(score_fn)
    n, h, w = attributions.shape
    gh, gw = h // patch, w // patch
    per_example, per_pass = plan(n, regions + 1, chunk_size)
    counts = np.arange(regions + 1, dtype=np.int32)

    def one(xi, ai, t, k, fi):
        score = ai.astype(jnp.float32).reshape(gh, patch, gw, patch).sum((1, 3)).ravel()
        tie_key = None if k is None else jax.random.fold_in(k, 1)
        order_idx = descending_order(score if order == "morf" else -score, tie_key)
        ranks = jnp.repeat(jnp.repeat(ranks_of(order_idx).reshape(gh, gw), patch, 0), patch, 1)
        end = (jax.random.uniform(jax.random.fold_in(k, 0), xi.shape, xi.dtype) if noise
               else jnp.broadcast_to(fi, xi.shape))
        return _curve(score_fn, xi, end, ranks, t, counts, per_pass)
    curves = over_examples(one, (x, attributions, targets, keys, fill), n, per_example)
    return {"aopc": (curves[:, :1] - curves).mean(-1), "curve": curves}


def region_perturbation(score_fn: ScoreFn, x, attributions, targets, *, order: str = "morf",
                        patch: int = 4, regions: int = 24, baseline="uniform",
                        key: Optional[jax.Array] = None, chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Region perturbation AOPC (Samek et al. 2017, arXiv:1509.06321), MoRF or LeRF order.

    The image is cut into non-overlapping ``patch`` x ``patch`` regions ranked by their summed
    attribution, most relevant first (``"morf"``: higher AOPC is better) or least relevant first
    (``"lerf"``: lower is better); the first ``regions`` of them are replaced one at a time by
    ``baseline``: ``"uniform"`` noise U[0, 1] (Samek's choice; needs ``key``) or a constant.
    AOPC = mean over k = 0..regions of (f(x) - f(x_k)) for the target score.
    With ``patch=1`` and ``baseline=0.0`` this is pixel flipping (Bach et al. 2015).
    Differs from Quantus's ``RegionPerturbation`` (patch 8 sliding, overlaps skipped, 100
    regions): a fixed grid (28 = 7 x 4), so every region is scored once; 24 of the 49 regions.

    Returns ``{"aopc": (B,), "curve": (B, regions + 1)}``.
    """
    check_inputs(x, attributions, targets)
    check_positive(patch=patch, regions=regions, chunk_size=chunk_size)
    h, w = np.shape(x)[1:3]
    if h % patch or w % patch:
        raise ValueError(f"patch {patch} must divide the image size {h}x{w}")
    if regions > (h // patch) * (w // patch):
        raise ValueError(f"regions must be <= {(h // patch) * (w // patch)} for patch {patch}, "
                         f"got {regions}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    noise = isinstance(baseline, str)
    if noise and baseline != "uniform":
        raise ValueError(f"baseline must be 'uniform' or a number, got {baseline!r}")
    keys = example_keys(key, np.shape(x)[0]) if noise or key is not None else None
    return _region_curves(score_fn, x, attributions, targets, keys,
                          _fill(0.0 if noise else baseline, x), patch=patch, regions=regions,
                          order=order, noise=noise, chunk_size=chunk_size)


@functools.partial(jit, static_argnames=("score_fn", "kind", "samples", "size", "chunk_size"))
def _sampled(score_fn, x, attributions, targets, keys, fill, *, kind, samples, size, chunk_size):
    """Per example: (sum of the attribution over each perturbation, f(x) - f(x_perturbed))."""
    score_fn = flat_batch(score_fn)
    n, h, w = attributions.shape
    per_example, per_pass = plan(n, samples + 1, chunk_size)

    def one(xi, ai, t, k, fi):
        f0 = score_fn(xi[None])[0, t]

        def pairs(idx):
            ks = jax.vmap(lambda i: jax.random.fold_in(k, i))(idx)
            if kind == "subset":  # Bhatt: a random subset of `size` pixels set to the baseline
                masks = jax.vmap(lambda kk: ranks_of(jax.random.permutation(kk, h * w)) < size)(ks)
                masks = masks.reshape(-1, h, w)
                inputs = jnp.where(masks[..., None], fi, xi[None])
                sums = (masks * ai).sum((1, 2))
            else:  # Yeh: perturbation I, input x - I, explanation term I . attribution
                if kind == "square":  # the pixels of a random size x size square removed (set to 0)
                    corner = jax.vmap(lambda kk: jax.random.randint(
                        kk, (2,), 0, jnp.array([h - size + 1, w - size + 1])))(ks)
                    rows, cols = jnp.arange(h), jnp.arange(w)
                    inside = lambda c: ((rows[:, None] >= c[0]) & (rows[:, None] < c[0] + size)
                                        & (cols[None] >= c[1]) & (cols[None] < c[1] + size))
                    noise = jax.vmap(inside)(corner)[..., None] * xi[None]
                else:  # "gaussian": I ~ N(0, size^2) per pixel
                    noise = jax.vmap(lambda kk: jax.random.normal(kk, xi.shape, xi.dtype))(ks) * size
                inputs = xi[None] - noise
                sums = (noise.sum(-1) * ai).sum((1, 2))
            return jnp.stack([sums, f0 - score_fn(inputs)[:, t]], -1)
        return chunked(pairs, samples, per_pass)
    return over_examples(one, (x, attributions.astype(jnp.float32), targets, keys, fill), n,
                         per_example)


def faithfulness_correlation(score_fn: ScoreFn, x, attributions, targets, *, key: jax.Array,
                             runs: int = 32, subset: int = 224, baseline: float = 0.0,
                             chunk_size: int = DEFAULT_CHUNK) -> jax.Array:
    """Faithfulness correlation (Bhatt et al. 2020, arXiv:2005.00631). Higher is better, in [-1, 1].

    ``runs`` times, a random subset of ``subset`` pixels is set to ``baseline``; the Pearson
    correlation, over the runs, between the attribution summed on the subset and the drop of the
    target score. Quantus's ``FaithfulnessCorrelation`` defaults: subset 224, black baseline,
    Pearson, the same here; ``runs`` is 32 instead of Quantus's 100 (the standard error of each
    image's correlation grows by ~1.8x; pass ``runs=100`` to match). The leaderboard passes the
    target logit as the score. Returns (B,).
    """
    check_inputs(x, attributions, targets)
    check_positive(runs=runs, subset=subset, chunk_size=chunk_size)
    if subset > np.prod(np.shape(x)[1:3]):
        raise ValueError(f"subset must be <= the number of pixels, got {subset}")
    pairs = _sampled(score_fn, x, attributions, targets, example_keys(key, np.shape(x)[0]),
                     _fill(baseline, x), kind="subset", samples=runs, size=subset,
                     chunk_size=chunk_size)
    return jax.vmap(lambda p: pearson(p[:, 0], p[:, 1]))(pairs)


def infidelity(score_fn: ScoreFn, x, attributions, targets, *, key: jax.Array, samples: int = 32,
               perturbation: str = "square", patch: int = 4, sigma: float = 0.1,
               chunk_size: int = DEFAULT_CHUNK) -> jax.Array:
    """Infidelity (Yeh et al. 2019, arXiv:1901.09392), scale-optimal and normalised. Lower is
    better, in [0, 1].

    For perturbations I, s = I . attr and d = f(x) - f(x - I) for the target score:
    infidelity = min_b E[(b s - d)^2] / E[d^2] = 1 - E[s d]^2 / (E[s^2] E[d^2]).
    ``perturbation``: ``"square"`` (default; Yeh's square removal, as Quantus's default: a random
    ``patch`` x ``patch`` square of the image set to 0, I = x on it) or ``"gaussian"`` (Yeh's
    noisy baseline, I ~ N(0, sigma^2) per pixel). Yeh's definition is E[(s - d)^2]; the optimal
    scale b (their code applies it too) makes maps of different units comparable, and dividing by
    E[d^2] makes images comparable; Quantus reports the raw squared error. Exact (0) for a linear
    score and its gradient map. The leaderboard passes the target logit. Returns (B,).
    """
    check_inputs(x, attributions, targets)
    check_positive(samples=samples, chunk_size=chunk_size)
    if perturbation not in ("square", "gaussian"):
        raise ValueError(f"unknown perturbation {perturbation!r}; choose 'square' or 'gaussian'")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    check_positive(patch=patch)
    if patch > min(np.shape(x)[1:3]):
        raise ValueError(f"patch must fit in the image, got {patch}")
    size = patch if perturbation == "square" else float(sigma)
    pairs = _sampled(score_fn, x, attributions, targets, example_keys(key, np.shape(x)[0]),
                     _fill(0.0, x), kind=perturbation, samples=samples, size=size,
                     chunk_size=chunk_size)
    s, d = pairs[..., 0], pairs[..., 1]
    sd, ss, dd = (s * d).mean(-1), (s * s).mean(-1), (d * d).mean(-1)
    explained = jnp.where(ss * dd > 0, sd * sd / jnp.where(ss * dd > 0, ss * dd, 1.0), 0.0)
    return jnp.where(dd > 0, jnp.clip(1.0 - explained, 0.0, 1.0), 0.0)
