"""Monotonicity (Arya et al. 2019): does the target's probability only rise as features are added
back onto a baseline, least important first?

The insertion path is the one ``deletion``/``insertion`` use (``faithfulness._path_scores``): the
(example, step) pairs of the whole batch go through the model as flat batches of ``chunk_size``,
and a step that adds only pixels equal to the baseline (black pixels onto a black canvas: most of
an MNIST digit) is the previous input again, so it is not evaluated.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import IMAGE_SIZE
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


def check_features_in_step(x, features_in_step) -> int:
    """``features_in_step`` as an int that divides the number of pixels (``InputError``)."""
    check_positive(features_in_step=features_in_step)
    pixels = int(np.prod(np.shape(x)[1:3]))
    if pixels % features_in_step:
        raise InputError(
            f"features_in_step must divide the number of pixels {pixels}, got {features_in_step}"
        )
    return int(features_in_step)


def float_map(attributions) -> jax.Array:
    """The map in a float dtype: its own when it is float32/64, else float32."""
    a = jnp.asarray(attributions)
    return a.astype(jnp.result_type(a.dtype, jnp.float32))


def groups_in_order(attributions, keys, step: int, absolute: bool, descending: bool):
    """Consecutive groups of ``step`` pixels in attribution order (of |attribution| with
    ``absolute``): (group of each pixel int (B, H, W), summed attribution of each group
    (B, H * W / step)). Ties are broken at random with ``keys`` (stream "tie_break"), by pixel
    index without (Quantus's ``np.argsort`` quicksort leaves them unspecified)."""
    n, h, w = attributions.shape
    flat = float_map(attributions).reshape(n, -1)
    flat = jnp.abs(flat) if absolute else flat
    tie_keys = None if keys is None else streams.fold(keys, "tie_break")
    order = jax.vmap(descending_order)(flat if descending else -flat, tie_keys)
    group = (jax.vmap(ranks_of)(order) // step).reshape(n, h, w)
    sums = jnp.take_along_axis(flat, order, 1).reshape(n, -1, step).sum(-1)
    return group, sums


@functools.partial(jit, static_argnames=("score_fn", "step", "absolute", "chunk_size"))
def _monotonicity(score_fn, x, attributions, targets, keys, fill, *, step, absolute, chunk_size):
    group, _ = groups_in_order(attributions, keys, step, absolute, descending=False)
    counts = np.arange(1, group[0].size // step + 1, dtype=np.int32)  # point s: groups < s + 1
    start = jnp.broadcast_to(fill, x.shape)
    curve, evaluated = _path_scores(score_fn, start, x, group, targets, counts, chunk_size)
    rises = jnp.diff(curve, axis=1) >= 0
    # a skipped step repeats the previous score (a rise of exactly 0): count only evaluated ones
    moved = evaluated - 1
    kept = rises.sum(1) - (counts.shape[0] - evaluated)
    fraction = jnp.where(moved > 0, kept / jnp.maximum(moved, 1), 1.0).astype(curve.dtype)
    return {
        "monotonic": rises.all(1).astype(curve.dtype),
        "fraction": fraction,
        "curve": curve,
        "evaluated": evaluated,
    }


def monotonicity(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    features_in_step: int = 1,
    baseline: float = 0.0,
    absolute: bool = True,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Monotonicity (Arya et al. 2019, "One explanation does not fit all", arXiv:1909.03012;
    Luss et al. 2019, arXiv:1905.12698). Higher is better; 0 or 1 per image.

    From a canvas of ``baseline`` (0: black), the image's pixels are put back ``features_in_step``
    at a time in increasing order of attribution (of |attribution| with ``absolute``, Quantus's
    default ``abs=True``), and the target's score is recorded after each step: ``784 /
    features_in_step`` points, the last on the intact image and none on the bare canvas (as
    Quantus and AIX360: the first step's change is not judged). ``monotonic`` is 1 if that curve
    never decreases (every difference >= 0, no tolerance) else 0: all-or-nothing, as Quantus's
    ``np.all(np.diff(preds) >= 0)``. ``fraction`` is not in Quantus: the fraction of the
    evaluated steps (those that changed the input) whose score did not fall, 1 with none; a
    graded view of the same curve, since one small dip already gives 0. Pass softmax
    probabilities (Quantus's and Arya's score).

    Note what it measures: for a model that is a sum of per-pixel terms, every order gives the
    same verdict (1 iff each added pixel's term does not lower the score), so the map matters
    only through the model's interactions between pixels.

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W); targets:
        int (B,). features_in_step: must divide H x W (Quantus asserts the same); default 1 as
        Quantus. key: breaks ties in the ranking at random (one key or (B,) keys); None breaks
        them by pixel index (Quantus's ``np.argsort`` quicksort leaves them unspecified).
    Returns:
      ``{"monotonic": (B,), "fraction": (B,), "curve": (B, 784 / features_in_step),
      "evaluated": int32 (B,)}``, the last the number of curve points run through the model.

    Departures from Quantus 0.6 ``Monotonicity``: (1) Quantus's loop fills the chosen pixels of
    its baseline copy with the baseline value again (``batch_baseline_replacement_by_indices`` on
    the all-baseline array), so every point is the bare canvas, the curve is flat and the score
    is always 1; here the pixels take the image's values, as its docstring and the paper
    describe. (2) Its "black" is each image's minimum, here the constant ``baseline`` (0, the
    minimum of every MNIST digit). (3) Its ``normalise=True`` (division by the batch's max)
    cannot change an order and is not applied. (4) ``fraction`` is extra.
    """
    check_inputs(x, attributions, targets)
    check_positive(chunk_size=chunk_size)
    step = check_features_in_step(x, features_in_step)
    if not np.isfinite(baseline):
        raise InputError(f"baseline must be a finite number, got {baseline!r}")
    x = jnp.asarray(x)
    keys = None if key is None else example_keys(key, x.shape[0])
    fill = jnp.full((x.shape[0], 1, 1, x.shape[-1]), baseline, x.dtype)
    return _monotonicity(
        score_fn,
        x,
        jnp.asarray(attributions),
        jnp.asarray(targets),
        keys,
        fill,
        step=step,
        absolute=bool(absolute),
        chunk_size=chunk_size,
    )


def check_step_option(options):
    """A registry ``check``: ``features_in_step`` divides the leaderboard's image size."""
    check_features_in_step(np.zeros((1, *IMAGE_SIZE, 1)), options["features_in_step"])


@register_metric(
    "monotonicity",
    category="faithfulness",
    options_of=monotonicity,
    options=("features_in_step",),
    check=check_step_option,
    default_set=False,  # one model pass per non-black pixel: ~150 per digit at 1 pixel a step
    columns={
        "monotonicity": (
            "higher",
            "Monotonicity: target probability never falls as pixels are added, least relevant "
            "first (Arya 2019)",
        ),
        "monotonicity_fraction": (
            "higher",
            "Share of monotonicity steps where the target probability does not fall (Arya 2019)",
        ),
    },
)
def _score_monotonicity(batch: Batch, **options) -> dict:
    r = monotonicity(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"monotonicity": r["monotonic"], "monotonicity_fraction": r["fraction"]}
