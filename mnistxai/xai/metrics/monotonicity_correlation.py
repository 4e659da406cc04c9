"""Monotonicity correlation (Nguyen & Martínez 2020): is a feature group's |attribution| ranked
like the model's sensitivity to replacing that group with noise?

Every (example, group, noise sample) triple of the batch is one model input, run as flat batches
of ``chunk_size``; no input repeats (noise always changes the image), so nothing is skipped.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mnistxai.util import streams
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
    example_keys,
    spearman,
)
from mnistxai.xai.metrics.monotonicity import (
    check_features_in_step,
    check_step_option,
    groups_in_order,
)
from mnistxai.xai.metrics.registry import Batch, register_metric


def noise_values(keys: jax.Array, samples: int, dtype) -> jax.Array:
    """(B, samples) replacement values U[0, 1): sample s of example e is
    ``jax.random.uniform(fold(keys[e], "noise"), (samples,))[s]``, the same for all its groups."""
    return jax.vmap(lambda k: jax.random.uniform(k, (samples,), dtype))(streams.fold(keys, "noise"))


@functools.partial(jit, static_argnames=("score_fn", "step", "samples", "absolute", "chunk_size"))
def _monotonicity_correlation(
    score_fn, x, attributions, targets, keys, *, step, samples, absolute, chunk_size
):
    n, h, w = attributions.shape
    groups = h * w // step
    group, sums = groups_in_order(attributions, keys, step, absolute, descending=False)
    noise = noise_values(keys, samples, x.dtype)
    f0 = chunked(lambda i: at_targets(score_fn(x[i]), targets[i]), n, chunk_size)

    def squared_changes(triple):
        ex, g, s = triple // (groups * samples), triple // samples % groups, triple % samples
        replaced = (group[ex] == g[:, None, None])[..., None]
        inputs = jnp.where(replaced, noise[ex, s][:, None, None, None], x[ex])
        return (at_targets(score_fn(inputs), targets[ex]) - f0[ex]) ** 2

    total = n * groups * samples
    changes = chunked(squared_changes, total, chunk_size).reshape(n, groups, samples).mean(-1)
    return {
        "correlation": jnp.clip(jax.vmap(spearman)(sums, changes), -1.0, 1.0),
        "changes": changes,
    }


def monotonicity_correlation(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    key: jax.Array,
    features_in_step: int = 16,
    samples: int = 8,
    absolute: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Monotonicity correlation (Nguyen & Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584). Higher is better, in [-1, 1].

    The pixels are ranked by |attribution| (``absolute``, Quantus's default ``abs=True``) and cut
    into consecutive groups of ``features_in_step``. For each group, ``samples`` times, all its
    pixels are set to one uniform value u ~ U[0, 1) (Quantus's "uniform" baseline: one value per
    example, group and sample) and the squared change (f(x') - f(x))^2 of the target score
    recorded; the score is the Spearman correlation (average ranks for ties, 0 when either side
    is constant), over the groups, between each group's summed attribution and its mean squared
    change. For a linear score w . x, a constant image and one pixel a group (or w >= 0), the
    map w * x gives exactly 1: each change is w_i^2 times the same mean of (u - x_i)^2.

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)`` (Quantus: softmax probabilities); x: (B, H, W, C)
        in [0, 1]; attributions: (B, H, W); targets: int (B,); key: one key or (B,) keys: the
        noise (``noise_values``) and the tie-breaks of the ranking; features_in_step: must divide
        H x W; samples: noise draws per group. Cost: 1 + (H x W / features_in_step) x samples
        model passes per image (the defaults: 1 + 49 x 8 = 393).
    Returns:
      ``{"correlation": (B,), "changes": (B, H x W / features_in_step)}``.

    Departures from Quantus 0.6 ``MonotonicityCorrelation``: (1) defaults ``features_in_step``
    16 and ``samples`` 8 instead of 1 and 100 (78,400 model passes per MNIST image); pass
    ``features_in_step=1, samples=100`` to match. (2) Common random numbers: the ``samples``
    noise values of an example are shared by all its groups (Quantus draws fresh ones for each
    group), so the groups are compared under the same replacements, which lowers the variance
    of their ranking and makes the linear case exact. (3) Quantus multiplies each image's
    changes by 1 / f(x)^2 (1 when |f(x)| < ``eps``): a positive per-image factor, to which a
    Spearman correlation is blind, so neither it nor ``eps`` is kept. (4) Its ``normalise=True``
    (division by the batch's max) cannot change a rank and is not applied; ties in the ranking
    are broken at random with ``key`` (Quantus: ``np.argsort``, unspecified).
    """
    check_inputs(x, attributions, targets)
    check_positive(samples=samples, chunk_size=chunk_size)
    step = check_features_in_step(x, features_in_step)
    x = jnp.asarray(x)
    return _monotonicity_correlation(
        score_fn,
        x,
        jnp.asarray(attributions),
        jnp.asarray(targets),
        example_keys(key, x.shape[0]),
        step=step,
        samples=samples,
        absolute=bool(absolute),
        chunk_size=chunk_size,
    )


@register_metric(
    "monotonicity_correlation",
    category="faithfulness",
    options_of=monotonicity_correlation,
    options=("features_in_step", "samples"),
    check=check_step_option,
    default_set=False,  # 393 model passes per image at the defaults
    columns={
        "monotonicity_corr": (
            "higher",
            "Monotonicity correlation: Spearman of |attribution| and the target probability's "
            "squared change under noise, per pixel group (Nguyen 2020)",
        )
    },
)
def _score_monotonicity_correlation(batch: Batch, **options) -> dict:
    r = monotonicity_correlation(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"monotonicity_corr": r["correlation"]}
