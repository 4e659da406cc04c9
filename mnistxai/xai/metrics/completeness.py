"""Completeness (Sundararajan et al. 2017): do the attributions add up to the output's change from
a baseline? An axiom of integrated gradients, which holds exactly for IG in the limit of many
steps, for grad x input on a linear model, and for DeepLIFT's rescale rule; most other methods
need not satisfy it, and the gap says by how much they do not.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
)
from mnistxai.xai.metrics.registry import Batch, register_metric


@functools.partial(jit, static_argnames=("score_fn", "chunk_size"))
def _completeness(score_fn, x, attributions, targets, baseline, *, chunk_size):
    dtype = jnp.result_type(x.dtype, attributions.dtype, jnp.float32)
    b = x.shape[0]
    fill = jnp.full(x.shape[1:], baseline, x.dtype)

    # the baseline is one constant image, the same for every example: evaluated once, as input
    # b of the flat batch (no separate call of one input)
    def scores(i):
        inputs = jnp.where((i < b)[:, None, None, None], x[jnp.minimum(i, b - 1)], fill)
        return score_fn(inputs)

    out = chunked(scores, b + 1, chunk_size)
    fx, fb = at_targets(out[:b], targets), out[b][targets]
    delta = (fx - fb).astype(dtype)
    total = attributions.astype(dtype).sum((1, 2))
    gap = jnp.abs(total - delta)
    size = jnp.abs(delta)
    undefined = jnp.where(gap > 0, jnp.inf, 0.0)
    relative = jnp.where(size > 0, gap / jnp.where(size > 0, size, 1.0), undefined)
    return {"gap": gap, "relative": relative, "sum": total, "delta": delta}


def completeness(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    baseline: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Completeness gap (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks",
    arXiv:1703.01365). Lower is better.

    gap = |sum_i a_i - (f(x) - f(x'))| for the target score f, with x' the constant image
    ``baseline`` (0 = black, IG's baseline here); relative = gap / |f(x) - f(x')|, in [0, inf)
    (0 when both are 0, inf when only the output change is). 0 for IG with enough steps, and
    for grad x input of a linear score. The leaderboard passes the target logit, the score the
    project's path methods explain.

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W);
      targets: int (B,); chunk_size: the most inputs per model call.
    Returns ``{"gap", "relative", "sum", "delta": (B,)}``: sum = sum of the map, delta =
    f(x) - f(x'). Model calls: one per image, plus one for the shared baseline.
    Quantus 0.6's ``Completeness`` differs: it returns a bool per image, whether
    sum(a) == f(x) - f(x') holds exactly in floating point (almost never, even for IG), and by
    default after dividing the maps by their batch's max |value| (``normalise=True``), which
    rescales the sum and breaks the identity; here the raw maps and the size of the gap. Its
    "black" baseline is each image's minimum, 0 for every MNIST digit: the default here.
    Logits as Quantus (``softmax=False``).
    """
    check_inputs(x, attributions, targets)
    check_positive(chunk_size=chunk_size)
    if isinstance(baseline, bool) or not np.isfinite(baseline):
        raise InputError(f"baseline must be a finite number, got {baseline!r}")
    return _completeness(
        score_fn,
        x,
        attributions,
        jnp.asarray(targets, jnp.int32),
        float(baseline),
        chunk_size=chunk_size,
    )


@register_metric(
    "completeness",
    category="axiomatic",
    columns={
        "completeness_gap": ("lower", "|sum of map - logit change from black| (Sundararajan 2017)"),
        "completeness_relative": (
            "lower",
            "Completeness gap / |logit change from black| (Sundararajan 2017)",
        ),
    },
)
def _score_completeness(batch: Batch) -> dict:
    r = completeness(batch.logits, batch.x, batch.maps, batch.targets, chunk_size=batch.chunk_size)
    return {
        "completeness_gap": r["gap"],
        "completeness_relative": r["relative"],
        "completeness_sum": r["sum"],
        "completeness_delta": r["delta"],
    }
