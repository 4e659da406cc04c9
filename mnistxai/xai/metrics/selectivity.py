"""Selectivity (Montavon et al. 2018): square patches removed one by one, most relevant first;
the area under the target probability's curve.

The (example, patch count) pairs go through the model in flat batches of ``chunk_size``
(``faithfulness._path_scores``); a step that removes a patch already equal to the baseline (a
black patch of MNIST background under the black baseline: about half of them) is the previous
input again and is not evaluated.
"""

from __future__ import annotations

import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import IMAGE_SIZE
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    descending_order,
    example_keys,
    ranks_of,
)
from mnistxai.xai.metrics.faithfulness import _path_scores, trapezoid_auc
from mnistxai.xai.metrics.registry import Batch, register_metric


def baseline_fill(x, baseline) -> jax.Array:
    """(B, 1, 1, C) fill values: ``"black"`` is each image's minimum (Quantus's "black" with
    ``batched=True``: the smallest value of the example; 0 on an MNIST digit), a number that
    constant."""
    if isinstance(baseline, str):
        if baseline != "black":
            raise InputError(f"baseline must be 'black' or a number, got {baseline!r}")
        lo = jnp.asarray(x).min((1, 2, 3), keepdims=True)
        return jnp.broadcast_to(lo, lo.shape[:3] + (np.shape(x)[-1],))
    if (
        isinstance(baseline, bool)
        or not isinstance(baseline, numbers.Real)
        or not np.isfinite(baseline)
    ):
        raise InputError(f"baseline must be 'black' or a finite number, got {baseline!r}")
    x = jnp.asarray(x)
    return jnp.full((x.shape[0], 1, 1, x.shape[-1]), baseline, x.dtype)


@functools.partial(jit, static_argnames=("score_fn", "patch", "chunk_size"))
def _selectivity_curves(score_fn, x, attributions, targets, keys, fill, *, patch, chunk_size):
    n, h, w = attributions.shape
    gh, gw = h // patch, w // patch
    a = attributions.astype(jnp.result_type(attributions.dtype, jnp.float32))

    def patch_ranks(ai, k):
        sums = ai.reshape(gh, patch, gw, patch).sum((1, 3)).ravel()
        tie_key = None if k is None else streams.fold(k, "tie_break")
        ranks = ranks_of(descending_order(sums, tie_key)).reshape(gh, gw)
        return jnp.repeat(jnp.repeat(ranks, patch, 0), patch, 1)

    ranks = jax.vmap(patch_ranks)(a, keys)  # keys may be None (an empty pytree)
    curve, evaluated = _path_scores(
        score_fn,
        x,
        jnp.broadcast_to(fill, x.shape),
        ranks,
        targets,
        np.arange(gh * gw + 1),
        chunk_size,
    )
    return {"auc": trapezoid_auc(curve), "curve": curve, "evaluated": evaluated}


def selectivity(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    patch: int = 4,
    baseline="black",
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Selectivity (Montavon, Samek & Müller 2018, arXiv:1706.07979). Lower is better, in [0, 1]
    for probabilities.

    The image is cut into non-overlapping ``patch`` x ``patch`` squares ranked by their summed
    attribution; they are set to ``baseline`` one at a time, most relevant first, until none is
    left, and the target's score is read after each (pass softmax probabilities: Quantus and the
    leaderboard do). ``curve``: the P + 1 scores, the first on the intact image; ``auc``: its
    trapezoid area with the x axis (patches removed / P) scaled to [0, 1].

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); patch: 4 (must divide H and W: 49 patches on MNIST).
      baseline: ``"black"`` (each image's minimum, as Quantus) or a number.
      key: breaks ties between patch sums at random (one key or (B,) keys); None: by index.
    Returns:
      ``{"auc": (B,), "curve": (B, P + 1), "evaluated": int32 (B,)}`` (the model passes run per
      image: patches already equal to the baseline are skipped, the score carried over).

    Departures from Quantus 0.6's ``Selectivity``: its patch is 8, with the 28 px image padded
    to 32 (16 patches, the padding counted as zero relevance); here 4, which divides 28 (49
    patches, no padding; a patch that does not divide the image is an error). Its curve has no
    intact-image point (``curve[:, 1:]`` is Quantus's curve on the same grid) and its area is
    ``np.trapz(curve, dx=1)``, not scaled: on the same P patches Quantus's value is
    ``P * auc - (c_0 + c_1) / 2``, c_k = ``curve[:, k]``. Ties:
    ``key`` (Quantus: ``np.argsort``, unspecified).
    """
    check_inputs(x, attributions, targets)
    check_positive(patch=patch, chunk_size=chunk_size)
    h, w = np.shape(x)[1:3]
    if h % patch or w % patch:
        raise InputError(f"patch {patch} must divide the image size {h}x{w}")
    fill = baseline_fill(x, baseline)
    keys = None if key is None else example_keys(key, np.shape(x)[0])
    return _selectivity_curves(
        score_fn,
        x,
        attributions,
        targets,
        keys,
        fill.astype(jnp.asarray(x).dtype),
        patch=int(patch),
        chunk_size=int(chunk_size),
    )


# ---- the leaderboard's entry (mnistxai.xai.metrics.registry) -------------------------------------


def _check(options):
    h, w = IMAGE_SIZE
    if h % options["patch"] or w % options["patch"]:
        raise InputError(f"patch {options['patch']} must divide the image size {h}x{w}")


@register_metric(
    "selectivity",
    category="faithfulness",
    options_of=selectivity,
    options=("patch",),
    check=_check,
    columns={
        "selectivity_auc": (
            "lower",
            "Selectivity: AUC of the target probability as 4x4 patches are blackened, most "
            "relevant first (Montavon 2018)",
        )
    },
)
def _score_selectivity(batch: Batch, **options) -> dict:
    r = selectivity(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"selectivity_auc": r["auc"], "selectivity_curve": r["curve"]}
