"""Turning raw attribution maps into pictures: scaling, clipping, sign handling, overlays.

All functions act per map over the last two axes, so (H, W) and (B, H, W) both work, and return
jax arrays (``overlay`` returns NumPy, for plotting).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import minmax
from mnistxai.util.errors import InputError


def normalize(maps: jax.Array) -> jax.Array:
    """Min-max scale each map to [0, 1]; a constant map (e.g. all-zero Grad-CAM) gives zeros."""
    return minmax(jnp.asarray(maps, jnp.float32))


def normalize_signed(maps: jax.Array) -> jax.Array:
    """Divide each map by its max |value| into [-1, 1], keeping 0 at 0; an all-zero map stays 0."""
    maps = jnp.asarray(maps, jnp.float32)
    peak = jnp.abs(maps).max(axis=(-2, -1), keepdims=True)
    return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0)


def magnitude(maps: jax.Array) -> jax.Array:
    """|map|: for methods whose sign is noise at display scale (PAIR's default visualisation)."""
    return jnp.abs(jnp.asarray(maps, jnp.float32))


def clip_percentile(maps: jax.Array, low: float = 1.0, high: float = 99.0) -> jax.Array:
    """Clip each map to its [low, high] percentiles, so a few extreme pixels do not wash out the
    rest (PAIR's ``VisualizeImageGrayscale`` uses the 99th percentile)."""
    if not 0.0 <= low <= high <= 100.0:
        raise InputError(f"percentiles must satisfy 0 <= low <= high <= 100, got {low}, {high}")
    maps = jnp.asarray(maps, jnp.float32)
    lo, hi = (jnp.percentile(maps, q, axis=(-2, -1), keepdims=True) for q in (low, high))
    return jnp.clip(maps, lo, hi)


def overlay(image, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """RGB float (..., H, W, 3) in [0, 1]: the grey image blended with the colour-mapped heatmap.

    ``image`` (..., H, W) or (..., H, W, 1) in [0, 1] (or uint8); ``heatmap`` (..., H, W), min-max
    scaled here per map. ``alpha`` is the heatmap's weight.
    """
    from matplotlib import colormaps  # plotting only: keep matplotlib out of the import path

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.shape[-1] == 1:
        img = img[..., 0]
    heat = np.asarray(normalize(heatmap))
    if img.shape != heat.shape:
        raise InputError(f"image {img.shape} and heatmap {heat.shape} shapes differ")
    colour = colormaps[cmap](heat)[..., :3]
    return ((1 - alpha) * img[..., None] + alpha * colour).astype(np.float32)
