"""Focus (Arias-Duart et al. 2022): explain a 2x2 mosaic of four digits, two of them of the
explained class, and score the share of the positive relevance that falls on those two.

The mosaics are built from the batch's own images (``make_mosaics``), the method re-explains them
(``reexplains``: the leaderboard runs it on its robustness subset), and ``focus`` scores the new
maps against the mosaics' target quadrants. Focus builds its own ground truth: it needs no masks.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai.metrics._common import example_keys
from mnistxai.xai.metrics.registry import Batch, register_metric

QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _check_images(images, labels) -> None:
    shape = np.shape(images)
    if len(shape) != 4:
        raise InputError(f"images must have shape (B, H, W, C), got {shape}")
    if shape[0] == 0:
        raise InputError("images is an empty batch")
    if shape[1] % 2 or shape[2] % 2:
        raise InputError(f"images must have an even height and width to halve, got {shape[1:3]}")
    t = np.asarray(labels)
    if t.shape != shape[:1] or not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"labels must be {shape[0]} integers, got {t.dtype} {t.shape}")
    if not np.isfinite(np.asarray(images, np.float64)).all():
        raise InputError("images contains NaN or inf")


def _pick(gumbel, logits):
    """The index drawn with probabilities softmax(logits) (-inf: never) by the Gumbel-max
    trick, -1 when all are -inf."""
    return jnp.where(jnp.isfinite(logits).any(), jnp.argmax(logits + gumbel), -1)


@jax.jit
def _make_mosaics(images, labels, keys):
    b, h, w, c = images.shape
    # 2x2 mean pooling: the CNN takes HxW inputs only, so each digit shrinks to (H/2, W/2)
    small = images.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))
    labels = labels.astype(jnp.int32)
    same = labels[:, None] == labels[None, :]
    others = ~jnp.eye(b, dtype=bool)
    # other classes each equally likely, then an image of that class (Quantus draws an equal
    # number of images from every other class)
    per_class = same.sum(-1)
    weight = jnp.where(~same, -jnp.log(per_class.astype(images.dtype))[None, :], -jnp.inf)

    def one(i, key):
        # one draw of random bits per example (each random call adds its own compiled rounds)
        u = jax.random.uniform(key, (3 * b + 4,), images.dtype, minval=jnp.finfo(images.dtype).tiny)
        g = -jnp.log(-jnp.log(u[: 3 * b])).reshape(3, b)
        mate = _pick(g[0], jnp.where(same[i] & others[i], 0.0, -jnp.inf))
        mate = jnp.where(mate < 0, i, mate)  # no other image of the class: the image itself
        first, second = _pick(g[1], weight[i]), _pick(g[2], weight[i])
        ok = first >= 0
        members = jnp.stack([i, mate, jnp.where(ok, first, i), jnp.where(ok, second, i)])
        order = jnp.argsort(u[3 * b :])  # a uniform random order of the four
        return members[order], (order < 2) & ok  # the first two members are the target class

    members, target = jax.vmap(one)(jnp.arange(b), keys)  # (B, 4) each, in QUADRANTS order
    tiles = small[members]  # (B, 4, H/2, W/2, C)
    top = jnp.concatenate([tiles[:, 0], tiles[:, 1]], axis=2)
    bottom = jnp.concatenate([tiles[:, 2], tiles[:, 3]], axis=2)
    mosaics = jnp.concatenate([top, bottom], axis=1)
    masks = jnp.repeat(jnp.repeat(target.reshape(b, 2, 2), h // 2, axis=1), w // 2, axis=2)
    return mosaics, masks, members


def make_mosaics(images, labels, key) -> tuple[jax.Array, jax.Array, jax.Array]:
    """2x2 mosaics of the batch's own images, one per example: (mosaics (B, H, W, C), bool
    target-quadrant masks (B, H, W), int32 members (B, 4) indices of the images in the quadrants
    top-left, top-right, bottom-left, bottom-right).

    Mosaic i holds image i, one other image of its class (drawn uniformly; the image itself when
    the batch has no other), and two images of other classes (each drawn by picking one of the
    other classes present uniformly, then an image of it, independently, so both may be the same
    image, as in Quantus's draws with replacement), in a random order; its mask marks the two
    target-class quadrants. Where the batch holds no image of another class the mosaic is image
    i four times and its mask is all False (``focus`` then gives NaN).

    Departures from Quantus 0.6's ``mosaic_creation``: each image is halved by 2x2 mean pooling
    so that the mosaic is H x W, the input size of a model that takes only that (Quantus tiles the
    full images into a 2H x 2W mosaic, for models that accept it); halved digits are off the
    training distribution, so the model's explanations of them are of inputs it never saw. The
    images come from the batch (so a mosaic depends on which images share the batch) where Quantus
    draws ``mosaics_per_class`` mosaics for every class from a whole data set.

    Args:
      images: float (B, H, W, C), H and W even; labels: int (B,) the class of each image (the
        leaderboard passes the explained targets); key: one key or (B,) keys.
    """
    _check_images(images, labels)
    b = np.shape(images)[0]
    x = jnp.asarray(images)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return _make_mosaics(x, jnp.asarray(labels), example_keys(key, b))


@functools.partial(jax.jit, static_argnames=("abs",))
def _focus(maps, masks, abs):
    a = jnp.asarray(maps)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    a = jnp.abs(a) if abs else jnp.maximum(a, 0)
    a = a.reshape(a.shape[0], -1)
    s = jnp.asarray(masks).astype(bool).reshape(a.shape)
    total = a.sum(-1)
    share = jnp.where(s, a, 0).sum(-1) / jnp.where(total > 0, total, 1)
    return jnp.where(s.any(-1), share, jnp.nan)


def focus(maps, quadrant_mask, *, abs: bool = False) -> jax.Array:
    """Focus (Arias-Duart, Parés, Garcia-Gasulla & Giménez-Ábalos 2022, "Focus! Rating XAI
    Methods and Finding Biases", FUZZ-IEEE, arXiv:2109.15035): the share of a mosaic's positive
    relevance on the target-class images, sum_S max(a, 0) / sum max(a, 0). Higher is better; in
    [0, 1], 0.5 for a uniform map (two of the four quadrants), 1 for one on the target images
    only.

    ``abs``: on |a| instead of its positive part (Quantus 0.6's ``Focus`` default: False).
    As Quantus, except: no 1e-9 in the denominator (Quantus first divides the batch by its max
    |a| so its 1e-9 is relative to 1; without that step the ratio is scale-free and a map with no
    positive relevance scores 0, as Quantus's 0 / 1e-9); ``quadrant_mask`` may be any bool mask,
    and an all-False one scores NaN (``make_mosaics``: no mosaic could be built).

    Args:
      maps: (B, H, W) explanations of the mosaics for their target class.
      quadrant_mask: bool (B, H, W), True on the target-class images (``make_mosaics``).
    Returns (B,).
    """
    if np.ndim(maps) != 3:
        raise InputError(f"maps must have shape (B, H, W), got {np.shape(maps)}")
    if np.shape(quadrant_mask) != np.shape(maps):
        raise InputError(
            f"quadrant_mask must have the maps' shape {np.shape(maps)}, "
            f"got {np.shape(quadrant_mask)}"
        )
    if not np.isfinite(np.asarray(maps, np.float64)).all():
        raise InputError("maps contains NaN or inf")
    return _focus(maps, quadrant_mask, bool(abs))


@functools.partial(jit, static_argnames=("explain_fn", "abs"))
def _focus_of_method(explain_fn: Callable, model, x, targets, keys, abs):
    mosaic_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    explain_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    mosaics, masks, _ = _make_mosaics(x, targets, mosaic_keys)
    maps = explain_fn(model, mosaics, targets, explain_keys)
    return _focus(maps, masks, abs)


def focus_of_method(
    explain_fn: Callable, model, x, targets, *, key, abs: bool = False
) -> jax.Array:
    """``focus`` of ``explain_fn``'s maps of ``make_mosaics(x, targets, ...)`` for ``targets``:
    one explanation per image (of its mosaic), nothing else. ``explain_fn(model, x, targets,
    keys) -> (B, H, W)``; key: one key or (B,) keys (split: mosaics, explanations). (B,)."""
    _check_images(x, targets)
    b = np.shape(x)[0]
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return _focus_of_method(
        explain_fn, model, x, jnp.asarray(targets), example_keys(key, b), bool(abs)
    )


@register_metric(
    "focus",
    category="localisation",
    options_of=focus,
    options=("abs",),
    reexplains=True,
    default_set=False,
    columns={
        "focus": (
            "higher",
            "Share of positive relevance on the target digits of 2x2 mosaics (Arias-Duart 2022)",
        )
    },
)
def _score_focus(batch: Batch, **options) -> dict:
    return {
        "focus": focus_of_method(
            batch.explain_fn, batch.classifier, batch.x, batch.targets, key=batch.keys, **options
        )
    }
