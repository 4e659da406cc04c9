"""Effective complexity (Nguyen & Martínez 2020): how many features a map calls relevant.

A function of the map alone: no model calls.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import normalize_by_max
from mnistxai.xai.metrics.registry import Batch, register_metric


def _check(attributions) -> None:
    if np.ndim(attributions) != 3:
        raise InputError(f"attributions must have shape (B, H, W), got {np.shape(attributions)}")
    if np.shape(attributions)[0] == 0:
        raise InputError("attributions is an empty batch")
    if not np.isfinite(np.asarray(attributions, np.float64)).all():
        raise InputError("attributions contains NaN or inf")


@partial(jax.jit, static_argnames=("abs", "normalise"))
def _effective_complexity(attributions, eps, abs, normalise):
    a = jnp.asarray(attributions)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    if normalise:
        a = normalize_by_max(a)
    if abs:
        a = jnp.abs(a)
    # a count, in the maps' float dtype as every leaderboard column
    return (a.reshape(a.shape[0], -1) > eps).sum(-1).astype(a.dtype)


def effective_complexity(
    attributions, *, eps: float = 1e-5, abs: bool = True, normalise: bool = True
) -> jax.Array:
    """Effective complexity (Nguyen & Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584): the number of pixels whose attribution exceeds ``eps``,
    #{i : |a_i| / max_j |a_j| > eps}. Lower is simpler. A whole-number count in [0, H * W] (not
    a fraction of the pixels: Quantus returns the count too, as int; here in the maps' float
    dtype, float32 at least, as every leaderboard column); an all-zero map counts 0.

    Defaults as Quantus 0.6's ``EffectiveComplexity`` (eps=1e-5, abs=True, normalise=True:
    divide by the max |value|, then take |.|; ``abs=False`` counts only values above +eps).
    Departure: each map is divided by its own max |value| where Quantus divides the whole batch
    by one max (its ``normalise_by_max`` default axes), so here a map's count does not depend on
    the other maps of its batch; ``normalise=False`` compares the raw values with eps, as
    Quantus. (B, H, W) -> (B,).
    """
    _check(attributions)
    if isinstance(eps, bool) or not np.isfinite(eps) or eps < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    return _effective_complexity(attributions, float(eps), bool(abs), bool(normalise))


@register_metric(
    "effective_complexity",
    category="complexity",
    options_of=effective_complexity,
    options=("eps", "abs", "normalise"),
    checks={"eps": real(0.0)},
    columns={
        "effective_complexity": (
            "lower",
            "Pixels with |map| / max |map| > 1e-5 (Nguyen & Martinez 2020)",
        )
    },
)
def _score_effective_complexity(batch: Batch, **options) -> dict:
    return {"effective_complexity": effective_complexity(batch.maps, **options)}
