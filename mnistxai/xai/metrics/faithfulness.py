"""Faithfulness: does removing what a map calls important change the model's output?

Deletion and insertion (Petsiuk et al. 2018), region perturbation / pixel flipping with MoRF and
LeRF orders (Bach et al. 2015; Samek et al. 2017), faithfulness correlation (Bhatt et al. 2020) and
infidelity (Yeh et al. 2019). The perturbed inputs of the whole batch (examples x curve points,
random subsets or noise samples) go through the model as flat batches of ``chunk_size``, so
memory is bounded whatever the batch or step count, and the model never runs vmapped (about 2x
slower on XLA:CPU, see ``over_groups``). Two exact savings: a curve point that changes no pixel (a
deletion step that removes only black pixels) is not evaluated, and the drops of faithfulness
correlation and infidelity, which do not depend on the map, can be computed once
(``faithfulness_drops``, ``infidelity_drops``) and shared by every map of the same images.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets, over_active
from mnistxai.xai._inputs import IMAGE_SIZE
from mnistxai.xai._core import blur  # Gaussian, renormalised at the border
from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
    descending_order,
    example_keys,
    over_examples,
    pearson,
    plan,
    ranks_of,
)
from mnistxai.util.errors import InputError

ORDERS = ("morf", "lerf")


def trapezoid_auc(curve: jax.Array) -> jax.Array:
    """Area under (..., L+1) curves sampled at fractions 0, 1/L, ..., 1 (RISE's ``auc``)."""
    return (curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2) / (curve.shape[-1] - 1)


def _path_scores(score_fn, start, end, ranks, targets, counts, chunk_size):
    """Target scores along B paths: at point s, the features of rank < counts[s] come from
    ``end`` and the others from ``start`` (B, H, W, C); ``ranks`` int (B, H, W).

    Exact shortcut: a point whose newly switched features are equal in ``start`` and ``end``
    (a deletion step that removes only black pixels) is the previous input again, so it is not
    evaluated and takes the previous score. The other (example, point) pairs of the whole batch
    run ``chunk_size`` at a time. Returns (scores (B, L), points evaluated int32 (B,)).
    """
    b, length = ranks.shape[0], counts.shape[0]
    counts = jnp.asarray(counts)
    differs = (start != end).any(-1)
    step = jnp.searchsorted(counts, ranks, side="right")  # the point where a feature switches
    rows = jnp.broadcast_to(jnp.arange(b)[:, None, None], ranks.shape)
    changed = jnp.zeros((b, length), bool).at[rows, step].max(differs, mode="drop")
    changed = changed.at[:, 0].set(True)

    def scores(pair):
        ex, point = pair // length, pair % length
        mask = ranks[ex] < counts[point][:, None, None]
        inputs = jnp.where(mask[..., None], end[ex], start[ex])
        return at_targets(score_fn(inputs), targets[ex])

    raw = over_active(scores, changed.reshape(-1), chunk_size).reshape(b, length)
    last = jax.lax.cummax(jnp.where(changed, jnp.arange(length), 0), axis=1)
    return jnp.take_along_axis(raw, last, 1), changed.sum(1).astype(jnp.int32)


def _step_counts(n_features: int, steps: int) -> np.ndarray:
    return np.round(np.linspace(0, n_features, steps + 1)).astype(np.int32)


@functools.partial(jit, static_argnames=("score_fn", "steps", "mode", "blur_sigma", "chunk_size"))
def _pixel_curves(
    score_fn, x, attributions, targets, keys, fill, *, steps, mode, blur_sigma, chunk_size
):
    n, h, w = attributions.shape
    flat = attributions.reshape(n, -1).astype(jnp.float32)
    order = jax.vmap(descending_order)(flat, keys)  # keys None (no leaves): ties by index
    ranks = jax.vmap(ranks_of)(order).reshape(n, h, w)
    fill = jnp.broadcast_to(fill, x.shape)
    if mode == "deletion":
        start, end = x, fill
    else:
        start, end = (jax.vmap(lambda xi: blur(xi, blur_sigma))(x) if blur_sigma > 0 else fill), x
    curves, evaluated = _path_scores(
        score_fn, start, end, ranks, targets, _step_counts(h * w, steps), chunk_size
    )
    return {"auc": trapezoid_auc(curves), "curve": curves, "evaluated": evaluated}


def _fill(value, x):
    return jnp.broadcast_to(jnp.asarray(value, x.dtype), x.shape[:1] + (1, 1, x.shape[-1]))


def deletion(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    steps: int = 16,
    baseline: float = 0.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Deletion AUC (Petsiuk et al. 2018, RISE, arXiv:1806.07421). Lower is better.

    Pixels are set to ``baseline`` (0 = black; RISE's substrate is zero on mean/std-normalised
    ImageNet inputs, i.e. the mean colour, the nearest thing to neutral there) in descending order
    of
    the signed attribution, ``784 / steps`` at a time; the curve is the target's score after each
    step (steps + 1 points, the first on the intact image) and ``auc`` its trapezoid area with the
    x axis scaled to [0, 1], as RISE's code. Pass softmax probabilities as ``score_fn`` (RISE does).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)`` scores; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); steps: 16 (RISE uses 224 px per step on 224x224 images: 224 steps).
      key: breaks ties in the ranking uniformly at random (one key or (B,) keys); None breaks them
        by pixel index (a stable sort; Quantus's ``np.argsort`` is not stable, so its tie order
        is unspecified). A constant map with a key gives the random-order curve.
    Returns:
      ``{"auc": (B,), "curve": (B, steps + 1), "evaluated": int32 (B,)}``, the last the number of
      curve points run through the model: a step that removes only pixels already equal to
      ``baseline`` leaves the image as it was, and takes the previous point's score.
    Quantus has no deletion/insertion metric. With ``steps=784``, ``curve[:, 1:]`` is Quantus
    0.6's ``PixelFlipping`` curve (one pixel a step, black baseline, softmax scores; ties may be
    ordered differently, see ``key``); its ``return_auc_per_sample`` is ``np.trapz(curve[:, 1:])``
    with dx = 1: no intact-image point and no [0, 1] scaling.
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps, chunk_size=chunk_size)
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _pixel_curves(
        score_fn,
        x,
        attributions,
        targets,
        keys,
        _fill(baseline, x),
        steps=steps,
        mode="deletion",
        blur_sigma=0.0,
        chunk_size=chunk_size,
    )


def insertion(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    steps: int = 16,
    canvas: float = 0.0,
    blur_sigma: float = 0.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Insertion AUC (Petsiuk et al. 2018, RISE). Higher is better.

    Starts from a canvas and puts the image's pixels back in descending attribution order; AUC of
    the target's score as in ``deletion``. The canvas is the constant ``canvas`` (default 0: black,
    MNIST's own background) or, with ``blur_sigma > 0``, the image blurred by that many pixels.
    Differs from RISE, whose canvas is always a blurred image (ImageNet has no neutral colour);
    on MNIST a blurred digit still shows its class, so every map would score alike.

    Returns ``{"auc": (B,), "curve": (B, steps + 1), "evaluated": (B,)}``; other arguments and
    the skipped steps (pixels equal to the canvas) as ``deletion``.
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps, chunk_size=chunk_size)
    if blur_sigma < 0:
        raise InputError(f"blur_sigma must be >= 0, got {blur_sigma}")
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _pixel_curves(
        score_fn,
        x,
        attributions,
        targets,
        keys,
        _fill(canvas, x),
        steps=steps,
        mode="insertion",
        blur_sigma=float(blur_sigma),
        chunk_size=chunk_size,
    )


@functools.partial(
    jit, static_argnames=("score_fn", "patch", "regions", "order", "noise", "chunk_size")
)
def _region_curves(
    score_fn, x, attributions, targets, keys, fill, *, patch, regions, order, noise, chunk_size
):
    n, h, w = attributions.shape
    gh, gw = h // patch, w // patch

    def region_ranks(ai, k):
        score = ai.astype(jnp.float32).reshape(gh, patch, gw, patch).sum((1, 3)).ravel()
        tie_key = None if k is None else streams.fold(k, "tie_break")
        ranks = ranks_of(descending_order(score if order == "morf" else -score, tie_key))
        return jnp.repeat(jnp.repeat(ranks.reshape(gh, gw), patch, 0), patch, 1)

    ranks = jax.vmap(region_ranks)(attributions, keys)  # keys may be None (an empty pytree)
    uniform = lambda k, xi: jax.random.uniform(streams.fold(k, "region_noise"), xi.shape, xi.dtype)
    end = jax.vmap(uniform)(keys, x) if noise else jnp.broadcast_to(fill, x.shape)
    curves, evaluated = _path_scores(
        score_fn, x, end, ranks, targets, np.arange(regions + 1, dtype=np.int32), chunk_size
    )
    return {"aopc": (curves[:, :1] - curves).mean(-1), "curve": curves, "evaluated": evaluated}


def region_perturbation(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    order: str = "morf",
    patch: int = 4,
    regions: int = 24,
    baseline="uniform",
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Region perturbation AOPC (Samek et al. 2017, arXiv:1509.06321), MoRF or LeRF order.

    The image is cut into non-overlapping ``patch`` x ``patch`` regions ranked by their summed
    attribution, most relevant first (``"morf"``: higher AOPC is better) or least relevant first
    (``"lerf"``: lower is better); the first ``regions`` of them are replaced one at a time by
    ``baseline``: ``"uniform"`` noise U[0, 1] (Samek's choice; needs ``key``) or a constant.
    AOPC = mean over k = 0..regions of (f(x) - f(x_k)) for the target score, as Samek et al.
    (the k = 0 term is 0). With ``patch=1`` and ``baseline=0.0`` this is pixel flipping (Bach et
    al. 2015). Quantus 0.6's ``RegionPerturbation`` also uses a fixed grid of non-overlapping
    blocks, but 8 x 8 (28 px padded to 32: 16 blocks), a black baseline and softmax scores, and
    returns the drops f(x) - f(x_k) for k = 1..min(100, blocks) with no AOPC: their mean is this
    AOPC x (regions + 1) / regions. Here: 4 x 4 regions (28 = 7 x 4), 24 of the 49.

    Returns ``{"aopc": (B,), "curve": (B, regions + 1), "evaluated": (B,)}`` (regions already
    equal to a constant baseline are skipped, as in ``deletion``).
    """
    check_inputs(x, attributions, targets)
    check_positive(patch=patch, regions=regions, chunk_size=chunk_size)
    h, w = np.shape(x)[1:3]
    if h % patch or w % patch:
        raise InputError(f"patch {patch} must divide the image size {h}x{w}")
    if regions > (h // patch) * (w // patch):
        raise InputError(
            f"regions must be <= {(h // patch) * (w // patch)} for patch {patch}, got {regions}"
        )
    if order not in ORDERS:
        raise InputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    noise = isinstance(baseline, str)
    if noise and baseline != "uniform":
        raise InputError(f"baseline must be 'uniform' or a number, got {baseline!r}")
    keys = example_keys(key, np.shape(x)[0]) if noise or key is not None else None
    return _region_curves(
        score_fn,
        x,
        attributions,
        targets,
        keys,
        _fill(0.0 if noise else baseline, x),
        patch=patch,
        regions=regions,
        order=order,
        noise=noise,
        chunk_size=chunk_size,
    )


def _subset(key, i, pixels: int, size: int) -> jax.Array:
    """The flat indices (size,) of subset ``i``: uniformly random, drawn from fold_in(key, i).
    (The ``size`` largest of ``pixels`` uniform floats: a top-k, ~3x cheaper than a permutation
    on XLA:CPU; a tie at the cut, ~1e-4 per subset, goes to the lower index.)"""
    return jax.lax.top_k(jax.random.uniform(jax.random.fold_in(key, i), (pixels,)), size)[1]


def _perturbation(kind, size, xi, fi, key, i):
    """Perturbation ``i`` of one example (H, W, C), drawn from fold_in(key, i): (the weights
    (H, W) the attribution is summed with, the perturbed input (H, W, C))."""
    h, w = xi.shape[:2]
    if kind == "subset":  # Bhatt: a random subset of `size` pixels set to the baseline
        mask = jnp.zeros(h * w, bool).at[_subset(key, i, h * w, size)].set(True).reshape(h, w)
        return mask.astype(xi.dtype), jnp.where(mask[..., None], fi, xi)
    k = jax.random.fold_in(key, i)
    # Yeh: perturbation I, input x - I, explanation term I . attribution
    if kind == "square":  # the pixels of a random size x size square removed (set to 0)
        corner = jax.random.randint(k, (2,), 0, jnp.array([h - size + 1, w - size + 1]))
        rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None]
        inside = (
            (rows >= corner[0])
            & (rows < corner[0] + size)
            & (cols >= corner[1])
            & (cols < corner[1] + size)
        )
        noise = inside[..., None] * xi
    else:  # "gaussian": I ~ N(0, size^2) per pixel
        noise = jax.random.normal(k, xi.shape, xi.dtype) * size
    return noise.sum(-1), xi - noise


@functools.partial(jit, static_argnames=("score_fn", "kind", "samples", "size", "chunk_size"))
def _drops(score_fn, x, targets, keys, fill, *, kind, samples, size, chunk_size):
    """(B, samples): f(x) - f(perturbed x) of the target, (example, sample) pairs as flat
    batches. A perturbation that changes no pixel (a square on MNIST's black background) drops
    exactly 0: the two forward passes, made in batches of other shapes or on other devices, can
    differ by float rounding, and infidelity's E[d^2] > 0 test would turn that noise into 1."""
    n = x.shape[0]
    f0 = chunked(lambda i: at_targets(score_fn(x[i]), targets[i]), n, chunk_size)

    def drops(pair):
        ex, i = pair // samples, pair % samples
        perturb = functools.partial(_perturbation, kind, size)
        _, inputs = jax.vmap(perturb)(x[ex], fill[ex], keys[ex], i)
        unchanged = jnp.all(inputs == x[ex], axis=tuple(range(1, inputs.ndim)))
        return jnp.where(unchanged, 0.0, f0[ex] - at_targets(score_fn(inputs), targets[ex]))

    return chunked(drops, n * samples, chunk_size).reshape(n, samples)


@functools.partial(jit, static_argnames=("kind", "samples", "size", "chunk_size"))
def _sums(x, attributions, keys, fill, *, kind, samples, size, chunk_size):
    """(B, samples): the attribution summed with each perturbation's weights (no model calls)."""

    def one(xi, ai, k, fi):
        if kind == "subset":  # a gather of the subset's pixels: no (samples, H, W) masks
            idx = jax.vmap(lambda i: _subset(k, i, ai.size, size))(jnp.arange(samples))
            return ai.ravel()[idx].sum(-1)
        weights, _ = jax.vmap(lambda i: _perturbation(kind, size, xi, fi, k, i))(
            jnp.arange(samples)
        )
        return (weights * ai).sum((1, 2))

    per_example = plan(x.shape[0], samples, chunk_size)[0]
    return over_examples(
        one, (x, attributions.astype(jnp.float32), keys, fill), x.shape[0], per_example
    )


def _check_drops(drops, b: int, samples: int, producer: str):
    if np.shape(drops) != (b, samples):
        raise InputError(
            f"drops must have shape ({b}, {samples}) ({producer} with the same "
            f"settings), got {np.shape(drops)}"
        )
    if not bool(np.isfinite(np.asarray(drops)).all()):
        raise InputError("drops contains NaN or inf")
    return jnp.asarray(drops, jnp.float32)


def _check_subset(x, runs, subset, chunk_size):
    check_positive(runs=runs, subset=subset, chunk_size=chunk_size)
    if subset > np.prod(np.shape(x)[1:3]):
        raise InputError(f"subset must be <= the number of pixels, got {subset}")


def faithfulness_drops(
    score_fn: ScoreFn,
    x,
    targets,
    *,
    key: jax.Array,
    runs: int = 32,
    subset: int = 224,
    baseline: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """The model side of ``faithfulness_correlation``: (B, runs) drops f(x) - f(x_S) of the target
    score for its random subsets S. They do not depend on the map: compute them once to score many
    maps of the same images (the leaderboard does) by passing ``drops=`` to the metric."""
    check_inputs(x, None, targets)
    _check_subset(x, runs, subset, chunk_size)
    return _drops(
        score_fn,
        x,
        targets,
        example_keys(key, np.shape(x)[0]),
        _fill(baseline, x),
        kind="subset",
        samples=runs,
        size=subset,
        chunk_size=chunk_size,
    )


def faithfulness_correlation(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    key: jax.Array,
    runs: int = 32,
    subset: int = 224,
    baseline: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
    drops=None,
) -> jax.Array:
    """Faithfulness correlation (Bhatt et al. 2020, arXiv:2005.00631). Higher is better, in [-1, 1].

    ``runs`` times, a random subset of ``subset`` pixels is set to ``baseline``; the Pearson
    correlation, over the runs, between the attribution summed on the subset and the drop of the
    target score. Quantus's ``FaithfulnessCorrelation`` defaults: subset 224, black baseline,
    Pearson, the same here; ``runs`` is 32 instead of Quantus's 100 (the standard error of each
    image's correlation grows by ~1.8x; pass ``runs=100`` to match). The leaderboard passes the
    target logit as the score. ``drops``: ``faithfulness_drops`` of the same arguments, to skip
    the model calls (the subsets depend only on ``key``, ``runs`` and ``subset``). Returns (B,).
    """
    check_inputs(x, attributions, targets)
    _check_subset(x, runs, subset, chunk_size)
    keys, fill = example_keys(key, np.shape(x)[0]), _fill(baseline, x)
    if drops is None:
        drops = _drops(
            score_fn,
            x,
            targets,
            keys,
            fill,
            kind="subset",
            samples=runs,
            size=subset,
            chunk_size=chunk_size,
        )
    else:
        drops = _check_drops(drops, np.shape(x)[0], runs, "faithfulness_drops")
    sums = _sums(
        x, attributions, keys, fill, kind="subset", samples=runs, size=subset, chunk_size=chunk_size
    )
    return jax.vmap(pearson)(sums, drops)


def _infidelity_size(x, samples, perturbation, patch, sigma, chunk_size):
    check_positive(samples=samples, chunk_size=chunk_size)
    if perturbation not in ("square", "gaussian"):
        raise InputError(f"unknown perturbation {perturbation!r}; choose 'square' or 'gaussian'")
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    check_positive(patch=patch)
    if patch > min(np.shape(x)[1:3]):
        raise InputError(f"patch must fit in the image, got {patch}")
    return patch if perturbation == "square" else float(sigma)


def infidelity_drops(
    score_fn: ScoreFn,
    x,
    targets,
    *,
    key: jax.Array,
    samples: int = 16,
    perturbation: str = "square",
    patch: int = 4,
    sigma: float = 0.1,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """The model side of ``infidelity``: (B, samples) drops f(x) - f(x - I) of the target score,
    independent of the map (see ``faithfulness_drops``)."""
    check_inputs(x, None, targets)
    size = _infidelity_size(x, samples, perturbation, patch, sigma, chunk_size)
    return _drops(
        score_fn,
        x,
        targets,
        example_keys(key, np.shape(x)[0]),
        _fill(0.0, x),
        kind=perturbation,
        samples=samples,
        size=size,
        chunk_size=chunk_size,
    )


def infidelity(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    key: jax.Array,
    samples: int = 16,
    perturbation: str = "square",
    patch: int = 4,
    sigma: float = 0.1,
    chunk_size: int = DEFAULT_CHUNK,
    drops=None,
) -> jax.Array:
    """Infidelity (Yeh et al. 2019, arXiv:1901.09392), scale-optimal and normalised. Lower is
    better, in [0, 1].

    For perturbations I, s = I . attr and d = f(x) - f(x - I) for the target score:
    infidelity = min_b E[(b s - d)^2] / E[d^2] = 1 - E[s d]^2 / (E[s^2] E[d^2]).
    ``perturbation``: ``"square"`` (default; Yeh's square removal: a random ``patch`` x ``patch``
    square of the image set to 0, I = x on it) or ``"gaussian"`` (Yeh's noisy baseline,
    I ~ N(0, sigma^2) per pixel). Yeh's definition is E[(s - d)^2]; the optimal scale b (their
    code applies it too) makes maps of different units comparable, and dividing by E[d^2] makes
    images comparable. Quantus 0.6's ``Infidelity`` differs: by default it visits every block of
    a fixed 4 x 4 grid in raster order, blackening them cumulatively, and reports the raw mean
    squared error between the drops and the attribution sums (no scale fitting, no division). Exact
    (0) for a linear
    score and its gradient map. The leaderboard passes the target logit. ``drops``:
    ``infidelity_drops`` of the same arguments, to skip the model calls. Returns (B,).
    """
    check_inputs(x, attributions, targets)
    size = _infidelity_size(x, samples, perturbation, patch, sigma, chunk_size)
    keys, fill = example_keys(key, np.shape(x)[0]), _fill(0.0, x)
    if drops is None:
        d = _drops(
            score_fn,
            x,
            targets,
            keys,
            fill,
            kind=perturbation,
            samples=samples,
            size=size,
            chunk_size=chunk_size,
        )
    else:
        d = _check_drops(drops, np.shape(x)[0], samples, "infidelity_drops")
    s = _sums(
        x,
        attributions,
        keys,
        fill,
        kind=perturbation,
        samples=samples,
        size=size,
        chunk_size=chunk_size,
    )
    sd, ss, dd = (s * d).mean(-1), (s * s).mean(-1), (d * d).mean(-1)
    explained = jnp.where(ss * dd > 0, sd * sd / jnp.where(ss * dd > 0, ss * dd, 1.0), 0.0)
    return jnp.where(dd > 0, jnp.clip(1.0 - explained, 0.0, 1.0), 0.0)


# ---- the leaderboard's entries (mnistxai.xai.metrics.registry) ----------------------------------


@register_metric(
    "deletion",
    category="faithfulness",
    options_of=deletion,
    options=("steps",),
    columns={"deletion_auc": ("lower", "Deletion AUC of the target probability (Petsiuk 2018)")},
)
def _score_deletion(batch: Batch, **options) -> dict:
    r = deletion(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"deletion_auc": r["auc"], "deletion_curve": r["curve"]}


@register_metric(
    "insertion",
    category="faithfulness",
    options_of=insertion,
    options=("steps",),
    columns={"insertion_auc": ("higher", "Insertion AUC from a black canvas (Petsiuk 2018)")},
)
def _score_insertion(batch: Batch, **options) -> dict:
    r = insertion(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"insertion_auc": r["auc"], "insertion_curve": r["curve"]}


def _on_the_image(**limits):
    """A metric ``check``: option <= its limit, and ``patch`` divides the image if asked."""
    h, w = IMAGE_SIZE

    def check(options):
        if limits.get("tiles") and (h % options["patch"] or w % options["patch"]):
            raise InputError(f"patch {options['patch']} must divide the image size {h}x{w}")
        for name, limit in limits.items():
            bound = limit(options) if callable(limit) else limit
            if name != "tiles" and options[name] > bound:
                raise InputError(f"{name} must be <= {bound}, got {options[name]}")

    return check


@register_metric(
    "region_perturbation",
    category="faithfulness",
    options_of=region_perturbation,
    options=("patch", "regions"),
    check=_on_the_image(tiles=True, regions=lambda o: (IMAGE_SIZE[0] // o["patch"]) ** 2),
    columns={
        "morf_aopc": ("higher", "Region perturbation AOPC, most relevant first (Samek 2017)"),
        "lerf_aopc": ("lower", "Region perturbation AOPC, least relevant first (Samek 2017)"),
    },
)
def _score_region_perturbation(batch: Batch, **options) -> dict:
    args = (batch.probabilities, batch.x, batch.maps, batch.targets)
    kw = dict(key=batch.keys, chunk_size=batch.chunk_size, **options)
    return {
        f"{order}_aopc": region_perturbation(*args, order=order, **kw)["aopc"] for order in ORDERS
    }


def _faithfulness_shared(batch: Batch, **options):
    return faithfulness_drops(
        batch.logits, batch.x, batch.targets, key=batch.keys, chunk_size=batch.chunk_size, **options
    )


@register_metric(
    "faithfulness_correlation",
    category="faithfulness",
    options_of=faithfulness_correlation,
    options=("runs", "subset"),
    check=_on_the_image(subset=IMAGE_SIZE[0] * IMAGE_SIZE[1]),
    shared=_faithfulness_shared,
    columns={
        "faithfulness_corr": ("higher", "Faithfulness correlation, target logit (Bhatt 2020)")
    },
)
def _score_faithfulness_correlation(batch: Batch, **options) -> dict:
    return {
        "faithfulness_corr": faithfulness_correlation(
            batch.logits,
            batch.x,
            batch.maps,
            batch.targets,
            key=batch.keys,
            chunk_size=batch.chunk_size,
            drops=batch.shared,
            **options,
        )
    }


def _infidelity_shared(batch: Batch, **options):
    return infidelity_drops(
        batch.logits, batch.x, batch.targets, key=batch.keys, chunk_size=batch.chunk_size, **options
    )


@register_metric(
    "infidelity",
    category="faithfulness",
    options_of=infidelity,
    options=("samples", "patch"),
    check=_on_the_image(patch=min(IMAGE_SIZE)),
    shared=_infidelity_shared,
    columns={
        "infidelity": (
            "lower",
            "Scale-optimal normalised infidelity, square removal, target logit (Yeh 2019)",
        )
    },
)
def _score_infidelity(batch: Batch, **options) -> dict:
    return {
        "infidelity": infidelity(
            batch.logits,
            batch.x,
            batch.maps,
            batch.targets,
            key=batch.keys,
            chunk_size=batch.chunk_size,
            drops=batch.shared,
            **options,
        )
    }
