"""Occlusion (Zeiler & Fergus 2014), placed as Captum's ``Occlusion``."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn, at_targets, over_active
from mnistxai.xai._inputs import int_pair, real
from mnistxai.xai.registry import register


def _check(options: dict, batch: int, classifier) -> dict:
    window, stride = options["window"], options["stride"]
    if any(s > w for s, w in zip(stride, window)):
        raise InputError(
            f"occlusion stride {stride} must not exceed the window {window}: pixels "
            f"between windows would get no attribution (Captum refuses it too)"
        )
    return options


def _windows(options: dict) -> int:
    (wh, ww), (sh, sw) = options["window"], options["stride"]
    return (-(-(28 - wh) // sh) + 1) * (-(-(28 - ww) // sw) + 1)


def window_masks(
    size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]
) -> np.ndarray:
    """Boolean (N, H, W) masks of the occlusion windows, row-major, Captum's placement: top-left
    corners 0, s, 2s, ..., ceil((H - h) / s) s along each axis, the last window cropped at the
    border when the windows do not tile the image (so, with s <= window, every pixel is covered)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    ys = range(0, sh * -(-(h - wh) // sh) + 1, sh)
    xs = range(0, sw * -(-(w - ww) // sw) + 1, sw)
    m = np.zeros((len(ys), len(xs), h, w), bool)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            m[i, j, y : y + wh, x : x + ww] = True
    return m.reshape(-1, h, w)


@register(
    "occlusion",
    model="forward",
    family="perturbation",
    paper="Zeiler & Fergus 2014, arXiv:1311.2901",
    checks={"window": int_pair(28), "stride": int_pair(28), "baseline": real(0.0, 1.0)},
    check=_check,
    passes=lambda o: (0, 1 + _windows(o)),
    smoke={"window": 7, "stride": 7},
)
def occlusion(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    window: tuple[int, int] = (4, 4),
    stride: tuple[int, int] = (2, 2),
    baseline: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
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

    differs = (x != baseline).any(-1).astype(jnp.float32)  # (B, H, W)
    active = jnp.einsum("nhw,bhw->bn", masks.astype(jnp.float32), differs) > 0

    def drop(pair):  # (k,) pair indices
        ex, win = pair // n, pair % n
        occluded = jnp.where(masks[win][..., None], baseline, x[ex])
        return full[ex] - at_targets(logits_fn(occluded), t[ex])

    drops = over_active(drop, active.reshape(-1), k).astype(x.dtype)
    count = masks_np.sum(0)
    spread = jnp.einsum("bn,nhw->bhw", drops.reshape(b, n), masks.astype(x.dtype))
    attr = spread / jnp.asarray(np.maximum(count, 1), x.dtype)
    return Explanation(attr, t, {"evaluated": active.sum(1).astype(jnp.int32)})
