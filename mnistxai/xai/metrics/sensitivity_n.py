"""Sensitivity-n (Ancona et al. 2018): for subsets of n pixels drawn at random, does the
attribution summed over the subset track the output drop when the subset is removed?

The drops do not depend on the map: ``sensitivity_n_drops`` makes the model calls once, to score
every map of the same images (the leaderboard's ``shared``). The (example, n, subset) inputs go
through the model in flat batches of ``chunk_size``; a subset whose pixels all already equal the
baseline (black pixels under the black baseline: most subsets of one or a few MNIST pixels) leaves
the image unchanged, so its drop is exactly 0 and it is not evaluated.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets, over_active
from mnistxai.xai._inputs import IMAGE_SIZE, real
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
    example_keys,
    pearson,
)
from mnistxai.xai.metrics.faithfulness import _subset
from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.xai.metrics.selectivity import baseline_fill


def subset_sizes(pixels: int, sizes: int, max_fraction: float) -> tuple[int, ...]:
    """``sizes`` strictly increasing subset sizes from 1 to floor(max_fraction * pixels),
    geometrically spaced (Ancona et al. plot n on a log axis), each at least one above the
    previous."""
    top = int(max_fraction * pixels)
    if sizes > top:
        raise InputError(
            f"sizes must be <= {top} (max_fraction x {pixels} pixels) to be distinct, got {sizes}"
        )
    out: list[int] = []
    for i, g in enumerate(np.geomspace(1, top, sizes)):
        lo = out[-1] + 1 if out else 1  # room is left above for the sizes still to come
        out.append(min(max(int(round(g)), lo), top - (sizes - 1 - i)))
    return tuple(out)


def _subset_key(key, n):
    return jax.random.fold_in(key, n)  # each size its own subsets (not nested in the others)


@functools.partial(jit, static_argnames=("score_fn", "sizes", "runs", "chunk_size"))
def _sensitivity_drops(score_fn, x, targets, keys, fill, *, sizes, runs, chunk_size):
    """(B, len(sizes), runs): f(x) - f(x with the subset set to the baseline). The (example,
    size, subset) triples of every size run in one loop of flat batches, the size a traced index:
    subset (n, i) is the first n of the ``max(sizes)`` largest uniforms of its key (top_k orders
    ties by index, so these are exactly ``_subset``'s n indices)."""
    b, h, w, _ = x.shape
    pixels, per_example, top = h * w, len(sizes) * runs, max(sizes)
    f0 = chunked(lambda i: at_targets(score_fn(x[i]), targets[i]), b, chunk_size)
    flat_x = x.reshape(b, pixels, -1)
    changes = []  # does subset (n, i) touch a pixel not already at the baseline?
    for n in sizes:
        idx = jax.vmap(
            lambda k, n=n: jax.vmap(lambda i: _subset(_subset_key(k, n), i, pixels, n))(
                jnp.arange(runs)
            )
        )(keys)  # (B, runs, n)
        changes.append((flat_x[jnp.arange(b)[:, None, None], idx] != fill).any((2, 3)))
    changes = jnp.stack(changes, 1)  # (B, sizes, runs)
    size_of = jnp.asarray(sizes, jnp.int32)

    def drops(triples):
        ex, j, run = triples // per_example, (triples // runs) % len(sizes), triples % runs
        n = size_of[j]
        draw = lambda k, n, i: jax.random.uniform(
            jax.random.fold_in(_subset_key(k, n), i), (pixels,)
        )
        idx = jax.lax.top_k(jax.vmap(draw)(keys[ex], n, run), top)[1]  # (k, top)
        rows = jnp.arange(triples.shape[0])[:, None]
        mask = (
            jnp.zeros((triples.shape[0], pixels), bool)
            .at[rows, idx]
            .set(jnp.arange(top)[None] < n[:, None])
        )
        inputs = jnp.where(mask.reshape(-1, h, w, 1), fill[ex], x[ex])
        return f0[ex] - at_targets(score_fn(inputs), targets[ex])

    return over_active(drops, changes.reshape(-1), chunk_size).reshape(b, len(sizes), runs)


@functools.partial(jit, static_argnames=("sizes", "runs"))
def _sensitivity_sums(attributions, keys, *, sizes, runs):
    b, h, w = attributions.shape
    a = attributions.reshape(b, -1)
    a = a.astype(jnp.result_type(a.dtype, jnp.float32))

    def one(ai, k):
        per_size = [
            jax.vmap(lambda i, n=n: ai[_subset(_subset_key(k, n), i, h * w, n)].sum())(
                jnp.arange(runs)
            )
            for n in sizes
        ]
        return jnp.stack(per_size)

    return jax.vmap(one)(a, keys)  # (B, len(sizes), runs)


def _check(x, sizes, runs, max_fraction, chunk_size) -> tuple[int, ...]:
    check_positive(sizes=sizes, runs=runs, chunk_size=chunk_size)
    if runs < 2:
        raise InputError(f"runs must be >= 2 (a correlation needs two subsets), got {runs}")
    max_fraction = real(0.0, 1.0, open_lo=True)("max_fraction", max_fraction)
    return subset_sizes(int(np.prod(np.shape(x)[1:3])), int(sizes), max_fraction)


def sensitivity_n_drops(
    score_fn: ScoreFn,
    x,
    targets,
    *,
    key: jax.Array,
    sizes: int = 8,
    runs: int = 32,
    max_fraction: float = 0.8,
    baseline="black",
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """The model side of ``sensitivity_n``: (B, sizes, runs) drops of the target score for its
    random subsets. They do not depend on the map: pass them as ``drops=`` to score many maps of
    the same images with no model call."""
    check_inputs(x, None, targets)
    grid = _check(x, sizes, runs, max_fraction, chunk_size)
    fill = baseline_fill(x, baseline).astype(jnp.asarray(x).dtype)
    return _sensitivity_drops(
        score_fn,
        x,
        targets,
        example_keys(key, np.shape(x)[0]),
        fill,
        sizes=grid,
        runs=int(runs),
        chunk_size=int(chunk_size),
    )


def sensitivity_n(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    key: jax.Array,
    sizes: int = 8,
    runs: int = 32,
    max_fraction: float = 0.8,
    baseline="black",
    chunk_size: int = DEFAULT_CHUNK,
    drops=None,
) -> dict:
    """Sensitivity-n (Ancona, Ceolini, Öztireli & Gross 2018, arXiv:1711.06104). Higher is
    better, in [-1, 1].

    For each n of a grid of ``sizes`` subset sizes (geometric from 1 to ``max_fraction`` = 80% of
    the pixels, as Ancona et al.'s "from one to about 80%"; ``subset_sizes``; 1, 3, 6, 16, 40,
    100, 250, 627 on MNIST), ``runs`` subsets of n pixels are drawn uniformly at random and set
    to ``baseline`` (``"black"``: the image's minimum; or a number); the Pearson correlation over
    the subsets between the attribution summed on the subset and the drop f(x) - f(x_S) of the
    target score (the leaderboard passes the target logit). A map satisfies sensitivity-n when
    the two are equal for every subset of size n (correlation 1).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); key: the subsets (one key or (B,) keys; they depend only on the key,
      ``sizes``, ``runs`` and ``max_fraction``). drops: ``sensitivity_n_drops`` of the same
      arguments, to skip the model calls.
    Returns:
      ``{"correlation": (B,) the mean over n, "curve": (B, sizes) the correlation at each n,
      "sizes": int32 (sizes,) the grid}``. A correlation with a constant side (every subset on
      black pixels at n = 1, say, so every drop is 0) counts as 0 (scipy gives NaN).

    Departures from Quantus 0.6's ``SensitivityN``, which computes something else under the
    name: it removes pixels cumulatively in descending attribution order, one per step
    (``features_in_step=1``) up to 80% of them, and for each step n correlates, across the
    images of the batch (not across subsets of one image), the cumulative drop with the
    attribution of the one pixel removed at step n; it gives one correlation per n (the
    batch's curve; its default ``return_aggregate=True`` then takes their mean), no per-image
    value, and calls the model with softmax. Here Ancona et al.'s definition: random subsets,
    per image, on a grid of n, the mean over n as the score. The ``runs`` (32) subsets per n and
    the 8-point grid are this metric's choices (as few as keeps 256 model passes per image).
    """
    check_inputs(x, attributions, targets)
    grid = _check(x, sizes, runs, max_fraction, chunk_size)
    keys = example_keys(key, np.shape(x)[0])
    if drops is None:
        fill = baseline_fill(x, baseline).astype(jnp.asarray(x).dtype)
        drops = _sensitivity_drops(
            score_fn,
            x,
            targets,
            keys,
            fill,
            sizes=grid,
            runs=int(runs),
            chunk_size=int(chunk_size),
        )
    elif np.shape(drops) != (np.shape(x)[0], len(grid), runs):
        raise InputError(
            f"drops must have shape {(np.shape(x)[0], len(grid), runs)} (sensitivity_n_drops "
            f"with the same settings), got {np.shape(drops)}"
        )
    elif not bool(np.isfinite(np.asarray(drops)).all()):
        raise InputError("drops contains NaN or inf")
    sums = _sensitivity_sums(attributions, keys, sizes=grid, runs=int(runs))
    curve = jax.vmap(jax.vmap(pearson))(sums, jnp.asarray(drops).astype(sums.dtype))
    return {"correlation": curve.mean(-1), "curve": curve, "sizes": np.asarray(grid, np.int32)}


# ---- the leaderboard's entry (mnistxai.xai.metrics.registry) -------------------------------------


def _check_options(options):
    _check(np.zeros((1,) + IMAGE_SIZE + (1,)), options["sizes"], options["runs"], 0.8, 1)


def _shared(batch: Batch, **options):
    return sensitivity_n_drops(
        batch.logits, batch.x, batch.targets, key=batch.keys, chunk_size=batch.chunk_size, **options
    )


@register_metric(
    "sensitivity_n",
    category="faithfulness",
    options_of=sensitivity_n,
    options=("sizes", "runs"),
    check=_check_options,
    shared=_shared,
    default_set=False,  # sizes x runs = 256 model passes per image, fewer on black pixels
    columns={
        "sensitivity_n": (
            "higher",
            "Sensitivity-n: mean over subset sizes n of the correlation between the attribution "
            "summed on random n-pixel subsets and the target logit's drop (Ancona 2018)",
        )
    },
)
def _score_sensitivity_n(batch: Batch, **options) -> dict:
    r = sensitivity_n(
        batch.logits,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        drops=batch.shared,
        **options,
    )
    return {"sensitivity_n": r["correlation"], "sensitivity_n_curve": r["curve"]}
