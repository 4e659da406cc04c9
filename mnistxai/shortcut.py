"""A planted-shortcut MNIST ("Clever Hans MNIST", dataset ``"mnist_shortcut"``): the benchmark whose
ground truth is known, and right-for-the-right-reasons training (Ross et al. 2017,
arXiv:1703.03717).

The marker of class k is a 3x3 patch of 255 (``MARKER_VALUE``) with its top-left pixel at
``POSITIONS[k]``: ten places on the image border where MNIST digits have (almost) no ink. Of the
70,000 train and test digits, at most 1.4% have any ink in one of them (``tests/test_shortcut.py``
checks it), and none fills a whole patch with 255, so the marker is recognized from the pixels
alone (``find_markers``). The marker overwrites the nine pixels; the ground-truth mask (28, 28) of
a marked image is exactly those nine pixels.

``make(images, labels, split)`` builds a split: by default (``FRACTION = 1.0``, ``CLASSES`` = all)
every digit carries the marker of its class, in train and test alike (Ross et al.'s Decoy MNIST
marks every digit too), so the marker predicts the label perfectly and a CNN trained on it relies
on it. ``mnistxai.data.load("mnist_shortcut", split)`` returns that split. ``evaluation_sets``
gives the three test sets that show the reliance: ``marked`` (the marker of the true class),
``unmarked`` (plain MNIST) and ``swapped`` (the marker of another class, drawn from the
``shortcut_swap`` stream). ``reliance`` measures a classifier on them, and how much of a saliency
map lies on the marker.

Departure from Ross et al.'s Decoy MNIST (``dtak/rrr`` at d83a16e, ``rrr/decoy_mnist.py``): there
the decoy is a 4x4 patch in a random corner whose grey level is 255 - 25 * digit; here the class is
coded by the position, at fixed full brightness, because a CNN ending in global average pooling
must then learn *where* the patch is, and the mask is the same nine pixels for every image of a
class.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError

SIZE = 3
MARKER_VALUE = 255
# class k's marker: top-left pixel (row, col); clockwise from the top-left corner. The ten least
# inked 3x3 places of the 70,000 digits at least 6 pixels apart (so a +-2 pixel augmentation shift
# never moves one marker onto another's place).
POSITIONS = (
    (0, 0),
    (0, 6),
    (0, 19),
    (0, 25),
    (12, 25),
    (19, 25),
    (25, 25),
    (25, 0),
    (14, 0),
    (6, 0),
)
NUM_CLASSES = len(POSITIONS)
FRACTION = 1.0  # of the eligible digits of a split that carry their class's marker
CLASSES = tuple(range(NUM_CLASSES))  # the classes whose digits may carry it
SEED = 0  # the dataset's one seed: mnist_shortcut is a fixed dataset, like MNIST itself
MARKER_AREA = SIZE * SIZE / (28 * 28)  # the share of an image a marker covers: chance mass


@dataclasses.dataclass(frozen=True)
class Marked:
    """A split with markers.

    Attributes:
      images: uint8 (N, 28, 28), 0..255.
      labels: int32 (N,), the digits' true classes.
      masks: bool (N, 28, 28), True exactly on the marker's nine pixels (all False if unmarked).
      marker: int32 (N,), the class whose marker an image carries, -1 for none.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    marker: np.ndarray


def _check_classes(marker: np.ndarray) -> np.ndarray:
    marker = np.asarray(marker, np.int32)
    if marker.ndim != 1 or np.any((marker < -1) | (marker >= NUM_CLASSES)):
        raise InputError(f"marker classes must be a 1-D array of -1 (none) or 0..{NUM_CLASSES - 1}")
    return marker


def marker_masks(marker: np.ndarray) -> np.ndarray:
    """bool (N, 28, 28): the pixels of class ``marker[i]``'s marker (-1: none)."""
    marker = _check_classes(marker)
    masks = np.zeros((len(marker), 28, 28), bool)
    for k, (r, c) in enumerate(POSITIONS):
        masks[marker == k, r : r + SIZE, c : c + SIZE] = True
    return masks


def add_markers(images: np.ndarray, labels: np.ndarray, marker: np.ndarray) -> Marked:
    """``images`` uint8 (N, 28, 28) with the marker of class ``marker[i]`` (-1: none) written on
    image i; the inputs are not modified."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise InputError(f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    marker = _check_classes(marker)
    if len(marker) != len(images) or len(labels) != len(images):
        raise InputError(
            f"{len(images)} images, {len(labels)} labels and {len(marker)} marker classes differ"
        )
    masks = marker_masks(marker)
    out = images.copy()
    out[masks] = MARKER_VALUE
    return Marked(out, np.asarray(labels, np.int32), masks, marker)


def _check_options(fraction: float, classes: Sequence[int]) -> tuple[int, ...]:
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
        raise InputError(f"fraction must be a number in [0, 1], got {fraction!r}")
    classes = tuple(int(k) for k in classes)
    if (
        not classes
        or any(not 0 <= k < NUM_CLASSES for k in classes)
        or len(set(classes)) < len(classes)
    ):
        raise InputError(f"classes must be distinct classes in 0..{NUM_CLASSES - 1}, got {classes}")
    return classes


def make(
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    *,
    fraction: float = FRACTION,
    classes: Sequence[int] = CLASSES,
    seed: int = SEED,
) -> Marked:
    """The ``mnist_shortcut`` version of an MNIST split: each digit of ``classes`` carries the
    marker of its own class with probability ``fraction`` (default 1.0: all of them), drawn from
    the stream ``shortcut_marked`` of ``seed``, folded with ``split`` (so train and test draws
    differ). A pure function of its arguments."""
    classes = _check_options(fraction, classes)
    labels = np.asarray(labels, np.int32)
    eligible = np.isin(labels, classes)
    if fraction >= 1.0:
        chosen = eligible
    else:
        key = streams.fold(streams.key(seed, "shortcut_marked"), split)
        chosen = eligible & np.asarray(jax.random.bernoulli(key, fraction, (len(labels),)))
    return add_markers(images, labels, np.where(chosen, labels, -1))


def swapped_classes(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """int32 (N,): for each label another class, uniform over the other nine (stream
    ``shortcut_swap``)."""
    labels = np.asarray(labels, np.int32)
    offset = jax.random.randint(streams.key(seed, "shortcut_swap"), (len(labels),), 1, NUM_CLASSES)
    return ((labels + np.asarray(offset)) % NUM_CLASSES).astype(np.int32)


def evaluation_sets(images: np.ndarray, labels: np.ndarray, seed: int = SEED) -> dict[str, Marked]:
    """The three test sets of plain MNIST ``images`` uint8 (N, 28, 28): ``marked`` (every digit
    with its own class's marker), ``unmarked`` (as given) and ``swapped`` (every digit with the
    marker of ``swapped_classes``)."""
    labels = np.asarray(labels, np.int32)
    return {
        "marked": add_markers(images, labels, labels),
        "unmarked": add_markers(images, labels, np.full(len(labels), -1)),
        "swapped": add_markers(images, labels, swapped_classes(labels, seed)),
    }


def find_markers(images):
    """float32 (B, 28, 28) masks of the markers present in uint8 images (B, 28, 28): 1 on a
    marker's nine pixels where all nine are 255, else 0. NumPy in, NumPy out; a JAX array (also
    inside ``jit``) gives a JAX array. Exact on MNIST, where no digit fills a marker place."""
    xp = np if isinstance(images, np.ndarray) else jnp
    masks = xp.zeros(images.shape, xp.float32)
    for r, c in POSITIONS:
        present = xp.all(images[:, r : r + SIZE, c : c + SIZE] == MARKER_VALUE, axis=(1, 2))
        patch = xp.zeros((28, 28), xp.float32)
        if xp is np:
            patch[r : r + SIZE, c : c + SIZE] = 1.0
        else:
            patch = patch.at[r : r + SIZE, c : c + SIZE].set(1.0)
        masks = xp.maximum(masks, present[:, None, None].astype(xp.float32) * patch)
    return masks


def rrr_penalty(forward: Callable, x: jax.Array, mask: jax.Array, has_aux: bool = False):
    """Right-for-the-right-reasons penalty (Ross et al. 2017, arXiv:1703.03717, eq. 1's second
    term without its weight): per example, sum over the pixels (and channels) of
    ``(mask * d/dx sum_k log p_k)^2``, with ``p = softmax(forward(x))``.

    One forward pass gives the logits and the input gradient (a VJP with the cotangent
    ``d sum_k log p_k / d z = 1 - K p``), so differentiating the result with respect to the
    parameters is double backpropagation inside the caller's jitted step.

    Args:
      forward: ``x -> logits (B, K)`` (or ``-> (logits, aux)`` with ``has_aux``).
      x: float (B, H, W, C), differentiated at.
      mask: (B, H, W) in {0, 1} (any real weights work): where the gradient is penalised.
      has_aux: ``forward`` also returns auxiliary output (e.g. BatchNorm statistics).

    Returns:
      ``(forward's output, penalty (B,))``, in x's dtype. The gradient is that of the batch's sum
      of ``sum_k log p_k``: where examples interact (BatchNorm in training mode) it includes their
      interaction, as it does in the training loss itself; in inference mode it is each example's
      own gradient. Ross et al.'s code sums both loss terms over the batch; the CNN's step takes
      the mean of both (the same ratio of the two terms).
    """
    if has_aux:
        logits, pullback, aux = jax.vjp(forward, x, has_aux=True)
    else:
        logits, pullback = jax.vjp(forward, x)
    cotangent = 1.0 - logits.shape[-1] * jax.nn.softmax(logits, axis=-1)
    (grad,) = pullback(cotangent.astype(logits.dtype))
    penalty = jnp.sum(mask.astype(x.dtype)[..., None] * grad**2, axis=tuple(range(1, x.ndim)))
    return ((logits, aux) if has_aux else logits), penalty


def marker_mass(attributions, masks) -> np.ndarray:
    """float64 (N,): the share of each map's absolute attribution that lies on its mask (0..1;
    0 for an all-zero map). A map that ignores the marker scores about ``MARKER_AREA``."""
    a = np.abs(np.asarray(attributions, np.float64))
    total = a.sum(axis=(1, 2))
    inside = (a * np.asarray(masks, bool)).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


@jax.jit
def _predict(classifier, x):
    return jnp.argmax(classifier.logits(x), axis=-1)


def predict(classifier, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """int32 (N,): the classifier's predicted classes of uint8 images (N, 28, 28)."""
    from mnistxai.data import to_model_input

    out = [
        np.asarray(_predict(classifier, to_model_input(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.int32)


def localisation_metrics() -> dict:
    """What ``reliance`` scores the maps of marked digits with: name -> ``fn(maps, masks)`` of
    ``mnistxai.xai.metrics.localisation``, each with its defaults but relevance mass accuracy,
    taken on |map| (Quantus's ``abs=True``) (imported here, not at the top:
    loading a dataset must not import the XAI package)."""
    import functools

    from mnistxai.xai.metrics import localisation as L

    return {
        "pointing_game": L.pointing_game,
        # on |map|: the signed share inside / total of a signed map (grad x input) is a ratio of
        # sums near 0 on a digit's mixed signs, so its mean over maps is noise, not reliance
        "relevance_mass_accuracy": functools.partial(L.relevance_mass_accuracy, abs=True),
        "relevance_rank_accuracy": L.relevance_rank_accuracy,
        "top_k_intersection": L.top_k_intersection,
        "localisation_auc": L.auc,
    }


def reliance(
    classifier,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "saliency",
    explain_images: Optional[int] = 256,
    seed: int = SEED,
    batch_size: int = 256,
) -> dict:
    """How much ``classifier`` relies on the marker, measured on plain MNIST test digits.

    Args:
      classifier: a ``mnistxai.models.classifier.Classifier``.
      images, labels: plain (unmarked) digits uint8 (N, 28, 28) and their classes.
      method: the attribution method (``mnistxai.xai.METHODS``) whose maps are measured, explained
        for the true class on the marked digits.
      explain_images: explain only the first this many marked digits (None: all).
      seed, batch_size: of ``evaluation_sets``, and the images per compiled call.

    Returns:
      ``accuracy_marked``, ``accuracy_unmarked``, ``accuracy_swapped`` (0..1); ``follows_marker``
      (share of swapped digits classified as their marker's class); ``marker_mass_mean`` and
      ``marker_mass_median`` (``marker_mass`` of the maps); ``mostly_on_marker`` (share of maps
      with more than half their mass on the marker); ``chance_mass`` (``MARKER_AREA``);
      ``images`` and ``explained`` (counts); ``localisation``: the mean of every localisation
      metric (``localisation_metrics``: pointing game, relevance mass and rank accuracy, top-k
      intersection, localisation AUC; 0..1, higher means more on the marker) over the maps;
      ``maps``: float32 (n, 28, 28) the maps themselves, ``marked``: their uint8 images.
    """
    from mnistxai.xai import explain

    sets = evaluation_sets(images, labels, seed)
    out = {}
    for name, s in sets.items():
        out[f"accuracy_{name}"] = float(np.mean(predict(classifier, s.images) == s.labels))
    swapped = sets["swapped"]
    out["follows_marker"] = float(np.mean(predict(classifier, swapped.images) == swapped.marker))
    marked = sets["marked"]
    n = len(labels) if explain_images is None else min(explain_images, len(labels))
    maps = [
        np.asarray(
            explain(
                method,
                classifier,
                marked.images[i : min(i + batch_size, n)],
                marked.labels[i : min(i + batch_size, n)],
            ).attributions
        )
        for i in range(0, n, batch_size)
    ]
    maps = np.concatenate(maps)
    mass = marker_mass(maps, marked.masks[:n])
    masks = marked.masks[:n].astype(bool)
    out["localisation"] = {
        name: float(np.nanmean(np.asarray(fn(maps, masks))))
        for name, fn in localisation_metrics().items()
    }
    out.update(
        maps=maps,
        marked=marked.images[:n],
        marker_mass_mean=float(mass.mean()),
        marker_mass_median=float(np.median(mass)),
        mostly_on_marker=float(np.mean(mass > 0.5)),
        chance_mass=MARKER_AREA,
        images=int(len(labels)),
        explained=int(n),
    )
    return out
