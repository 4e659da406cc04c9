"""How sure a leaderboard is: bootstrap intervals of means and ranks, and Kendall's W.

``bootstrap`` resamples images with replacement (percentile bootstrap, Efron & Tibshirani 1993,
ch. 13) and does it **paired**: every method is scored on the same resampled image indices, so a
resample where method A beats method B compares them on the same images and the rank
distribution reflects how often the order holds, not the noise of separate draws. Each method's
rank in each resample (1 = best, ties share the average rank) gives a rank interval and a median
rank.

NaN values (an image where a metric is undefined for a method, e.g. a 0/0 share) are dropped from
that method's mean within each resample: its mean is the mean of its finite resampled values, so
the methods stay paired on the images drawn but a method is averaged only over the ones where it
has a value. A method with no finite value in a resample has no mean and no rank there (NaN), and
the others are ranked among themselves; its intervals ignore such resamples.

``kendalls_w`` is Kendall's coefficient of concordance of m rankings of n items (Kendall &
Babington Smith 1939, with the tie correction of Kendall 1948): W = 12 S / (m^2 (n^3 - n) - m T),
where S is the sum of squared deviations of the items' rank sums from their mean m (n + 1) / 2 and
T sums t^3 - t over every group of t tied items of every ranking. W = 1 when the rankings agree,
0 when they cancel out. ``concordance`` adds its bootstrap interval from the resampled ranks.

Everything is NumPy and deterministic: randomness only from an explicit ``seed`` (an int or a
``numpy.random.Generator``); equal seeds and image counts give equal resamples.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Union

import numpy as np

from mnistxai.util.errors import InputError

Seed = Union[int, np.random.Generator]


def _generator(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer, tuple, list)):
        raise InputError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _quantiles(a: np.ndarray, level: float, method: str = "linear") -> tuple:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of ``a`` along its last axis, NaN-aware
    (all NaN: NaN)."""
    q = [(1 - level) / 2, (1 + level) / 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        lo, hi = np.nanquantile(a, q, axis=-1, method=method)
    return lo, hi


def _nanmedian(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=-1)


def rank_rows(scores: np.ndarray, better: str = "higher") -> np.ndarray:
    """Ranks of the rows of ``scores`` (M, ...) along axis 0: 1 for the best, tied rows share
    the average of their ranks; NaN scores get NaN and the others rank among themselves."""
    if better not in ("higher", "lower"):
        raise InputError(f"better must be 'higher' or 'lower', got {better!r}")
    s = np.asarray(scores, np.float64)
    s = s if better == "higher" else -s
    ahead = (s[None] > s[:, None]).sum(1)  # rows strictly better than row m (NaN: never)
    tied = (s[None] == s[:, None]).sum(1) - 1  # others with an equal score
    return np.where(np.isnan(s), np.nan, 1 + ahead + 0.5 * tied)


def _nanmean(v: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(v)
    count = finite.sum(axis)
    total = np.where(finite, v, 0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap(
    values_by_method: Mapping[str, np.ndarray],
    better: str = "higher",
    samples: int = 1000,
    level: float = 0.95,
    seed: Seed = 0,
) -> dict[str, dict]:
    """Paired percentile bootstrap of each method's mean and rank over images.

    Args:
      values_by_method: method -> (N,) per-image values, the same N images for every method
        (NaN where undefined: dropped from that method's mean, see the module docstring).
      better: "higher" or "lower": which mean ranks first.
      samples: resamples (each draws N image indices with replacement, shared by all methods).
      level: the intervals' coverage (0.95: the 2.5% and 97.5% percentiles).
      seed: an int or a ``numpy.random.Generator`` (drawn from, so its state advances).

    Returns:
      method -> {"mean", "ci_low", "ci_high" (the mean's interval), "n" (finite values),
      "rank" (rank of the means over all N images), "rank_median", "rank_low", "rank_high" (the
      rank's interval; the attained ranks at the lower and upper percentile, so a method first
      in every resample gets [1, 1]), "rank_samples" ((samples,) the rank in each resample, for
      ``concordance``)}.
    """
    names = list(values_by_method)
    if not names:
        raise InputError("bootstrap needs at least one method")
    rows = [np.asarray(values_by_method[m], np.float64) for m in names]
    if any(r.ndim != 1 for r in rows) or len({len(r) for r in rows}) != 1:
        shapes = {m: np.shape(values_by_method[m]) for m in names}
        raise InputError(f"bootstrap needs (N,) values of the same N images per method: {shapes}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"samples must be a positive integer, got {samples!r}")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    v = np.stack(rows)  # (M, N)
    m, n = v.shape
    rng = _generator(seed)
    if n == 0:
        means = np.full((m, samples), np.nan)
    else:
        idx = rng.integers(0, n, (samples, n))
        # resample b as counts of each image: the means are two matrix products, NaN-aware
        flat = (idx + n * np.arange(samples)[:, None]).ravel()
        counts = np.bincount(flat, minlength=samples * n).reshape(samples, n).astype(np.float64)
        finite = np.isfinite(v)
        totals = np.where(finite, v, 0.0) @ counts.T  # (M, samples)
        drawn = finite.astype(np.float64) @ counts.T
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(drawn > 0, totals / np.maximum(drawn, 1), np.nan)
    ranks = rank_rows(means, better)
    point = _nanmean(v, axis=1)
    point_rank = rank_rows(point, better)
    lo, hi = _quantiles(means, level)
    rank_lo, _ = _quantiles(ranks, level, "lower")
    _, rank_hi = _quantiles(ranks, level, "higher")
    median = _nanmedian(ranks)
    finite = np.isfinite(v).sum(1)
    return {
        name: {
            "mean": float(point[i]),
            "ci_low": float(lo[i]),
            "ci_high": float(hi[i]),
            "n": int(finite[i]),
            "rank": float(point_rank[i]),
            "rank_median": float(median[i]),
            "rank_low": float(rank_lo[i]),
            "rank_high": float(rank_hi[i]),
            "rank_samples": ranks[i],
        }
        for i, name in enumerate(names)
    }


def kendalls_w(rank_matrix: np.ndarray) -> np.ndarray:
    """Kendall's W (tie-corrected) of the rankings in ``rank_matrix`` (..., m rankings, n items):
    a float in [0, 1] per leading index (NaN with fewer than 2 rankings or items, or when every
    ranking ties every item). Each row is re-ranked (average ranks for ties, the smallest value
    first), so rows of scores oriented alike work too; a row with a NaN is dropped (a ranking
    that misses an item is no ranking of the n items).

    W = 12 S / (m^2 (n^3 - n) - m T) (Kendall & Babington Smith 1939; tie term T = sum over
    rankings and tie groups of t^3 - t)."""
    r = np.asarray(rank_matrix, np.float64)
    if r.ndim < 2:
        raise InputError(f"rank_matrix must be (metrics, methods), got shape {r.shape}")
    lead = r.shape[:-2]
    r = r.reshape((-1,) + r.shape[-2:])  # (B, m, n)
    keep = ~np.isnan(r).any(-1)  # (B, m): complete rankings
    m, n = keep.sum(-1), r.shape[-1]
    ranks = np.where(
        keep[..., None], np.moveaxis(rank_rows(np.moveaxis(r, -1, 0), "lower"), 0, -1), 0
    )
    sums = ranks.sum(1)  # (B, n)
    s = ((sums - (m * (n + 1) / 2)[:, None]) ** 2).sum(-1)
    # a group of t tied items adds t^3 - t: each of its t members adds t^2 - 1
    equal = (r[..., :, None] == r[..., None, :]).sum(-1)  # (B, m, n): items equal to each
    ties = np.where(keep[..., None], equal**2 - 1, 0).sum((1, 2))
    denom = m * m * (n**3 - n) - m * ties
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(
            (m >= 2) & (n >= 2) & (denom > 0), 12 * s / np.where(denom > 0, denom, 1), np.nan
        )
    w = np.clip(w, 0.0, 1.0)
    return w.reshape(lead) if lead else w[0]


def concordance(point_ranks: np.ndarray, rank_samples: np.ndarray, level: float = 0.95) -> dict:
    """Kendall's W of the point ranks (metrics x methods) with its percentile-bootstrap interval
    from ``rank_samples`` (metrics x methods x resamples: the ranks of ``bootstrap``, resample b
    of every metric drawn alike): {"w", "ci_low", "ci_high", "metrics", "methods"}."""
    point = np.asarray(point_ranks, np.float64)
    if point.ndim != 2:
        raise InputError(f"point_ranks must be (metrics, methods), got shape {point.shape}")
    per = np.asarray(rank_samples, np.float64)
    if per.ndim != 3 or per.shape[:2] != point.shape:
        raise InputError(
            f"rank_samples must be (metrics, methods, resamples) {point.shape} + (B,), got "
            f"{per.shape}"
        )
    w = kendalls_w(point)
    ws = kendalls_w(np.moveaxis(per, 2, 0)) if per.shape[2] else np.array([])
    lo, hi = _quantiles(ws, level) if ws.size else (np.nan, np.nan)
    return {
        "w": float(w),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "metrics": int((~np.isnan(point).any(1)).sum()),
        "methods": int(point.shape[1]),
    }
