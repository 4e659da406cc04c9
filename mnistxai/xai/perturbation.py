"""Perturbation attributions: occlusion and RISE. Model calls only, no gradients."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import (DEFAULT_CHUNK, Explanation, LogitsFn, at_targets, over_active,
                                over_groups, plan, sample_sum, targets_or_zeros)


def window_masks(size: tuple[int, int], window: tuple[int, int],
                 stride: tuple[int, int]) -> np.ndarray:
    """Boolean (N, H, W) masks of the occlusion windows, row-major, Captum's placement: top-left
    corners 0, s, 2s, ..., ceil((H - h) / s) s along each axis, the last window cropped at the
    border when the windows do not tile the image (so, with s <= window, every pixel is covered)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    ys = range(0, sh * -(-(h - wh) // sh) + 1, sh)
    xs = range(0, sw * -(-(w - ww) // sw) + 1, sw)
    m = np.zeros((len(ys), len(xs), h, w), bool)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            m[i, j, y:y + wh, x:x + ww] = True
    return m.reshape(-1, h, w)


def occlusion(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
              window: tuple[int, int] = (4, 4), stride: tuple[int, int] = (2, 2),
              baseline: float = 0.0, chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Occlusion (Zeiler & Fergus 2014, arXiv:1311.2901), as Captum's ``Occlusion``.

    Each window is set to ``baseline``; its logit drop F(x) - F(x_occluded) is credited to every
    pixel it covers, and each pixel's credit is averaged over the windows covering it. Windows
    start at 0, s, 2s, ... and the last is cropped at the border (``window_masks``), so every
    pixel is covered when stride <= window (Captum requires that; a larger stride leaves pixels
    no window covers, which get 0). Signed, (B, H, W).

    Exact shortcut: a window whose pixels all already equal ``baseline`` leaves x unchanged and
    its drop is exactly 0, so it is never evaluated (about half the windows of an MNIST digit on a
    black baseline). The remaining (example, window) pairs of the whole batch are packed together
    and run ``chunk_size`` at a time (``over_active``).
    Extras: ``evaluated`` (B,) the number of windows actually run per example.
    """
    b, h, w, _ = x.shape
    masks_np = window_masks((h, w), window, stride)
    n = masks_np.shape[0]
    masks = jnp.asarray(masks_np)
    k = min(chunk_size, b * n)
    logits = jax.lax.map(lambda xi: logits_fn(xi[None])[0], x, batch_size=min(k, b))
    t = jnp.argmax(logits, -1).astype(jnp.int32) if targets is None else targets
    full = at_targets(logits, t)

    differs = (x != baseline).any(-1).astype(jnp.float32)                   # (B, H, W)
    active = jnp.einsum("nhw,bhw->bn", masks.astype(jnp.float32), differs) > 0

    def drop(pair):                                                         # (k,) pair indices
        ex, win = pair // n, pair % n
        occluded = jnp.where(masks[win][..., None], baseline, x[ex])
        return full[ex] - at_targets(logits_fn(occluded), t[ex])

    drops = over_active(drop, active.reshape(-1), k).astype(x.dtype)
    count = masks_np.sum(0)
    spread = jnp.einsum("bn,nhw->bhw", drops.reshape(b, n), masks.astype(x.dtype))
    attr = spread / jnp.asarray(np.maximum(count, 1), x.dtype)
    return Explanation(attr, t, {"evaluated": active.sum(1).astype(jnp.int32)})


def rise_masks(key: jax.Array, idx: jax.Array, size: tuple[int, int], cells: int,
               p: float, dtype=jnp.float32) -> jax.Array:
    """RISE masks number ``idx`` (k,) -> (k, H, W) in [0, 1] of ``dtype``, mask i drawn from
    fold_in(key, i).

    A ``cells`` x ``cells`` Bernoulli(p) grid is bilinearly upsampled to (cells + 1) cell sizes
    and cropped at a random shift of less than one cell (Petsiuk et al. 2018, sec. 3.2). RISE's
    code resizes with skimage's mode='reflect', ``jax.image.resize`` clamps at the edge: they
    differ in the outermost upsampled pixels, which a crop at shift 0 or 1 keeps.
    """
    h, w = size
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)

    def one(i):
        kg, ky, kx = jax.random.split(jax.random.fold_in(key, i), 3)
        grid = jax.random.bernoulli(kg, p, (cells, cells)).astype(dtype)
        up = jax.image.resize(grid, ((cells + 1) * ch, (cells + 1) * cw), "bilinear",
                              antialias=False)
        dy, dx = jax.random.randint(ky, (), 0, ch), jax.random.randint(kx, (), 0, cw)
        return jax.lax.dynamic_slice(up, (dy, dx), (h, w))
    return jax.vmap(one)(idx)


def rise(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
         key: jax.Array, masks: int = 1000, cells: int = 7, p: float = 0.5,
         chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """RISE (Petsiuk et al. 2018, arXiv:1806.07421): sum_i P(t | x * M_i) M_i / (masks * p).

    Scores are softmax probabilities of the target, as in the paper (Captum has no RISE). All
    examples share the same ``masks`` random masks drawn from ``key`` (held in memory at once:
    masks x H x W floats), so an example's map does not depend on the rest of the batch.
    Non-negative, (B, H, W). Groups of examples go through the model as flat batches of at most
    ``chunk_size`` masked images.
    """
    examples, per_pass = plan(x.shape[0], chunk_size)
    all_masks = rise_masks(key, jnp.arange(masks), x.shape[1:3], cells, p, x.dtype)  # drawn once

    def group(args):
        xg, tg = args                                                  # (E, H, W, C), (E,)
        t = jnp.argmax(logits_fn(xg), -1) if targets is None else tg
        t = t.astype(jnp.int32)

        def chunk(idx):
            m = all_masks[idx]                                         # (k, H, W)
            masked = (xg[:, None] * m[None, ..., None]).reshape((-1,) + xg.shape[1:])
            prob = jax.nn.softmax(logits_fn(masked), -1).reshape(xg.shape[0], idx.shape[0], -1)
            return jnp.einsum("ek,khw->ehw", prob[jnp.arange(xg.shape[0]), :, t], m)
        return sample_sum(chunk, masks, per_pass) / (masks * p), t
    attributions, t = over_groups(group, (x, targets_or_zeros(x, targets)), examples)
    return Explanation(attributions, t, {})
