"""Robustness: average sensitivity (Yeh et al. 2019), max-sensitivity's mean twin.

``explain_fn(model, x, targets, keys) -> (B, H, W)`` as in ``robustness``; the perturbations,
the ratios and the loop over samples are max-sensitivity's (``robustness.sensitivity_ratios``).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from mnistxai.util.jit import jit
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import example_keys
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import (
    ExplainFn,
    check_sensitivity,
    compute_dtype,
    sensitivity_ratios,
)


@functools.partial(jit, static_argnames=("explain_fn", "samples", "radius", "clip"))
def _avg_sensitivity(explain_fn, model, x, attributions, targets, keys, *, samples, radius, clip):
    ratios = sensitivity_ratios(
        explain_fn,
        model,
        x,
        attributions,
        targets,
        keys,
        samples=samples,
        radius=radius,
        clip=clip,
        dtype=compute_dtype(x, attributions),
    )
    return ratios.mean(0)


def avg_sensitivity(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    samples: int = 10,
    radius: float = 0.2,
    clip=(0.0, 1.0),
) -> jax.Array:
    """Average sensitivity (Yeh et al. 2019, arXiv:1901.09392). Lower is better; range [0, inf).

    The mean over ``samples`` draws of delta ~ U[-radius, radius]^d of
    ||e(x + delta) - e(x)||_F / ||e(x)||_F, every map first divided by its own max |value| (an
    all-zero e(x): the denominator is 1), the targets kept fixed. Draw s of example i comes from
    ``fold_in(key_i, s)``, as in ``max_sensitivity``: with the same key both see the same
    perturbations, so ``avg_sensitivity <= max_sensitivity``, equal for ``samples=1``.

    As Quantus 0.6's ``AvgSensitivity`` (uniform noise of ``lower_bound`` 0.2, Frobenius norms
    of the difference and of e(x), the mean over samples; its default
    ``return_nan_when_prediction_changes=False`` keeps every sample, as here), except, like our
    ``max_sensitivity``: each map is divided by its own max |value| (Quantus's default is
    ``normalise=False``, the raw maps; with ``normalise=True`` one max for the whole batch),
    10 samples instead of 200 (an unbiased estimate of the same mean, with more variance; pass
    ``samples=200`` to match), the perturbed input is clipped to ``clip`` (default [0, 1], the
    model's input range; None: not clipped; Quantus does not clip), and an all-zero e(x)
    divides by 1 instead of giving inf/NaN.

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``; model: its first argument.
      x: (B, H, W, C); attributions: e(x), (B, H, W); targets: int (B,).
      key: one key or (B,) keys (per-example noise, so chunking the batch changes nothing).
      samples: perturbations per example, each one explanation of the batch.
    Returns (B,) in float32 (float64 for float64 inputs); the samples run in a ``lax.scan``, one
    explanation batch in memory at a time.
    """
    clip = check_sensitivity(x, attributions, targets, samples, radius, clip)
    return _avg_sensitivity(
        explain_fn,
        model,
        x,
        attributions,
        targets,
        example_keys(key, np.shape(x)[0]),
        samples=samples,
        radius=float(radius),
        clip=clip,
    )


register_metric(
    "avg_sensitivity",
    category="robustness",
    options_of=avg_sensitivity,
    options=("samples", "radius"),
    checks={"radius": real(0.0, open_lo=True)},
    reexplains=True,
    columns={"avg_sensitivity": ("lower", "Average sensitivity, radius 0.2 (Yeh 2019)")},
)(reexplaining_score(avg_sensitivity, "avg_sensitivity"))
