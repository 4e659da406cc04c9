"""Complexity: how concentrated a map is. Functions of the map alone, no model calls.

Sparseness (Gini index; Chalasani et al. 2020) and complexity (entropy of the fractional
contributions; Bhatt et al. 2020), both as Quantus computes them on |attribution|.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.util.errors import InputError


def _flat_abs(attributions) -> jax.Array:
    a = jnp.asarray(attributions, jnp.float32)
    return jnp.abs(a.reshape(a.shape[0], -1))


def _check(attributions) -> None:
    if np.ndim(attributions) != 3:
        raise InputError(f"attributions must have shape (B, H, W), got {np.shape(attributions)}")
    if not np.isfinite(np.asarray(attributions, np.float32)).all():
        raise InputError("attributions contains NaN or inf")


@jax.jit
def _gini(attributions):
    a = jnp.sort(_flat_abs(attributions), axis=-1)
    n = a.shape[-1]
    i = jnp.arange(1, n + 1, dtype=a.dtype)
    total = a.sum(-1)
    gini = ((2 * i - n - 1) * a).sum(-1) / (n * jnp.where(total > 0, total, 1.0))
    return jnp.where(total > 0, gini, 0.0)


def sparseness(attributions) -> jax.Array:
    """Gini index of |attribution| (Chalasani et al. 2020, arXiv:1810.06583). Higher is sparser.

    G = sum_i (2i - n - 1) a_(i) / (n sum_i a_(i)) over the n sorted values a_(1) <= ... <= a_(n).
    In [0, 1): 0 for a constant map, (n - 1) / n for a single non-zero pixel, and unchanged when
    the map is scaled. An all-zero map gives 0. This is Quantus 0.6's ``Sparseness`` formula
    without its offset: Quantus adds 1e-7 to every value (after dividing the batch by its max
    |a|, its default), so a map's score there depends on its scale relative to the largest map
    of its batch. (B, H, W) -> (B,).
    """
    _check(attributions)
    return _gini(attributions)


@jax.jit
def _entropy(attributions):
    a = _flat_abs(attributions)
    total = a.sum(-1, keepdims=True)
    p = jnp.where(total > 0, a / jnp.where(total > 0, total, 1.0), 1.0 / a.shape[-1])
    return -(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)).sum(-1)


def complexity(attributions) -> jax.Array:
    """Entropy of the fractional contributions |a_i| / sum |a| (Bhatt et al. 2020,
    arXiv:2005.00631), in nats. Lower is simpler; in [0, log n] (log 784 = 6.66 for MNIST).

    As Quantus 0.6's ``Complexity`` (-sum p log(p + 1e-12) with p = |a| / sum |a|), without the
    1e-12, and an all-zero map counts as uniform (log n) where Quantus returns NaN.
    (B, H, W) -> (B,).
    """
    _check(attributions)
    return _entropy(attributions)


@register_metric(
    "sparseness",
    category="complexity",
    columns={"sparseness": ("higher", "Gini index of |map| (Chalasani 2020)")},
)
def _score_sparseness(batch: Batch) -> dict:
    return {"sparseness": sparseness(batch.maps)}


@register_metric(
    "complexity",
    category="complexity",
    columns={"complexity": ("lower", "Entropy of |map| fractions (Bhatt 2020)")},
)
def _score_complexity(batch: Batch) -> dict:
    return {"complexity": complexity(batch.maps)}
