"""Robustness: the local Lipschitz estimate of an explanation (Alvarez-Melis & Jaakkola 2018).

``explain_fn(model, x, targets, keys) -> (B, H, W)`` as in ``robustness``, whose loop over
perturbed inputs (``reexplain_scan``) this shares.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.jit import jit
from mnistxai.xai._inputs import flag, real
from mnistxai.xai.metrics._common import (
    check_inputs,
    check_positive,
    example_keys,
    normalize_by_max,
)
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import ExplainFn, as_clip, compute_dtype, reexplain_scan

# Quantus's lipschitz_constant adds this to the input distance
DISTANCE_EPS = 1e-10


def _l2(a):
    return jnp.sqrt((a * a).reshape(a.shape[0], -1).sum(-1))


@functools.partial(
    jit, static_argnames=("explain_fn", "samples", "std", "mean", "clip", "normalise")
)
def _local_lipschitz(
    explain_fn, model, x, attributions, targets, keys, *, samples, std, mean, clip, normalise
):
    dtype = compute_dtype(x, attributions)
    scale = normalize_by_max if normalise else (lambda a: a)
    base = scale(attributions.astype(dtype))
    x0 = x.astype(dtype)

    def perturb(ks, s):
        noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(ks)
        xp = x + (mean + std * noise).astype(x.dtype)
        return xp if clip is None else jnp.clip(xp, *clip)

    def measure(xp, maps, s):
        num = _l2(scale(maps.astype(dtype)) - base)
        return num / (_l2(xp.astype(dtype) - x0) + DISTANCE_EPS)

    steps = jnp.arange(samples)
    ratios = reexplain_scan(explain_fn, model, x, targets, keys, steps, perturb, measure)
    return ratios.max(0)


def local_lipschitz(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    samples: int = 10,
    std: float = 0.1,
    mean: float = 0.0,
    clip=(0.0, 1.0),
    normalise: bool = True,
) -> jax.Array:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, arXiv:1806.08049). Lower is
    better; range [0, inf).

    max over ``samples`` draws x' = x + delta, delta ~ N(mean, std^2)^d (then clipped to
    ``clip``), of ||e(x) - e(x')||_2 / (||x - x'||_2 + 1e-10), the targets kept fixed and (with
    ``normalise``) every map first divided by its own max |value|. The norms are over all
    pixels (and channels for x); the denominator uses the clipped x'. Draw s of example i comes
    from ``fold_in(key_i, s)``. For a linear model's gradient (a constant map) it is 0; for
    gradient x input, e(x') - e(x) = w * (x' - x), so without ``normalise`` the value lies in
    [min |w|, max |w|] (|c| for a constant weight c).

    As Quantus 0.6's ``LocalLipschitzEstimate`` (Gaussian noise with ``perturb_mean`` 0 and
    ``perturb_std`` 0.1, Euclidean distances in numerator and denominator, 1e-10 added to the
    denominator, the max over samples; its default ``return_nan_when_prediction_changes=False``
    keeps every sample, as here), except: ``normalise`` divides each map by its own max |value|
    (Quantus's default ``normalise=True`` divides the whole batch by one max), 10 samples
    instead of 200 (a lower bound of Quantus's maximum; pass ``samples=200`` to match), and the
    perturbed input is clipped to ``clip`` (default [0, 1], the model's input range; None: not
    clipped; Quantus does not clip).

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``; model: its first argument.
      x: (B, H, W, C); attributions: e(x), (B, H, W); targets: int (B,).
      key: one key or (B,) keys (per-example noise, so chunking the batch changes nothing).
      samples: perturbations per example, each one explanation of the batch.
    Returns (B,) in float32 (float64 for float64 inputs); the samples run in a ``lax.scan``, one
    explanation batch in memory at a time.
    """
    check_inputs(x, attributions, targets)
    check_positive(samples=samples)
    std = real(0.0, open_lo=True)("std", std)
    mean = real()("mean", mean)
    normalise = flag("normalise", normalise)
    clip = as_clip(clip)
    return _local_lipschitz(
        explain_fn,
        model,
        x,
        attributions,
        targets,
        example_keys(key, np.shape(x)[0]),
        samples=samples,
        std=std,
        mean=mean,
        clip=clip,
        normalise=normalise,
    )


register_metric(
    "local_lipschitz",
    category="robustness",
    options_of=local_lipschitz,
    options=("samples", "std"),
    checks={"std": real(0.0, open_lo=True)},
    reexplains=True,
    columns={
        "local_lipschitz": ("lower", "Local Lipschitz estimate, noise std 0.1 (Alvarez-Melis 2018)")
    },
)(reexplaining_score(local_lipschitz, "local_lipschitz"))
