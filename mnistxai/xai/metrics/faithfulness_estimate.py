"""Faithfulness estimate (Alvarez-Melis & Jaakkola 2018): do the score drops of removing each
feature group alone follow the map's attribution of that group?

Every (example, group) pair of the batch is one model input, run as flat batches of
``chunk_size`` (``over_active``); a group whose pixels all equal the baseline already (black
pixels: most of an MNIST digit) leaves the image unchanged, so its drop is exactly 0 and it is
not evaluated.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets, over_active
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    chunked,
    check_inputs,
    check_positive,
    example_keys,
    pearson,
)
from mnistxai.xai.metrics.monotonicity import (
    check_features_in_step,
    check_step_option,
    groups_in_order,
)
from mnistxai.xai.metrics.registry import Batch, register_metric


@functools.partial(jit, static_argnames=("score_fn", "step", "absolute", "chunk_size"))
def _faithfulness_estimate(
    score_fn, x, attributions, targets, keys, fill, *, step, absolute, chunk_size
):
    n, h, w = attributions.shape
    groups = h * w // step
    group, sums = groups_in_order(attributions, keys, step, absolute, descending=True)
    f0 = chunked(lambda i: at_targets(score_fn(x[i]), targets[i]), n, chunk_size)
    fill = jnp.broadcast_to(fill, x.shape)
    differs = (x != fill).any(-1)
    rows = jnp.broadcast_to(jnp.arange(n)[:, None, None], group.shape)
    active = jnp.zeros((n, groups), bool).at[rows, group].max(differs)

    def drops(pair):
        ex, g = pair // groups, pair % groups
        removed = (group[ex] == g[:, None, None])[..., None]
        return f0[ex] - at_targets(score_fn(jnp.where(removed, fill[ex], x[ex])), targets[ex])

    d = over_active(drops, active.reshape(-1), chunk_size).reshape(n, groups)
    return {
        "correlation": jnp.clip(jax.vmap(pearson)(sums.astype(d.dtype), d), -1.0, 1.0),
        "drops": d,
        "evaluated": active.sum(1).astype(jnp.int32) + 1,
    }


def faithfulness_estimate(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    features_in_step: int = 1,
    baseline: float = 0.0,
    absolute: bool = False,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018, "Towards robust interpretability
    with self-explaining neural networks", NeurIPS, arXiv:1806.07538). Higher is better, in
    [-1, 1].

    The pixels are ranked by attribution (signed, Quantus's default ``abs=False``; |.| with
    ``absolute``), most relevant first, and cut into consecutive groups of
    ``features_in_step``; each group alone (not cumulatively: every removal starts from the
    intact image) is set to ``baseline`` and the drop f(x) - f(x without the group) of the target
    score recorded. The score is the Pearson correlation, over the groups, between each group's
    summed attribution and its drop (0 when either is constant). A group already all equal to
    ``baseline`` is not run through the model: its drop is exactly 0, as Quantus would measure,
    and it stays in the correlation. Exactly 1 for a linear score w . x + b with the map w * x
    (each drop is that group's attribution sum).

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)``; x: (B, H, W, C); attributions: (B, H, W); targets:
        int (B,); features_in_step: must divide H x W (default 1, as Quantus); key: breaks ties in
        the ranking at random (one key or (B,) keys; matters only for groups of > 1 pixel);
        None: by pixel index.
    Returns:
      ``{"correlation": (B,), "drops": (B, 784 / features_in_step), "evaluated": int32 (B,)}``,
      the last counting the model passes per image (the groups that change it, plus the intact
      image).

    Departures from Quantus 0.6 ``FaithfulnessEstimate``: its score is the softmax probability
    (``softmax=True``); the leaderboard passes the target logit instead, as for faithfulness
    correlation (the drops of a linear logit are then exactly additive); pass probabilities to
    match. Its "black" baseline is each image's minimum, here the constant ``baseline`` (0, the
    minimum of every MNIST digit). Its ``normalise=True`` (division by the batch's max) cannot
    change a Pearson correlation and is not applied; tie order as ``key`` above.
    """
    check_inputs(x, attributions, targets)
    check_positive(chunk_size=chunk_size)
    step = check_features_in_step(x, features_in_step)
    if not np.isfinite(baseline):
        raise InputError(f"baseline must be a finite number, got {baseline!r}")
    x = jnp.asarray(x)
    keys = None if key is None else example_keys(key, x.shape[0])
    return _faithfulness_estimate(
        score_fn,
        x,
        jnp.asarray(attributions),
        jnp.asarray(targets),
        keys,
        jnp.full((x.shape[0], 1, 1, x.shape[-1]), baseline, x.dtype),
        step=step,
        absolute=bool(absolute),
        chunk_size=chunk_size,
    )


@register_metric(
    "faithfulness_estimate",
    category="faithfulness",
    options_of=faithfulness_estimate,
    options=("features_in_step",),
    check=check_step_option,
    default_set=False,  # one model pass per non-black pixel: ~150 per digit at 1 pixel a group
    columns={
        "faithfulness_estimate": (
            "higher",
            "Faithfulness estimate: Pearson of attribution and target-logit drop per pixel "
            "removed alone (Alvarez-Melis 2018)",
        )
    },
)
def _score_faithfulness_estimate(batch: Batch, **options) -> dict:
    r = faithfulness_estimate(
        batch.logits,
        batch.x,
        batch.maps,
        batch.targets,
        key=batch.keys,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"faithfulness_estimate": r["correlation"]}
