"""Feature groups: the players of the game-theoretic methods (KernelSHAP, LIME, Shapley values,
feature ablation), each a set of pixels switched between the image and a baseline together.

Three kinds, chosen by a method's ``groups`` option:

- ``"grid"``: square ``patch`` x ``patch`` patches in row-major order, ``ceil(28 / patch)`` per
  side; when ``patch`` does not divide 28 the last row and column of patches are cropped at the
  border (``patch=5``: 6 x 6 players, the last ones 3 pixels wide). ``patch=4``: 49 players.
- ``"superpixels"``: SLIC superpixels of each digit (Achanta et al. 2012, TPAMI 34(11)), seeded
  on the same grid (``ceil(28 / patch)**2`` seeds), computed inside the compiled program
  (``slic_labels``). A seed that ends up with no pixels is an empty player.
- an integer mask: labels (28, 28) for every image or (B, 28, 28) one per image, labels 0..n-1
  with n = max label + 1 (at most 784). A label that an image does not use is an empty player.

Why SLIC, written here in JAX, and not scikit-image: MNIST digits are one grey channel on black,
where SLIC's joint intensity-and-position k-means gives compact cells that follow the strokes; and
run in the compiled program it keeps the number of players static (the seed count), so the methods
trace once and need no host round trip or new dependency. It departs from scikit-image's
``slic`` in that no connectivity is enforced afterwards: a superpixel is a cluster of pixels near
one seed (within SLIC's 2S x 2S search window) and of similar intensity, which may be split in
two. Felzenszwalb's graph segmentation (PAIR's XRAI) yields a number of segments that depends on
the image, which static shapes cannot hold without a cap.

Empty players, and players whose pixels all already equal the baseline, leave the input unchanged
whether present or absent: they are null players, their value is exactly 0, and the methods do
not evaluate coalitions that differ only in them (``active_players``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai._inputs import IMAGE_SIZE, as_images

GROUPINGS = ("grid", "superpixels")
MAX_LABELS = IMAGE_SIZE[0] * IMAGE_SIZE[1]
# SLIC's m for intensities in [0, 1]: a stroke pixel (1) and a background pixel (0) one seed step
# apart differ by 1 in intensity and by COMPACTNESS in the spatial term, so cells split at stroke
# edges first and stay compact inside flat regions
COMPACTNESS = 0.3
SLIC_ITERATIONS = 10  # Achanta et al.: 10 iterations suffice for most images

Groups = Union[str, np.ndarray, jax.Array]


def grid_side(patch: int, size: int = IMAGE_SIZE[0]) -> int:
    """Patches along a side of ``size`` pixels: ceil(size / patch), the last one cropped."""
    return -(-size // patch)


def grid_labels(patch: int, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """int32 (H, W) labels of the ``patch`` x ``patch`` grid, row-major, 0..side**2-1."""
    h, w = size
    rows, cols = np.arange(h) // patch, np.arange(w) // patch
    return (rows[:, None] * grid_side(patch, w) + cols[None, :]).astype(np.int32)


def _slic(images: jax.Array, patch: int, compactness: float, iterations: int) -> jax.Array:
    b, h, w = images.shape
    gh, gw = grid_side(patch, h), grid_side(patch, w)
    step = np.float64(np.sqrt(h * w / (gh * gw)))  # SLIC's S = sqrt(N / K)
    cy, cx = np.meshgrid((np.arange(gh) + 0.5) * h / gh, (np.arange(gw) + 0.5) * w / gw)
    cy, cx = cy.T.reshape(-1), cx.T.reshape(-1)  # row-major seeds (K,)
    py, px = (a.reshape(-1) for a in np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
    dtype = images.dtype
    pix = images.reshape(b, h * w)
    pyx = jnp.asarray(np.stack([py, px], -1), dtype)  # (P, 2)
    seed_pixels = np.clip(np.round(cy - 0.5), 0, h - 1) * w + np.clip(np.round(cx - 0.5), 0, w - 1)
    centres = jnp.concatenate(
        [
            jnp.broadcast_to(
                jnp.asarray(np.stack([cy - 0.5, cx - 0.5], -1), dtype), (b, cy.size, 2)
            ),
            pix[:, seed_pixels.astype(np.int32)][..., None],
        ],
        -1,
    )  # (B, K, 3): row, column, intensity
    ratio = jnp.asarray((compactness / step) ** 2, dtype)

    def assign(c):
        dyx = pyx[None, :, None, :] - c[:, None, :, :2]  # (B, P, K, 2)
        spatial = (dyx**2).sum(-1)
        colour = (pix[:, :, None] - c[:, None, :, 2]) ** 2
        outside = (jnp.abs(dyx) > step).any(-1)  # SLIC searches a 2S x 2S window per seed
        # a pixel outside every window (seeds drifted away) goes to the nearest seed
        d = colour + ratio * spatial + jnp.where(outside, 1e6, 0).astype(dtype)
        return jnp.argmin(d, -1).astype(jnp.int32)  # (B, P)

    def update(_, c):
        onehot = jax.nn.one_hot(assign(c), c.shape[1], dtype=dtype)  # (B, P, K)
        feats = jnp.concatenate([jnp.broadcast_to(pyx, (b, h * w, 2)), pix[..., None]], -1)
        total = jnp.einsum("bpk,bpf->bkf", onehot, feats)
        count = onehot.sum(1)[..., None]
        return jnp.where(count > 0, total / jnp.maximum(count, 1), c)  # an empty seed stays put

    centres = jax.lax.fori_loop(0, iterations, update, centres)
    return assign(centres).reshape(b, h, w)


def slic_labels(
    images: jax.Array,
    patch: int = 4,
    compactness: float = COMPACTNESS,
    iterations: int = SLIC_ITERATIONS,
) -> jax.Array:
    """SLIC superpixels (Achanta et al. 2012) of (B, H, W) images in [0, 1], traceable under jit.

    Seeds start evenly spaced, ceil(H / patch) x ceil(W / patch) of them (K, row-major; at the
    patch centres when ``patch`` divides the image); each
    of ``iterations`` rounds assigns every pixel to the seed minimising (I_p - I_c)^2 +
    (compactness / S)^2 d_xy^2 among the seeds whose 2S x 2S window holds it (S = sqrt(HW / K)),
    then moves each seed to the mean position and intensity of its pixels. Returns int32
    (B, H, W) seed indices in [0, K); seeds left with no pixels are gaps in the labels (the
    methods treat them as empty players). Computes in the images' dtype.
    """
    return _slic(images, patch, compactness, iterations)


@functools.partial(jax.jit, static_argnames=("patch", "compactness", "iterations"))
def _slic_jit(images, patch, compactness, iterations):
    return _slic(images, patch, compactness, iterations)


def superpixels(
    images: Any,
    patch: int = 4,
    compactness: float = COMPACTNESS,
    iterations: int = SLIC_ITERATIONS,
) -> np.ndarray:
    """SLIC superpixels of digits: int32 (B, 28, 28) labels 0..n_i - 1 per image (NumPy).

    ``images``: (28, 28), (B, 28, 28) or (B, 28, 28, 1), uint8 0-255 or float in [0, 1].
    Seeds on the ``patch`` grid (``patch=4``: 49 seeds), so n_i <= ceil(28 / patch)**2; the
    labels are renumbered per image to 0..n_i - 1 in the order of the seeds (``slic_labels``
    keeps the seed numbers, with gaps). ``compactness`` is SLIC's m for intensities in [0, 1]
    (larger: squarer cells); ``iterations`` of k-means (10).
    """
    x = as_images(images)[..., 0]
    if not (isinstance(patch, int) and 1 <= patch <= 28):
        raise InputError(f"patch must be an integer in [1, 28], got {patch!r}")
    raw = np.asarray(_slic_jit(jnp.asarray(x), patch, float(compactness), int(iterations)))
    out = np.empty_like(raw)
    for i, lab in enumerate(raw):
        out[i] = np.unique(lab, return_inverse=True)[1].reshape(lab.shape)
    return out.astype(np.int32)


def mask_members(name: str, value: Any) -> np.ndarray:
    """A user's integer mask, (28, 28) or (B, 28, 28) labels 0..n-1, checked and turned into bool
    membership (1 or B, n, 28, 28): the number of players n is then the array's shape, known
    when the method is traced."""
    try:
        m = np.asarray(value)
    except Exception as e:  # e.g. ragged lists
        raise InputError(f"{name} could not be converted to an array: {e}") from None
    if m.dtype == bool or not np.issubdtype(m.dtype, np.integer):
        raise InputError(
            f"{name} must be 'grid', 'superpixels' or an integer mask of labels 0..n-1, got "
            f"dtype {m.dtype}"
        )
    if m.ndim == 2:
        m = m[None]
    elif m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3 or m.shape[1:] != IMAGE_SIZE or m.shape[0] == 0:
        raise InputError(f"{name} mask must have shape (28, 28) or (B, 28, 28), got {m.shape}")
    if m.min() < 0 or m.max() >= MAX_LABELS:
        raise InputError(
            f"{name} mask labels must lie in [0, {MAX_LABELS - 1}], got {m.min()}..{m.max()}"
        )
    n = int(m.max()) + 1
    return m[:, None, :, :] == np.arange(n)[None, :, None, None]


def groups_option(name: str, value: Any) -> Groups:
    """Check for a ``groups`` option: 'grid', 'superpixels' or an integer mask
    (``mask_members``)."""
    if isinstance(value, str):
        if value not in GROUPINGS:
            raise InputError(
                f"unknown {name} {value!r}; choose 'grid', 'superpixels' or pass an integer mask"
            )
        return value
    return mask_members(name, value)


def count_players(groups: Any, patch: int) -> int:
    """The number of players n (static): side**2 for 'grid' and 'superpixels', else the mask's
    n (from bool membership (M, n, 28, 28) or from labels)."""
    if isinstance(groups, str):
        return grid_side(patch) ** 2
    shape = np.shape(groups)
    if len(shape) == 4 and shape[1:] != (28, 28, 1):
        return int(shape[1])  # membership
    return int(np.max(np.asarray(groups))) + 1


def check_groups(options: dict, batch: int, max_players: int = MAX_LABELS) -> int:
    """Cross-option check of ``groups``: 1 or ``batch`` masks, at most ``max_players`` players;
    returns the number of players."""
    groups = options["groups"]
    if not isinstance(groups, str) and groups.shape[0] not in (1, batch):
        raise InputError(f"groups must hold 1 or {batch} masks, got {groups.shape[0]}")
    n = count_players(groups, options["patch"])
    if n > max_players:
        how = (
            f"a larger patch (>= {math.ceil(28 / math.isqrt(max_players))})"
            if isinstance(groups, str)
            else "a mask with fewer labels"
        )
        raise InputError(f"{n} players is more than this method's {max_players}; use {how}")
    return n


def labels_for(groups: Groups, patch: int, x: jax.Array) -> tuple[jax.Array, int]:
    """(int32 (B, H, W) player of every pixel, n) for images ``x`` (B, H, W, C) in the traced
    method. ``groups`` is 'grid', 'superpixels', bool/float membership (M, n, H, W) (what
    ``groups_option`` returns, traced) or a concrete integer mask."""
    b, h, w, _ = x.shape
    if isinstance(groups, str):
        n = grid_side(patch, h) * grid_side(patch, w)
        if groups == "grid":
            labels = jnp.broadcast_to(jnp.asarray(grid_labels(patch, (h, w))), (b, h, w))
        elif groups == "superpixels":
            labels = slic_labels(x.mean(-1), patch)
        else:
            raise InputError(f"unknown groups {groups!r}; choose one of {', '.join(GROUPINGS)}")
        return labels, n
    if isinstance(groups, np.ndarray) and np.issubdtype(groups.dtype, np.integer):
        groups = mask_members("groups", groups)
    members = jnp.asarray(groups)
    labels = jnp.argmax(members, axis=1).astype(jnp.int32)
    return jnp.broadcast_to(labels, (b, h, w)), members.shape[1]


def active_players(labels: jax.Array, x: jax.Array, baseline: jax.Array, n: int) -> jax.Array:
    """bool (B, n): player j of image b has a pixel where x differs from the baseline. Every
    other player (empty, or equal to the baseline already) is a null player of value 0."""
    differs = (x != baseline).any(-1).reshape(x.shape[0], -1)  # (B, HW)
    onehot = jax.nn.one_hot(labels.reshape(x.shape[0], -1), n, dtype=jnp.int32)
    return jnp.einsum("bp,bpn->bn", differs.astype(jnp.int32), onehot) > 0


def spread(values: jax.Array, labels: jax.Array) -> jax.Array:
    """Maps (B, H, W): every pixel gets its player's value from ``values`` (B, n)."""
    b = values.shape[0]
    flat = jnp.take_along_axis(values, labels.reshape(b, -1), axis=1)
    return flat.reshape(labels.shape)
