"""Sufficiency (Dasgupta et al. 2022): do the images whose maps look alike get the same
prediction?

A metric of the whole batch: each image is scored against the other images of its batch (their
maps and predicted classes). The only model calls are one prediction per image, which do not
depend on the map (``sufficiency_predictions``: the leaderboard makes them once per batch of
images and shares them between methods).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
)
from mnistxai.xai.metrics.monotonicity import float_map
from mnistxai.xai.metrics.registry import Batch, register_metric


@functools.partial(jit, static_argnames=("score_fn", "chunk_size"))
def _predictions(score_fn, x, *, chunk_size):
    return chunked(lambda i: jnp.argmax(score_fn(x[i]), -1).astype(jnp.int32), len(x), chunk_size)


def sufficiency_predictions(score_fn: ScoreFn, x, *, chunk_size: int = DEFAULT_CHUNK):
    """The model side of ``sufficiency``: int32 (B,) predicted classes (argmax of ``score_fn``),
    ``chunk_size`` images a pass."""
    check_inputs(x)
    check_positive(chunk_size=chunk_size)
    return _predictions(score_fn, jnp.asarray(x), chunk_size=chunk_size)


def map_distances(attributions, absolute: bool = True) -> jax.Array:
    """(B, B) standardized Euclidean distances between the flattened maps, each coordinate
    divided by its standard deviation over the batch (coordinates constant over the batch left
    out), then divided by the largest distance (unless all are 0)."""
    n = attributions.shape[0]
    a = float_map(attributions).reshape(n, -1)
    a = jnp.abs(a) if absolute else a
    var = a.var(0)  # any factor common to all coordinates cancels in the division by the max
    z = jnp.where(var > 0, a / jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
    # row by row from the differences: no cancellation near the threshold, (B, pixels) memory
    dist = jax.lax.map(lambda zi: jnp.sqrt(((z - zi) ** 2).sum(-1)), z)
    top = dist.max()
    return jnp.where(top > 0, dist / jnp.where(top > 0, top, 1.0), dist)


@functools.partial(jit, static_argnames=("absolute",))
def _sufficiency(attributions, predictions, threshold, *, absolute):
    n = attributions.shape[0]
    near = (map_distances(attributions, absolute) <= threshold) & ~jnp.eye(n, dtype=bool)
    agree = near & (predictions[:, None] == predictions[None, :])
    count = near.sum(1)
    dtype = float_map(attributions).dtype
    score = jnp.where(count > 0, agree.sum(1) / jnp.maximum(count, 1), 0.0).astype(dtype)
    return {"sufficiency": score, "neighbours": count.astype(jnp.int32)}


def sufficiency(
    score_fn: ScoreFn,
    x,
    attributions,
    *,
    threshold: float = 0.6,
    absolute: bool = True,
    predictions=None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Sufficiency (Dasgupta, Frost & Moshkovitz 2022, "Framework for evaluating faithfulness of
    local explanations", ICML, arXiv:2202.00734). Higher is better, in [0, 1].

    An image's explanation "applies" to another image of the batch when their maps are within
    ``threshold`` of each other: standardized Euclidean distance of the |maps| (``absolute``,
    Quantus's ``abs=True``; each pixel divided by its standard deviation over the batch), divided
    by the batch's largest such distance (Quantus's ``seuclidean`` and ``normalise_by_max`` of
    the distance matrix, threshold 0.6). Image i scores the fraction of those other images
    (itself excluded) whose predicted class equals its own, and 0 when there are none (as
    Quantus). The targets play no part: predicted classes are compared.

    This is the per-example form of Dasgupta et al.'s local sufficiency with the batch as the
    sample of the data distribution, as Quantus 0.6 computes it: each value depends on the
    other images of the batch, so it is not the same for an image scored alone or in another
    batch (the leaderboard scores it within its batches of ``batch_size`` images; a batch of one
    scores 0).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``, used for predictions only (one pass per image);
      x: (B, H, W, C); attributions: (B, H, W); threshold: >= 0; predictions: int (B,) classes
        (``sufficiency_predictions``) to skip the model calls.
    Returns:
      ``{"sufficiency": (B,), "neighbours": int32 (B,)}``, the second the number of other
      images within the threshold.

    Departures from Quantus 0.6 ``Sufficiency``: a pixel constant over the batch (a corner that
    is 0 in every map) is left out of the distance; scipy's ``seuclidean`` divides 0 by 0 there,
    making every distance NaN and every score 0. Quantus's ``normalise=True`` (division of the
    maps by their batch max) cannot change a standardized distance and is not applied.
    """
    check_inputs(x, attributions)
    check_positive(chunk_size=chunk_size)
    threshold = real(0.0)("threshold", threshold)
    b = np.shape(x)[0]
    if predictions is None:
        predictions = _predictions(score_fn, jnp.asarray(x), chunk_size=chunk_size)
    else:
        p = np.asarray(predictions)
        if p.shape != (b,) or not np.issubdtype(p.dtype, np.integer):
            raise InputError(f"predictions must be {b} integers, got {p.dtype} {p.shape}")
    return _sufficiency(
        jnp.asarray(attributions), jnp.asarray(predictions), threshold, absolute=bool(absolute)
    )


def _sufficiency_shared(batch: Batch, **options):
    return sufficiency_predictions(batch.logits, batch.x, chunk_size=batch.chunk_size)


@register_metric(
    "sufficiency",
    category="faithfulness",
    options_of=sufficiency,
    options=("threshold",),
    checks={"threshold": real(0.0)},
    shared=_sufficiency_shared,
    # not in the default set: a batch-level metric, so its values change with --batch-size
    default_set=False,
    columns={
        "sufficiency": (
            "higher",
            "Sufficiency: share of the batch's images with a nearby map that get the same "
            "prediction (Dasgupta 2022)",
        )
    },
)
def _score_sufficiency(batch: Batch, **options) -> dict:
    r = sufficiency(
        batch.logits,
        batch.x,
        batch.maps,
        predictions=batch.shared,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"sufficiency": r["sufficiency"], "sufficiency_neighbours": r["neighbours"]}
