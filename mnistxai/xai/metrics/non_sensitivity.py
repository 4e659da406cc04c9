"""Non-sensitivity (Nguyen & Martínez 2020): a feature with (near) zero attribution should not
move the output when it is removed, and a feature the output does not react to should get (near)
zero attribution. The count of features that break either rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import at_targets, over_active
from mnistxai.xai._inputs import IMAGE_SIZE, real
from mnistxai.xai.metrics._common import (
    DEFAULT_CHUNK,
    ScoreFn,
    check_inputs,
    check_positive,
    chunked,
    normalize_by_max,
)
from mnistxai.xai.metrics.registry import Batch, register_metric


def _groups(zero, step):
    """Group ids (P,) of one example's flat pixels: the zero-attribution pixels in raster order
    cut into runs of ``step``, then the others likewise (Quantus's ``_create_index_groups``)."""
    rank_zero = jnp.cumsum(zero) - 1
    rank_other = jnp.cumsum(~zero) - 1
    first_other = -(-zero.sum() // step)  # ceil: the zero pixels' group count
    return jnp.where(zero, rank_zero // step, first_other + rank_other // step)


@functools.partial(jit, static_argnames=("score_fn", "step", "chunk_size"))
def _non_sensitivity(score_fn, x, attributions, targets, baseline, eps, *, step, chunk_size):
    b, h, w, c = x.shape
    pixels = h * w
    n_groups = pixels // step + (step > 1)  # ceil(n0/s) + ceil(n1/s) <= P/s + 1
    a = jnp.abs(normalize_by_max(attributions.astype(jnp.result_type(x.dtype, jnp.float32))))
    zero = a.reshape(b, pixels) < eps
    group = jax.vmap(lambda z: _groups(z, step))(zero)
    fill = jnp.asarray(baseline, x.dtype)
    differs = (x != fill).any(-1).reshape(b, pixels)
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], group.shape)
    # a group whose pixels all equal the baseline leaves the input unchanged: not evaluated
    changed = jnp.zeros((b, n_groups), bool).at[rows, group].max(differs)

    f0 = chunked(lambda i: at_targets(score_fn(x[i]), targets[i]), b, chunk_size)

    def scores(pair):
        ex, g = pair // n_groups, pair % n_groups
        removed = (group[ex] == g[:, None]).reshape(-1, h, w, 1)
        return at_targets(score_fn(jnp.where(removed, fill, x[ex])), targets[ex])

    perturbed = over_active(scores, changed.reshape(-1), chunk_size).reshape(b, n_groups)
    same = jnp.where(changed, jnp.abs(f0[:, None] - perturbed) < eps, True)
    violations = (jnp.take_along_axis(same, group, 1) ^ zero).sum(1)
    return {
        "violations": violations.astype(a.dtype),
        "fraction": violations.astype(a.dtype) / pixels,
        "evaluated": changed.sum(1).astype(jnp.int32),
    }


def non_sensitivity(
    score_fn: ScoreFn,
    x,
    attributions,
    targets,
    *,
    eps: float = 1e-5,
    features_in_step: int = 1,
    baseline: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Non-sensitivity (Nguyen & Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584). Lower is better.

    A pixel is a non-feature when its |attribution|, the map divided by its max |value|, is below
    ``eps``. The non-features in raster order are cut into groups of ``features_in_step`` pixels,
    the other pixels likewise; each group is set to ``baseline`` (0: black) in turn and the
    output counts as unchanged when the target score moves by less than ``eps``. The score is
    the number of pixels that break the rule: a non-feature in a group that changes the output,
    or a feature in a group that does not. In [0, H x W]; ``fraction`` divides by H x W.

    Args:
      score_fn: ``(N, H, W, C) -> (N, K)`` (the leaderboard passes the softmax probabilities,
        as Quantus); x: (B, H, W, C); attributions: (B, H, W); targets: int (B,).
      eps: the attribution and output-change threshold (one number for both, as Quantus).
      features_in_step: pixels per group; must divide H x W.
    Returns ``{"violations", "fraction": (B,), "evaluated": int32 (B,)}``, the last the number
    of groups run through the model: a group whose pixels already equal the baseline leaves the
    input as it was, so its output is unchanged without a model call (MNIST's black background:
    ~150 calls per digit instead of 784). The groups of the whole batch go through the model in
    flat batches of ``chunk_size``.
    As Quantus 0.6's ``NonSensitivity`` (eps 1e-5, one pixel a step, |attribution|, black
    baseline, softmax outputs; the XOR count of unchanged outputs and non-features), except:
    each map is divided by its own max |value| where Quantus's ``normalise_by_max`` divides the
    whole batch by one (so the eps threshold there depends on the batchmates); its "black" is
    the image's minimum, 0 for every MNIST digit (the default here); unchanged inputs are not
    evaluated (the same result: the model is deterministic).
    """
    check_inputs(x, attributions, targets)
    check_positive(features_in_step=features_in_step, chunk_size=chunk_size)
    pixels = int(np.prod(np.shape(x)[1:3]))
    if pixels % features_in_step:
        raise InputError(
            f"features_in_step must divide the {pixels} pixels, got {features_in_step}"
        )
    if isinstance(eps, bool) or not np.isfinite(eps) or eps <= 0:
        raise InputError(f"eps must be a finite number > 0, got {eps!r}")
    if isinstance(baseline, bool) or not np.isfinite(baseline):
        raise InputError(f"baseline must be a finite number, got {baseline!r}")
    return _non_sensitivity(
        score_fn,
        x,
        attributions,
        jnp.asarray(targets, jnp.int32),
        float(baseline),
        float(eps),
        step=int(features_in_step),
        chunk_size=chunk_size,
    )


def _check_step(options):
    pixels = IMAGE_SIZE[0] * IMAGE_SIZE[1]
    if pixels % options["features_in_step"]:
        raise InputError(
            f"features_in_step must divide the {pixels} pixels, got {options['features_in_step']}"
        )


@register_metric(
    "non_sensitivity",
    category="axiomatic",
    options_of=non_sensitivity,
    options=("eps", "features_in_step"),
    checks={"eps": real(0.0, open_lo=True)},
    check=_check_step,
    default_set=False,
    columns={
        "non_sensitivity": (
            "lower",
            "Pixels whose attribution and effect disagree, softmax (Nguyen 2020)",
        )
    },
)
def _score_non_sensitivity(batch: Batch, **options) -> dict:
    r = non_sensitivity(
        batch.probabilities,
        batch.x,
        batch.maps,
        batch.targets,
        chunk_size=batch.chunk_size,
        **options,
    )
    return {"non_sensitivity": r["violations"], "non_sensitivity_evaluated": r["evaluated"]}
