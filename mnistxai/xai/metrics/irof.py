"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020): superpixels removed cumulatively in
order of their mean relevance; the area over the curve of the normalised target probability.

The superpixels come from scikit-image (SLIC, as Quantus, or Felzenszwalb), computed once per
image in NumPy outside jit, or are passed in (``segments=``: any integer label map, a fixed grid
included). On MNIST in [0, 1] SLIC's default compactness (10) outweighs the intensity differences
and its 100 requested segments come out as a 9 x 9 grid of 3 x 3 (at the right and bottom edges
3 x 4 or 4 x 4) squares: 81 segments, the same for every digit. The (example, segment count)
pairs go through the model in flat batches of ``chunk_size`` (``faithfulness._path_scores``); a
step whose segment already equals the baseline is the previous input again and is not evaluated.
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
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    descending_order,
    example_keys,
    ranks_of,
)
from mnistxai.xai.metrics.faithfulness import _path_scores
from mnistxai.xai.metrics.registry import Batch, register_metric

SEGMENTATIONS = ("slic", "felzenszwalb")
CURVE_POINTS = 21  # the leaderboard's curve: fractions 0, 0.05, ..., 1 of the segments removed


def superpixels(x, segmentation: str = "slic") -> np.ndarray:
    """int32 (B, H, W) superpixel labels 0..S-1 of float (B, H, W, C) images, by scikit-image's
    ``slic(x, start_label=0)`` or ``felzenszwalb(x)`` with their default parameters (as Quantus's
    ``get_superpixel_segments``). NumPy, outside jit."""
    from skimage.segmentation import felzenszwalb, slic

    if segmentation not in SEGMENTATIONS:
        raise InputError(
            f"unknown segmentation {segmentation!r}; choose one of {', '.join(SEGMENTATIONS)}"
        )
    images = np.asarray(x, np.float64)
    if segmentation == "slic":
        return np.stack([slic(xi, start_label=0) for xi in images]).astype(np.int32)
    return np.stack([felzenszwalb(xi) for xi in images]).astype(np.int32)


def _relabel(segments, shape) -> tuple[np.ndarray, int]:
    """Labels made 0..S_b-1 per image (any integers in), and the largest S_b."""
    s = np.asarray(segments)
    if s.shape != tuple(shape) or not np.issubdtype(s.dtype, np.integer):
        raise InputError(f"segments must be integer labels of shape {tuple(shape)}, got {s.shape}")
    out = np.stack([np.unique(si, return_inverse=True)[1].reshape(si.shape) for si in s])
    counts = out.reshape(len(out), -1).max(1) + 1
    if counts.min() < 2:
        raise InputError("every image needs at least 2 segments (Quantus asserts the same)")
    return out.astype(np.int32), int(counts.max())


@functools.partial(jit, static_argnames=("score_fn", "max_segments", "chunk_size"))
def _irof_curves(score_fn, x, attributions, targets, segments, keys, *, max_segments, chunk_size):
    n, h, w = attributions.shape
    a = attributions.astype(jnp.result_type(attributions.dtype, jnp.float32))

    def segment_ranks(ai, si, k):
        onehot = jax.nn.one_hot(si.ravel(), max_segments, dtype=ai.dtype)  # (H W, S)
        size = onehot.sum(0)
        mean = jnp.where(size > 0, ai.ravel() @ onehot / jnp.where(size > 0, size, 1), -jnp.inf)
        tie_key = None if k is None else streams.fold(k, "tie_break")
        return ranks_of(descending_order(mean, tie_key))[si], (size > 0).sum().astype(jnp.int32)

    ranks, count = jax.vmap(segment_ranks)(a, segments, keys)
    fill = jnp.broadcast_to(x.mean((1, 2), keepdims=True), x.shape)
    scores, evaluated = _path_scores(
        score_fn, x, fill, ranks, targets, np.arange(max_segments + 1), chunk_size
    )
    p0 = scores[:, :1]
    curve = scores / jnp.where(p0 != 0, p0, 1)
    points = jnp.arange(max_segments + 1)
    inside = points[None] <= count[:, None]
    last = jnp.take_along_axis(curve, count[:, None], 1)[:, 0]
    area = (jnp.where(inside, curve, 0).sum(1) - (curve[:, 0] + last) / 2) / count
    curve = jnp.where(inside, curve, last[:, None])  # each image's curve held past its own end
    return {"aoc": 1.0 - area, "curve": curve, "segments": count, "evaluated": evaluated}


def irof(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    segmentation: Literal["slic", "felzenszwalb"] = "slic",
    segments=None,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """IROF (Rieger & Hansen 2020, arXiv:2003.08747). Higher is better; at most 1 (1 - the
    normalised area), below 0 if removing segments raises the target's score.

    Each image is cut into superpixels (``segmentation``: scikit-image SLIC or Felzenszwalb with
    default parameters, computed in NumPy outside jit; or ``segments``, integer labels (B, H, W),
    e.g. a fixed grid, relabelled 0..S-1 per image), ranked by their mean attribution and
    replaced, most relevant first and cumulatively, by the image's mean value. With S segments,
    c_k = p(x_k) / p(x) after k of them are removed (c_0 = 1; pass softmax probabilities, as
    Quantus and the leaderboard do), and ``aoc = 1 - trapezoid area of c over k / S in [0, 1]``.

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); key: breaks ties between segment means at random (one key or (B,)
      keys; a constant map then gives a random order); None: by segment label.
    Returns:
      ``{"aoc": (B,), "curve": (B, S_max + 1), "segments": int32 (B,), "evaluated": int32
      (B,)}``: ``curve`` the normalised scores c_k, each image's held at its last value past its
      own S; ``evaluated`` the model passes per image (steps whose segment already equals the
      baseline are not run).

    Departures from Quantus 0.6's ``IROF``: its baseline "mean" is taken, at every step, over
    the whole current batch of already perturbed images (one number shared by the batch and
    drifting as segments are replaced); here the mean of each intact image, per channel. Its
    score is ``S - trapz(c_1..c_S, dx=1)``, not normalised and growing with the segment count;
    here divided by S with the intact point included: Quantus's value = S * aoc + (1 + c_1) / 2.
    Quantus then averages over the batch by default (``return_aggregate=True``); here one value
    per image. Ties: Quantus's ``np.argsort`` leaves them unspecified. Quantus requires more
    than one segment; so does this.
    """
    check_inputs(x, attributions, targets)
    check_positive(chunk_size=chunk_size)
    if segments is None:
        segments = superpixels(x, segmentation)
    segments, max_segments = _relabel(segments, np.shape(x)[:3])
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _irof_curves(
        score_fn,
        x,
        attributions,
        targets,
        jnp.asarray(segments),
        keys,
        max_segments=max_segments,
        chunk_size=int(chunk_size),
    )


def fraction_curve(curve, segments, points: int = CURVE_POINTS) -> jax.Array:
    """(B, points) ``irof``'s curves read at the fractions 0, 1/(points-1), ..., 1 of each image's
    own segments (linear interpolation): comparable across images and batches."""
    f = jnp.linspace(0.0, 1.0, points)
    return jax.vmap(lambda c, s: jnp.interp(f * s, jnp.arange(c.shape[0]), c))(curve, segments)


# ---- the leaderboard's entry (mnistxai.xai.metrics.registry) -------------------------------------


def _irof_shared(batch: Batch, segmentation: str = "slic") -> np.ndarray:
    return superpixels(batch.x, segmentation)  # the segments depend on the image only


@register_metric(
    "irof",
    category="faithfulness",
    options_of=irof,
    options=("segmentation",),
    shared=_irof_shared,
    default_set=False,  # one model pass per superpixel: 81 per digit with SLIC
    columns={
        "irof": (
            "higher",
            "IROF: area over the target probability (relative to the intact image's) as SLIC "
            "superpixels are replaced by the image mean, most relevant first (Rieger 2020)",
        )
    },
)
def _score_irof(batch: Batch, segmentation: str = "slic") -> dict:
    segments = batch.shared if batch.shared is not None else superpixels(batch.x, segmentation)
    r = irof(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        segments=segments,
        key=batch.keys,
        chunk_size=batch.chunk_size,
    )
    return {"irof": r["aoc"], "irof_curve": fraction_curve(r["curve"], r["segments"])}
