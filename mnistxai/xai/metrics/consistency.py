"""Consistency (Dasgupta et al. 2022): do inputs that get the same (discretised) explanation get
the same prediction?

Scored within a batch: each example against the batch's other examples. The predictions do not
depend on the map, so the leaderboard computes them once per batch of images (``shared``: one
model evaluation per image) and every method's maps reuse them.
"""

from __future__ import annotations

import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import DEFAULT_CHUNK, chunked_map
from mnistxai.xai.metrics._common import check_inputs, check_positive, normalize_by_max
from mnistxai.xai.metrics.registry import Batch, register_metric

Discretise = Literal["top_n_sign", "sign", "floating_points", "rank"]
DISCRETISE = ("top_n_sign", "sign", "floating_points", "rank")


@functools.partial(jit, static_argnames=("score_fn", "chunk_size"))
def _predicted(score_fn, x, chunk_size):
    return chunked_map(
        lambda idx: jnp.argmax(score_fn(x[idx]), axis=-1).astype(jnp.int32),
        x.shape[0],
        chunk_size,
    )


def predicted_classes(score_fn: Callable, x, *, chunk_size: int = DEFAULT_CHUNK) -> jax.Array:
    """int32 (B,) argmax of ``score_fn`` over (B, H, W, C) ``x``, ``chunk_size`` inputs a pass:
    one model evaluation per image (probabilities and logits give the same classes)."""
    check_inputs(x)
    check_positive(chunk_size=chunk_size)
    return _predicted(score_fn, jnp.asarray(x), int(chunk_size))


def _labels(a, discretise, n, decimals):
    """(B, d) arrays whose rows are equal exactly when Quantus's hashes of the discretised maps
    are (hash collisions aside)."""
    if discretise == "top_n_sign":
        return jnp.sign(a[:, :n])
    if discretise == "sign":
        return jnp.sign(a)
    if discretise == "floating_points":
        return jnp.round(a, decimals)
    return jnp.argsort(a, axis=-1, stable=True)  # "rank": the same order of the pixels


@functools.partial(jax.jit, static_argnames=("discretise", "n", "decimals", "abs", "normalise"))
def _consistency(maps, predicted, discretise, n, decimals, abs, normalise):
    a = jnp.asarray(maps)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    if normalise:
        a = normalize_by_max(a)
    if abs:
        a = jnp.abs(a)
    labels = _labels(a.reshape(a.shape[0], -1), discretise, n, decimals)
    b = labels.shape[0]
    others = ~jnp.eye(b, dtype=bool)
    # one row at a time: the (B, B, d) comparison of all pairs at once would be B times larger
    same_map = jax.lax.map(lambda row: (labels == row).all(-1), labels) & others
    same_pred = predicted[:, None] == predicted[None, :]
    peers = same_map.sum(-1)
    agree = (same_map & same_pred).sum(-1)
    return jnp.where(peers > 0, agree / jnp.maximum(peers, 1), jnp.nan).astype(a.dtype)


def consistency(
    maps,
    predicted,
    *,
    discretise: Discretise = "top_n_sign",
    n: int = 5,
    decimals: int = 2,
    abs: bool = True,
    normalise: bool = True,
) -> jax.Array:
    """Consistency (Dasgupta, Frost & Moshkovitz 2022, "Framework for Evaluating Faithfulness of
    Local Explanations", ICML, arXiv:2202.00734), per example: among the batch's other examples
    whose discretised map equals this one's, the fraction predicted as the same class. Higher is
    better (explanations that agree should mean predictions that agree); in [0, 1]; NaN when no
    other example of the batch shares the discretised map.

    Discretisations (Quantus 0.6's ``discretise_func``s), of the flattened map after dividing it
    by its max |value| (``normalise``) and taking |.| (``abs``):
    ``"top_n_sign"`` the signs of the first ``n`` pixels in row-major order (not the n largest:
    Quantus's ``np.sign(a)[:n]``, so on MNIST the top-left corner's background, on which most
    maps agree; the default, as Quantus, with n=5); ``"sign"`` the signs of all pixels;
    ``"floating_points"`` the values rounded to ``decimals`` (2); ``"rank"`` the order of the
    pixels by value.

    Defaults as Quantus 0.6's ``Consistency`` (top_n_sign with n=5, abs=True, normalise=True).
    Departures: (1) Quantus divides the whole batch by one max; here each map by its own (only
    ``floating_points`` can tell); (2) an example without a peer scores NaN where Quantus's
    denominator + 1e-9 gives 0; (3) "rank" breaks ties by pixel index (a stable sort; Quantus's
    ``np.argsort`` is quicksort); (4) Quantus labels the metric "lower is better"
    (``ScoreDirection.LOWER``), against the paper's reading; here higher is better. Like
    Quantus's, the score depends on which examples share the batch (the leaderboard's
    ``batch_size``): it is a batch-level quantity made per-example.

    Args:
      maps: (B, H, W); predicted: int (B,) predicted classes (``predicted_classes``).
    Returns (B,).
    """
    if np.ndim(maps) != 3:
        raise InputError(f"maps must have shape (B, H, W), got {np.shape(maps)}")
    b = np.shape(maps)[0]
    if b == 0:
        raise InputError("maps is an empty batch")
    p = np.asarray(predicted)
    if p.shape != (b,) or not np.issubdtype(p.dtype, np.integer):
        raise InputError(f"predicted must be {b} integers, got {p.dtype} {p.shape}")
    if not np.isfinite(np.asarray(maps, np.float64)).all():
        raise InputError("maps contains NaN or inf")
    if discretise not in DISCRETISE:
        raise InputError(
            f"unknown discretise {discretise!r}; choose one of {', '.join(DISCRETISE)}"
        )
    check_positive(n=n)
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
        raise InputError(f"decimals must be an integer, got {decimals!r}")
    return _consistency(
        maps, jnp.asarray(p), discretise, int(n), int(decimals), bool(abs), bool(normalise)
    )


def _predictions(batch: Batch, **options):
    return predicted_classes(batch.probabilities, batch.x, chunk_size=batch.chunk_size)


@register_metric(
    "consistency",
    category="robustness",
    options_of=consistency,
    options=("discretise", "n", "decimals", "abs", "normalise"),
    shared=_predictions,
    # Quantus's default discretisation reads the first five pixels, MNIST's black corner: every
    # map then looks alike, so the leaderboard runs it only when named
    default_set=False,
    columns={
        "consistency": (
            "higher",
            "Share of same-explanation peers with the same prediction (Dasgupta 2022)",
        )
    },
)
def _score_consistency(batch: Batch, **options) -> dict:
    predicted = batch.shared
    if predicted is None:
        predicted = _predictions(batch)
    return {"consistency": consistency(batch.maps, predicted, **options)}
