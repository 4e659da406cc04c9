"""ROAD, RemOve And Debias (Rong et al. 2022): removal curves whose removed pixels are imputed
from their neighbours instead of painted black.

Why it matters here: on MNIST a black fill is degenerate. Most pixels already are black, so most
steps of a black-fill deletion change nothing, and the few that do leave a sharp black hole whose
shape itself tells the model where the map pointed (Rong et al.'s "class information leakage").
Noisy linear imputation fills each removed pixel with the weighted mean of its 8 neighbours, solved
jointly over the removed set, plus a little Gaussian noise, so the curve measures the information
removed rather than the mask's outline.

The imputation is a sparse symmetric positive (semi)definite linear system, solved in JAX by
conjugate gradients on a masked 3 x 3 stencil operator (``linear_imputation``); the (example,
fraction) pairs of the whole batch are imputed and scored ``chunk_size`` at a time, fraction-major
so that the systems solved together are of similar size (the batched solve runs until its slowest
system converges).
"""

from __future__ import annotations

import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets
from mnistxai.xai._inputs import IMAGE_SIZE, positive_int, real
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
    descending_order,
    example_keys,
    ranks_of,
)
from mnistxai.xai.metrics.registry import Batch, register_metric

ORDERS = ("morf", "lerf")

# Rong et al.'s (and Quantus's noisy_linear_imputation) neighbour weights: (row, column, weight)
NEIGHBOURS = tuple(
    (dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


def _neighbour_sum(v: jax.Array) -> jax.Array:
    """sum_j w_ij v_j over the in-image 8-neighbours j of every pixel i of (k, H, W, C)."""
    h, w = v.shape[1:3]
    p = jnp.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(wt * p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx, wt in NEIGHBOURS)


def _conjugate_gradients(apply, b, tol, max_iter):
    """Solve apply(v) = b for a stack of independent systems: b (k, H, W, C), one system per
    (k, c), each stopped (frozen) once its largest residual entry is <= tol, so a system's
    solution does not depend on the others solved with it."""
    dot = lambda a, c: (a * c).sum((1, 2), keepdims=True)
    unsolved = lambda r: jnp.abs(r).max((1, 2), keepdims=True) > tol

    def cond(state):
        *_, active, it = state
        return (it < max_iter) & active.any()

    def body(state):
        v, r, p, rr, active, it = state
        ap = apply(p)
        pap = dot(p, ap)
        alpha = jnp.where(active & (pap > 0), rr / jnp.where(pap > 0, pap, 1), 0)
        v, r_new = v + alpha * p, r - alpha * ap
        rr_new = dot(r_new, r_new)
        beta = jnp.where(active & (rr > 0), rr_new / jnp.where(rr > 0, rr, 1), 0)
        r_new = jnp.where(active, r_new, r)
        p = jnp.where(active, r_new + beta * p, p)
        # the test for the next step is carried, not recomputed in cond: one reduction less
        return v, r_new, p, jnp.where(active, rr_new, rr), unsolved(r_new), it + 1

    init = (jnp.zeros_like(b), b, b, dot(b, b), unsolved(b), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, init)[0]


def linear_imputation(x, removed, *, tol: float = 1e-5, max_iter: int = 1000) -> jax.Array:
    """Rong et al.'s linear imputation, without the noise: (k, H, W, C) images ``x`` whose pixels
    where bool ``removed`` (k, H, W) holds are replaced by the solution of
    ``deg_i v_i = sum_j w_ij v_j`` (every removed pixel the weighted mean of its in-image
    8-neighbours, removed or kept; weights 1/6 direct, 1/12 diagonal; ``deg_i`` the sum of the
    weights of its in-image neighbours, 1 away from the border), each channel its own system.

    Solved by conjugate gradients to an absolute residual of ``tol`` per equation (``max_iter``
    caps the iterations; it is not reached on 28 x 28 images). A removed region touching no kept
    pixel (everything removed) has no data: it is imputed as 0 (Quantus's sparse solve is then
    singular). Traceable: call it inside jit."""
    m = removed[..., None].astype(x.dtype)
    deg = _neighbour_sum(jnp.ones((1,) + x.shape[1:], x.dtype))
    # every vector CG applies this to (b, the residuals, the directions) is 0 outside the
    # removed pixels, so the operator's inner mask m * v is v itself and is left out
    apply = lambda v: m * (deg * v - _neighbour_sum(v))
    v = _conjugate_gradients(apply, m * _neighbour_sum((1 - m) * x), tol, max_iter)
    return jnp.where(m > 0, v, x)


def removal_counts(pixels: int, steps: int) -> np.ndarray:
    """Pixels removed at each of the ``steps`` fractions (2k - 1) / (2 steps), k = 1..steps: the
    midpoints of ``steps`` equal bins of [0, 1], floored as Quantus's ``int(a_size * p / 100)``
    (steps = 50 gives its default percentages 1, 3, ..., 99 exactly)."""
    return (pixels * (2 * np.arange(1, steps + 1) - 1)) // (2 * steps)


@functools.partial(jit, static_argnames=("score_fn", "steps", "order", "chunk_size"))
def _road_curves(
    score_fn, x, attributions, targets, keys, noise, tol, max_iter, *, steps, order, chunk_size
):
    n, h, w = attributions.shape
    flat = attributions.reshape(n, -1)
    flat = flat.astype(jnp.result_type(flat.dtype, jnp.float32))
    flat = flat if order == "morf" else -flat

    def pixel_ranks(values, k):
        tie_key = None if k is None else streams.fold(k, "tie_break")
        return ranks_of(descending_order(values, tie_key)).reshape(h, w)

    ranks = jax.vmap(pixel_ranks)(flat, keys)  # keys None (an empty pytree): ties by index
    counts = jnp.asarray(removal_counts(h * w, steps))
    noise_keys = None if keys is None else streams.fold(keys, "road_noise")

    def scores(pairs):  # fraction-major: one chunk holds systems of (nearly) one size
        point, ex = pairs // n, pairs % n
        removed = ranks[ex] < counts[point][:, None, None]
        xi = x[ex]
        filled = linear_imputation(xi, removed, tol=tol, max_iter=max_iter)
        if noise_keys is not None:  # (noise 0 adds exact zeros)
            # drawn from the pixel count, not the fraction index: the same removal, the same input
            draw = lambda k, c: jax.random.normal(jax.random.fold_in(k, c), xi.shape[1:], x.dtype)
            filled = filled + noise * removed[..., None] * jax.vmap(draw)(
                noise_keys[ex], counts[point]
            )
        s = score_fn(filled)
        correct = (jnp.argmax(s, -1) == targets[ex]).astype(s.dtype)
        return jnp.stack([at_targets(s, targets[ex]), correct], -1)

    out = chunked(scores, steps * n, chunk_size).reshape(steps, n, 2).transpose(1, 0, 2)
    curve, accuracy = out[..., 0], out[..., 1]
    return {
        "auc": curve.mean(-1),
        "curve": curve,
        "accuracy_auc": accuracy.mean(-1),
        "accuracy": accuracy,
    }


def road(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    steps: int = 20,
    noise: float = 0.01,
    order: Literal["morf", "lerf"] = "morf",
    key: Optional[jax.Array] = None,
    tol: float = 1e-5,
    max_iter: int = 1000,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """ROAD, RemOve And Debias (Rong, Leemann et al. 2022, arXiv:2202.00449), MoRF order by
    default. Lower is better for MoRF (higher for LeRF); both scores in [0, 1].

    At each of ``steps`` fractions (2k - 1) / (2 steps) of the pixels, the most relevant ones
    (``"morf"``; ``"lerf"``: the least) are removed and filled by noisy linear imputation: the
    solution of the 8-neighbour weighted-mean system (``linear_imputation``) plus N(0, ``noise``^2)
    on each removed pixel (Quantus's default noise 0.01; the noise needs ``key``, drawn per
    example, and per removal count, so the curve is the same whatever the batching). Each point is
    scored on the imputed image: ``curve`` the target's score (pass softmax probabilities: the
    leaderboard does) and ``accuracy`` whether the prediction is still the target (1.0) or not
    (0.0), Rong et al.'s and Quantus's measure; ``auc`` and ``accuracy_auc`` are their means over
    the fractions (midpoint-rule areas over [0, 1]).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); steps: 20 fractions (2.5%, 7.5%, ..., 97.5%); 1 <= steps <= H * W.
      key: one key or (B,) keys: the noise, and random tie-breaking in the ranking (None with
        ``noise=0``: ties by pixel index).
      tol, max_iter: the imputation's conjugate-gradient tolerance (largest absolute residual of
        a stencil equation, pixel units) and iteration cap.
    Returns:
      ``{"auc": (B,), "curve": (B, steps), "accuracy_auc": (B,), "accuracy": (B, steps)}``.

    Departures from Quantus 0.6's ``ROAD``: 20 fractions instead of its 50 (1%, 3%, ..., 99%;
    ``steps=50`` gives exactly those); Quantus returns only the accuracy curve, averaged over the
    dataset, with no area, and reads the prediction of each example against its label (here: the
    target given, which the leaderboard sets to the explained class); the per-image probability
    curve and both means are additions. Quantus solves the system with a sparse direct solver
    (scipy ``spsolve``); here conjugate gradients to ``tol`` (the same solution to ~1e-5; the
    noise is 1e-2). Ties: ``key`` breaks them at random (Quantus: ``np.argsort``, unspecified).
    Quantus draws fresh NumPy noise on each call; here it is keyed. No evaluation is skipped:
    every point's input differs (fresh imputation and noise).
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps, max_iter=max_iter, chunk_size=chunk_size)
    h, w = np.shape(x)[1:3]
    if steps > h * w:
        raise InputError(f"steps must be <= the number of pixels {h * w}, got {steps}")
    if order not in ORDERS:
        raise InputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    noise = real(0.0)("noise", noise)
    tol = real(0.0, open_lo=True)("tol", tol)
    keys = None if key is None and noise == 0 else example_keys(key, np.shape(x)[0])
    return _road_curves(
        score_fn,
        x,
        attributions,
        targets,
        keys,
        jnp.asarray(noise, jnp.asarray(x).dtype),
        jnp.asarray(tol, jnp.asarray(x).dtype),
        jnp.asarray(max_iter, jnp.int32),
        steps=int(steps),
        order=order,
        chunk_size=int(chunk_size),
    )


# ---- the leaderboard's entry (mnistxai.xai.metrics.registry) -------------------------------------


def _check(options):
    positive_int(1, IMAGE_SIZE[0] * IMAGE_SIZE[1])("steps", options["steps"])
    real(0.0)("noise", options["noise"])


@register_metric(
    "road",
    category="faithfulness",
    options_of=road,
    options=("steps", "noise"),
    check=_check,
    default_set=False,  # one conjugate-gradient solve per point, beside the 20 model passes
    columns={
        "road_accuracy": (
            "lower",
            "ROAD, most relevant first: mean over removal fractions of the prediction staying the "
            "target, noisy linear imputation (Rong 2022)",
        ),
        "road_probability": (
            "lower",
            "ROAD, most relevant first: mean target probability over removal fractions (Rong 2022)",
        ),
    },
)
def _score_road(batch: Batch, **options) -> dict:
    r = road(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {
        "road_accuracy": r["accuracy_auc"],
        "road_probability": r["auc"],
        "road_curve": r["curve"],
        "road_accuracy_curve": r["accuracy"],
    }
