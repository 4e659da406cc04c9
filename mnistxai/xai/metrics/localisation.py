"""Localisation: does a map put its relevance on a known ground-truth region? No model calls.

Every metric takes maps (B, H, W) and boolean masks (B, H, W) of the region the model should use
(e.g. the planted marker of a shortcut benchmark) and returns one value per example, higher is
better; an example whose mask is empty scores NaN (the leaderboard's means skip it, so images
without a ground truth can carry an all-False mask). The definitions are Quantus 0.6's
(``quantus/metrics/localisation/*.py`` at commit 85bc29d137d8f42835dd392f5cc441ad61d6d1f1), with
its defaults, and these departures, all stated again in each docstring:

- Ties are broken uniformly at random, in expectation: where Quantus ranks the pixels with
  ``np.argsort`` (whose order among equal values is unspecified) or counts a hit when *any* of
  several maximal pixels is in the mask, these functions return the expected score over random
  orderings of the tied pixels. Without ties (continuous maps) the two agree; with them a uniform
  map scores the chance value |mask| / n instead of 1 (pointing game) or an arbitrary value.
- Quantus first divides the batch by its largest |value| (``normalise=True``); every metric here
  is unchanged by scaling a map by a positive number, so that step is left out (except that
  attribution localisation's 1e-9 in the denominator, relative to the scale, is dropped too).
- Focus (Arias-Duart et al. 2022), the seventh, needs mosaics of images of several classes and
  re-explains them: it is in ``focus.py``.

Shapes: n = H * W pixels per map; a mask's size |S| counts its True pixels.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai.metrics.registry import Batch, register_metric


def _check(maps, masks) -> None:
    if np.ndim(maps) != 3:
        raise InputError(f"maps must have shape (B, H, W), got {np.shape(maps)}")
    if np.shape(masks) != np.shape(maps):
        raise InputError(f"masks must have the maps' shape {np.shape(maps)}, got {np.shape(masks)}")


def _prepare(maps, masks):
    """Flat (B, n) maps in a float dtype (float64 stays float64) and (B, n) bool masks."""
    _check(maps, masks)
    a = jnp.asarray(maps)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    s = jnp.asarray(masks).astype(bool)
    return a.reshape(a.shape[0], -1), s.reshape(s.shape[0], -1)


def _nan_if_empty(score, s):
    return jnp.where(s.any(-1), score, jnp.nan)


def _expected_in_top(a, s, k):
    """Expected number of mask pixels among the k (B,) largest values of a, ties at the k-th
    value broken uniformly at random: those above it, plus the tied share of the rest."""
    kth = jnp.take_along_axis(-jnp.sort(-a, axis=-1), (k - 1)[:, None], axis=-1)
    above, tied = a > kth, a == kth
    above_n = above.sum(-1)
    tied_n = tied.sum(-1)
    tied_in = (tied & s).sum(-1)
    return (above & s).sum(-1) + (k - above_n) * tied_in / jnp.maximum(tied_n, 1)


@partial(jax.jit, static_argnames=("weighted", "abs"))
def _pointing_game(a, s, weighted, abs):
    if abs:
        a = jnp.abs(a)
    top = a == a.max(-1, keepdims=True)
    hit = (top & s).sum(-1) / top.sum(-1)
    if weighted:
        hit = hit * (1 - s.sum(-1) / s.shape[-1])
    return _nan_if_empty(hit, s)


def pointing_game(maps, masks, *, weighted: bool = False, abs: bool = False) -> jax.Array:
    """Pointing game (Zhang et al. 2018, IJCNN, "Top-down neural attention by excitation
    backprop"): 1 when the map's largest value lies in the mask, else 0. In [0, 1].

    ``weighted``: a hit scores 1 - |S| / n (a small region is harder to hit); ``abs``: on |map|.
    Defaults as Quantus 0.6's ``PointingGame`` (weighted=False, abs=False). Departure: when
    several pixels share the maximum, the score is the fraction of them in the mask (the expected
    hit under random tie-breaking) where Quantus counts a hit if any is, so a constant map scores
    |S| / n here and 1 there. Quantus keeps its hits in a boolean array, so its ``weighted``
    score 1 - |S| / n is stored as True (no effect) and its NaN for an empty mask as True too;
    here ``weighted`` applies and an empty mask gives NaN. (B, H, W), (B, H, W) -> (B,).
    """
    a, s = _prepare(maps, masks)
    return _pointing_game(a, s, weighted, abs)


@partial(jax.jit, static_argnames=("weighted", "positive_attributions", "abs"))
def _attribution_localisation(a, s, weighted, positive_attributions, abs):
    if abs:
        a = jnp.abs(a)
    if positive_attributions:
        a = jnp.maximum(a, 0)
    inside = jnp.where(s, a, 0).sum(-1)
    total = a.sum(-1)
    ratio = jnp.where(total != 0, inside / jnp.where(total != 0, total, 1), 0)
    ratio = jnp.where(ratio > 1, jnp.nan, ratio)
    if weighted:
        ratio = ratio * s.sum(-1) / s.shape[-1]
    return _nan_if_empty(ratio, s)


def attribution_localisation(
    maps,
    masks,
    *,
    weighted: bool = False,
    positive_attributions: bool = False,
    abs: bool = True,
) -> jax.Array:
    """Attribution localisation (Kohlbrenner et al. 2020, IJCNN, "Towards best practice in
    explaining neural network decisions with LRP"): the share of the map's total inside the
    mask, sum_S a / sum a, on |map| by default. In [0, 1] for non-negative maps.

    ``weighted``: times |S| / n; ``positive_attributions``: negative values clipped to 0 first;
    ``abs``: on |map|. Defaults as Quantus 0.6's ``AttributionLocalisation`` (False, False, True).
    NaN when the ratio exceeds 1 (a signed map with negative mass outside), as Quantus; 0 for an
    all-zero map. Departures: no 1e-9 in the denominator; ``weighted`` uses |S| / n where Quantus
    divides by ``x_batch[2:].size`` (the batch less two images, a slicing slip); Quantus's
    ``max_size`` only warns and is left out. Empty mask: NaN. (B, H, W), (B, H, W) -> (B,).
    """
    a, s = _prepare(maps, masks)
    return _attribution_localisation(a, s, weighted, positive_attributions, abs)


@partial(jax.jit, static_argnames=("k", "concept_influence", "abs"))
def _top_k_intersection(a, s, k, concept_influence, abs):
    if abs:
        a = jnp.abs(a)
    tki = _expected_in_top(a, s, jnp.full(a.shape[:1], k)) / k
    if concept_influence:
        tki = tki * s.shape[-1] / jnp.maximum(s.sum(-1), 1)
    return _nan_if_empty(tki, s)


def top_k_intersection(
    maps, masks, *, k: int = 16, concept_influence: bool = False, abs: bool = False
) -> jax.Array:
    """Top-k intersection (Theiner et al. 2022, WACV, "Interpretable semantic photo
    geolocation", arXiv:2104.14995): the fraction of the map's k largest pixels that lie in the
    mask. In [0, min(1, |S| / k)].

    ``concept_influence``: times n / |S| (1 is then the chance level); ``abs``: on |map|.
    Quantus 0.6's ``TopKIntersection`` defaults to k=1000 (2% of a 224 x 224 image) and requires
    k < n, which no MNIST map meets: the default here is k=16, 2% of 28 x 28; concept_influence
    and abs as Quantus (False). Departure: pixels tied at the k-th value count by their expected
    share under random tie-breaking (Quantus: ``np.argsort`` order). Empty mask: NaN.
    (B, H, W), (B, H, W) -> (B,).
    """
    _check(maps, masks)
    n = int(np.prod(np.shape(maps)[1:]))
    if k >= n:
        raise InputError(f"k must be smaller than the {n} pixels of a map, got {k}")
    a, s = _prepare(maps, masks)
    return _top_k_intersection(a, s, k, concept_influence, abs)


@partial(jax.jit, static_argnames=("abs",))
def _relevance_mass_accuracy(a, s, abs):
    if abs:
        a = jnp.abs(a)
    inside = jnp.where(s, a, 0).sum(-1)
    total = a.sum(-1)
    mass = jnp.where(total != 0, inside / jnp.where(total != 0, total, 1), jnp.nan)
    return _nan_if_empty(mass, s)


def relevance_mass_accuracy(maps, masks, *, abs: bool = False) -> jax.Array:
    """Relevance mass accuracy (Arras et al. 2022, Information Fusion, "CLEVR-XAI"): sum_S a /
    sum a, the share of the map's (signed) total inside the mask. In [0, 1] for non-negative
    maps; a signed map can leave it.

    ``abs``: on |map| (Quantus 0.6's ``RelevanceMassAccuracy`` default: False). NaN for an empty
    mask, and where the map sums to 0 (Quantus: 0/0 = NaN, x/0 = inf). (B, H, W), (B, H, W) ->
    (B,).
    """
    a, s = _prepare(maps, masks)
    return _relevance_mass_accuracy(a, s, abs)


@partial(jax.jit, static_argnames=("abs",))
def _relevance_rank_accuracy(a, s, abs):
    if abs:
        a = jnp.abs(a)
    size = s.sum(-1)
    k = jnp.maximum(size, 1)
    return _nan_if_empty(_expected_in_top(a, s, k) / k, s)


def relevance_rank_accuracy(maps, masks, *, abs: bool = False) -> jax.Array:
    """Relevance rank accuracy (Arras et al. 2022, Information Fusion, "CLEVR-XAI"): the
    fraction of the map's |S| largest pixels that lie in the mask S. In [0, 1]; |S| / n is
    chance.

    ``abs``: on |map| (Quantus 0.6's ``RelevanceRankAccuracy`` default: False). Departure: pixels
    tied at the |S|-th value count by their expected share under random tie-breaking (Quantus:
    ``np.argsort`` order). Empty mask: NaN. (B, H, W), (B, H, W) -> (B,).
    """
    a, s = _prepare(maps, masks)
    return _relevance_rank_accuracy(a, s, abs)


def _mann_whitney_auc(a, s):
    ordered = jnp.sort(a)
    # 1-based ranks, ties sharing their average: ROC's trapezoid credits a tied pair 1/2
    rank = (
        jnp.searchsorted(ordered, a, side="left") + jnp.searchsorted(ordered, a, side="right") + 1
    ).astype(a.dtype) / 2
    pos = s.sum().astype(a.dtype)
    neg = s.shape[-1] - pos
    u = jnp.where(s, rank, 0).sum() - pos * (pos + 1) / 2
    return jnp.where((pos > 0) & (neg > 0), u / jnp.maximum(pos * neg, 1), jnp.nan)


@partial(jax.jit, static_argnames=("abs",))
def _auc(a, s, abs):
    if abs:
        a = jnp.abs(a)
    return jax.vmap(_mann_whitney_auc)(a, s)


def auc(maps, masks, *, abs: bool = False) -> jax.Array:
    """Area under the ROC curve of the map as a detector of the mask's pixels (Fawcett 2006,
    Pattern Recognition Letters, "An introduction to ROC analysis"): the probability that a
    random mask pixel outscores a random pixel outside it, ties counting 1/2. In [0, 1]; 0.5 is
    chance (and a constant map).

    As Quantus 0.6's ``AUC`` (sklearn's ``roc_curve`` then ``auc``, which equals this rank form
    exactly; ``abs`` default False). NaN for an empty mask, and for a mask covering every pixel
    (no negatives: sklearn's ROC is undefined there too). (B, H, W), (B, H, W) -> (B,).
    """
    a, s = _prepare(maps, masks)
    return _auc(a, s, abs)


def _entry(fn, column):
    def score(batch: Batch, **options) -> dict:
        return {column: fn(batch.maps, batch.masks, **options)}

    return score


for _fn, _column, _text, _options in (
    (pointing_game, "pointing_game", "max of map in mask (Zhang 2018)", ("weighted", "abs")),
    (
        attribution_localisation,
        "attribution_localisation",
        "share of |map| in mask (Kohlbrenner 2020)",
        ("weighted", "positive_attributions", "abs"),
    ),
    (
        top_k_intersection,
        "top_k_intersection",
        "fraction of top-k pixels in mask (Theiner 2022)",
        ("k", "concept_influence", "abs"),
    ),
    (
        relevance_mass_accuracy,
        "relevance_mass_accuracy",
        "share of map in mask (Arras 2022)",
        ("abs",),
    ),
    (
        relevance_rank_accuracy,
        "relevance_rank_accuracy",
        "fraction of top-|mask| pixels in mask (Arras 2022)",
        ("abs",),
    ),
    (auc, "localisation_auc", "ROC AUC of map vs mask (Fawcett 2006)", ("abs",)),
):
    register_metric(
        _column,
        category="localisation",
        columns={_column: ("higher", _text)},
        options_of=_fn,
        options=_options,
        needs_masks=True,
    )(_entry(_fn, _column))
