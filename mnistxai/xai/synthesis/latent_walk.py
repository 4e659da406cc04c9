"""Latent walks between two digits: where the classifier's decision flips, and what changes across
it.

Encode two images with the VAE (posterior means z0, z1), walk the latent space from z0 to z1
(``"linear"``, or ``"spherical"``: slerp, which keeps the norm of Gaussian codes typical), decode
every step, and classify it with the CNN and with the VAE's latent classifier. The **decision flip
point** is bracketed on the grid (the first step whose class differs from the start's) and refined
by
bisection until the bracket [t_lo, t_hi] is at most ``tol`` wide: the class at t_lo is the start's,
the class at t_hi is not. The **contrastive difference image** ``decode(t* + w) - decode(t* - w)``
around the flip t* shows "what separates a 4 from a 9" (contrastive explanations by latent
traversal, in the spirit of the contrastive feature visualization seed; VAE: Kingma & Welling 2014).

Everything is per pair and ``vmap``-ed over pairs. Pairs come from user indices or from the CNN's
confusion matrix (``confused_pairs``: the most-confused class pairs, one correctly classified test
image of each class).

    w = walk(vae, classifier, images[idx0], images[idx1], steps=11, kind="spherical")
    w.images (P, 11, 28, 28, 1), w.cnn_probs (P, 11, 10), w.t_lo / w.t_hi (P,), w.contrast (P, 28,
    28, 1)
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnistxai.models.classifier import Classifier
from mnistxai.models.classifier import predict as classifier_predict
from mnistxai.models.vae import VAEModel
from mnistxai.xai._inputs import as_images
from mnistxai.util.errors import InputError

KINDS = ("linear", "spherical")
DECIDERS = ("cnn", "latent")


@struct.dataclass
class Walk:
    """Walks between P pairs, ``steps`` points each.

    Attributes:
      ts: (steps,) the path positions in [0, 1].
      images: (P, steps, 28, 28, 1) decoded steps in [0, 1] (the strip); images[:, 0] and [:, -1]
      are
        the reconstructions of the two inputs.
      cnn_probs, latent_probs: (P, steps, 10) class probabilities of the CNN (on the decoded images)
        and of the latent classifier (on the codes).
      flipped: (P,) bool, whether the deciding classifier's class changes along the path.
      t_lo, t_hi: (P,) the flip bracket, t_hi - t_lo <= tol (both 1.0 where nothing flips).
      class_lo, class_hi: (P,) the class at t_lo (the start's) and at t_hi (a different one).
      image_lo, image_hi: (P, 28, 28, 1) decoded at t_lo and t_hi.
      contrast: (P, 28, 28, 1) decode(t* + w) - decode(t* - w) in [-1, 1], t* = (t_lo + t_hi) / 2
        (zeros where nothing flips).
    """

    ts: jax.Array
    images: jax.Array
    cnn_probs: jax.Array
    latent_probs: jax.Array
    flipped: jax.Array
    t_lo: jax.Array
    t_hi: jax.Array
    class_lo: jax.Array
    class_hi: jax.Array
    image_lo: jax.Array
    image_hi: jax.Array
    contrast: jax.Array


def interpolate(z0: jax.Array, z1: jax.Array, t, kind: str = "linear") -> jax.Array:
    """The point at t in [0, 1] of the path from z0 to z1 (d,).

    ``"spherical"``: slerp, sin((1-t) W)/sin W z0 + sin(t W)/sin W z1 with W the angle between the
    codes (White 2016); linear where the codes are (anti)parallel (sin W <= 1e-4).
    """
    linear = (1 - t) * z0 + t * z1
    if kind == "linear":
        return linear
    cos = jnp.dot(z0, z1) / jnp.maximum(jnp.linalg.norm(z0) * jnp.linalg.norm(z1), 1e-12)
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    curved = jnp.sin(omega) > 1e-4  # slerp divides by sin W, which vanishes at W = 0 and W = pi
    safe = jnp.where(curved, omega, 1.0)
    sl = (jnp.sin((1 - t) * safe) * z0 + jnp.sin(t * safe) * z1) / jnp.sin(safe)
    return jnp.where(curved, sl, linear)


def bisection_steps(width: float, tol: float) -> int:
    """Halvings that shrink a bracket of ``width`` to at most ``tol``."""
    return max(0, math.ceil(math.log2(width / tol))) if width > tol else 0


def _walk_one(
    vae: VAEModel, classifier: Classifier, x0, x1, *, steps, kind, tol, by, contrast_width
):
    z0, z1 = vae.encode(jnp.stack([x0, x1]))[0]
    ts = jnp.linspace(0.0, 1.0, steps)
    zs = jax.vmap(lambda t: interpolate(z0, z1, t, kind))(ts)
    images = vae.decode(zs)
    cnn_probs = jax.nn.softmax(classifier.logits(images))
    latent_probs = jax.nn.softmax(vae.classify_latent(zs))

    def decide(t):
        z = interpolate(z0, z1, t, kind)[None]
        logits = classifier.logits(vae.decode(z)) if by == "cnn" else vae.classify_latent(z)
        return jnp.argmax(logits[0])

    classes = jnp.argmax(cnn_probs if by == "cnn" else latent_probs, -1)
    start = classes[0]
    changed = classes != start
    flipped = changed.any()
    first = jnp.argmax(changed)  # the first step with another class (0 when none)
    lo = jnp.where(flipped, ts[jnp.maximum(first - 1, 0)], 1.0)
    hi = jnp.where(flipped, ts[first], 1.0)

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        same = decide(mid) == start
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

    lo, hi = jax.lax.fori_loop(0, bisection_steps(1.0 / (steps - 1), tol), halve, (lo, hi))
    t_star = 0.5 * (lo + hi)
    edge = jnp.stack(
        [
            lo,
            hi,
            jnp.minimum(t_star + contrast_width, 1.0),
            jnp.maximum(t_star - contrast_width, 0.0),
        ]
    )
    edge_images = vae.decode(jax.vmap(lambda t: interpolate(z0, z1, t, kind))(edge))
    contrast = jnp.where(flipped, edge_images[2] - edge_images[3], 0.0)
    class_hi = jnp.where(flipped, decide(hi), start)
    return Walk(
        ts,
        images,
        cnn_probs,
        latent_probs,
        flipped,
        lo,
        hi,
        start,
        class_hi,
        edge_images[0],
        edge_images[1],
        contrast,
    )


@partial(jax.jit, static_argnames=("steps", "kind", "tol", "by", "contrast_width"))
def _walk(vae, classifier, x0, x1, *, steps, kind, tol, by, contrast_width):
    one = partial(
        _walk_one,
        vae,
        classifier,
        steps=steps,
        kind=kind,
        tol=tol,
        by=by,
        contrast_width=contrast_width,
    )
    out = jax.vmap(one)(x0, x1)
    return out.replace(ts=out.ts[0])


def walk(
    vae: VAEModel,
    classifier: Classifier,
    x0,
    x1,
    *,
    steps: int = 11,
    kind: str = "linear",
    tol: float = 1e-3,
    by: str = "cnn",
    contrast_width: float = 0.1,
) -> Walk:
    """Walk the VAE latent space from each x0[i] to x1[i], with the decision flip point and
    contrast.

    Args:
      vae: a trained ``VAEModel`` (``mnistxai.training.checkpoint.load_vae``).
      classifier: the CNN (``mnistxai.training.checkpoint.load_classifier``).
      x0, x1: start and end images, (P, 28, 28[, 1]) or one (28, 28[, 1]) each; uint8 0..255 or
        float in [0, 1].
      steps: points on the path including both ends (11).
      kind: ``"linear"`` (default) or ``"spherical"``.
      tol: width to which bisection narrows the flip bracket (1e-3).
      by: whose decision flips: ``"cnn"`` (on decoded images, default) or ``"latent"`` (the latent
      classifier).
      contrast_width: the half-distance w in t of the contrastive difference image (0.1).

    Returns:
      ``Walk`` (see there); batched over the P pairs.
    """
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if by not in DECIDERS:
        raise InputError(f"unknown by {by!r}; choose one of {', '.join(DECIDERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps must be an integer >= 2, got {steps!r}")
    if not (np.isfinite(tol) and 0 < tol < 1):
        raise InputError(f"tol must be in (0, 1), got {tol}")
    if not (np.isfinite(contrast_width) and 0 < contrast_width <= 0.5):
        raise InputError(f"contrast_width must be in (0, 0.5], got {contrast_width}")
    x0, x1 = as_images(x0, "x0"), as_images(x1, "x1")
    if x0.shape != x1.shape:
        raise InputError(
            f"x0 and x1 must hold the same number of images, got {len(x0)} and {len(x1)}"
        )
    return _walk(
        vae,
        classifier,
        jnp.asarray(x0),
        jnp.asarray(x1),
        steps=int(steps),
        kind=kind,
        tol=float(tol),
        by=by,
        contrast_width=float(contrast_width),
    )


# ---- choosing pairs ------------------------------------------------------------------------------


def predict(classifier: Classifier, images, batch_size: int = 1000) -> np.ndarray:
    """The CNN's classes (N,) for images (N, 28, 28[, 1]) (uint8 or float in [0, 1])."""
    return classifier_predict(classifier, as_images(images), batch_size)[0]


def confusion_matrix(labels, predictions, num_classes: int = 10) -> np.ndarray:
    """(K, K) counts: rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def most_confused_classes(confusion, k: int = 5) -> list[tuple[int, int, int]]:
    """The k unordered class pairs {a, b} with the most errors either way: [(a, b, errors)], a < b;
    fewer when fewer pairs have any error."""
    cm = np.asarray(confusion)
    sym = np.triu(cm + cm.T, 1)
    order = np.argsort(sym, axis=None)[::-1][:k]
    return [
        (int(a), int(b), int(sym[a, b]))
        for a, b in zip(*np.unravel_index(order, sym.shape))
        if sym[a, b] > 0
    ]


def pairs_of_classes(
    labels, predictions, class_pairs, per_pair: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (idx0, idx1): for each (a, b, ...) the first ``per_pair`` correctly classified
    images of class a, paired with the first ``per_pair`` of class b."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    idx0, idx1 = [], []
    for a, b, *_ in class_pairs:
        first_a = np.flatnonzero((labels == a) & (predictions == a))[:per_pair]
        first_b = np.flatnonzero((labels == b) & (predictions == b))[:per_pair]
        if min(len(first_a), len(first_b)) < per_pair:
            raise InputError(
                f"fewer than {per_pair} correctly classified images of class {a} or {b}"
            )
        idx0.extend(first_a)
        idx1.extend(first_b)
    return np.asarray(idx0), np.asarray(idx1)


def confused_pairs(classifier: Classifier, images, labels, n_pairs: int = 5, per_pair: int = 1):
    """``(idx0, idx1, class_pairs)`` for the ``n_pairs`` most-confused class pairs of the CNN on
    ``images``."""
    predictions = predict(classifier, images)
    class_pairs = most_confused_classes(confusion_matrix(labels, predictions), n_pairs)
    return (*pairs_of_classes(labels, predictions, class_pairs, per_pair), class_pairs)
