"""Robustness: continuity of the explanation under translations (Montavon et al. 2018).

``explain_fn(model, x, targets, keys) -> (B, H, W)`` as in ``robustness``, whose loop over
perturbed inputs (``reexplain_scan``) this shares.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import IMAGE_SIZE, choice
from mnistxai.xai.metrics._common import (
    check_inputs,
    check_positive,
    example_keys,
    normalize_by_max,
)
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import ExplainFn, compute_dtype, reexplain_scan

DIRECTIONS = ("x", "y")
# Quantus adds this to ||x - x'||_2
DISTANCE_EPS = 1e-9


def shifts(size: int, steps: int) -> list[tuple[int, int]]:
    """[(step s, shift)] of Quantus 0.6's ``Continuity`` on ``size`` pixels: shift_s = -size +
    dx * (s + 1), dx = (2 * size + 1) // steps, s = 0..steps-1, the step of shift 0 (x' = x)
    left out."""
    dx = (2 * size + 1) // steps
    return [(s, -size + dx * (s + 1)) for s in range(steps) if -size + dx * (s + 1) != 0]


def translate(x: jax.Array, shift, axis: int) -> jax.Array:
    """(B, H, W, C) images moved by ``shift`` pixels along ``axis`` (2: x, to the right for
    shift > 0; 1: y, down), the uncovered pixels set to each image's minimum ("black")."""
    n = x.shape[axis]
    src = jnp.arange(n) - shift
    inside = (src >= 0) & (src < n)
    moved = jnp.take(x, jnp.clip(src, 0, n - 1), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = n
    black = x.min(axis=(1, 2, 3), keepdims=True)
    return jnp.where(inside.reshape(shape), moved, black)


@functools.partial(jit, static_argnames=("explain_fn", "steps", "axis"))
def _continuity(explain_fn, model, x, attributions, targets, keys, *, steps, axis):
    dtype = compute_dtype(x, attributions)
    base = normalize_by_max(jnp.abs(attributions.astype(dtype)))
    x0 = x.astype(dtype)
    size = x.shape[axis]
    dx = (2 * size + 1) // steps
    index = jnp.asarray([s for s, _ in shifts(size, steps)], jnp.int32)

    def perturb(ks, s):
        return translate(x, -size + dx * (s + 1), axis)

    def measure(xp, maps, s):
        a = normalize_by_max(jnp.abs(maps.astype(dtype)))
        num = jnp.abs(a - base).sum((-2, -1))
        d = xp.astype(dtype) - x0
        dist = jnp.sqrt((d * d).sum((1, 2, 3)))
        # x' = x (a constant image): the same input, a ratio of 0 rather than 0 / 1e-9
        return jnp.where(dist > 0, num / (dist + DISTANCE_EPS), 0.0)

    ratios = reexplain_scan(explain_fn, model, x, targets, keys, index, perturb, measure)
    return ratios.max(0)


def continuity(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    steps: int = 10,
    direction: Literal["x", "y"] = "x",
) -> jax.Array:
    """Continuity (Montavon et al. 2018, arXiv:1706.07979), as Quantus 0.6 defines it. Lower is
    better; range [0, inf).

    The image is translated by ``steps`` shifts t_s = -W + dx * (s + 1), dx = (2W + 1) // steps
    (W the width for ``direction="x"``, the height for "y"), the uncovered pixels set to the
    image's minimum; per shift, ||a(x) - a(x_t)||_1 / (||x - x_t||_2 + 1e-9) with a = |e| / max|e|
    (each map by its own max); the score is the max over shifts ("the strongest variation of the
    explanation in the input domain"). The targets are kept fixed. With the default 10 steps on
    28 pixels: dx = 5, shifts -23, -18, ..., -3, 2, 7, ..., 22 (10 re-explanations).

    As Quantus 0.6's ``Continuity`` (its whole definition at that version: the patch-wise
    correlations of attribution sums with the output of earlier versions are gone; it returns
    this one number per example), except: 10 steps instead of 28 (dx 5 instead of 2: coarser
    shifts); a step of shift 0 (x' = x; for 28 steps on 28 pixels, step 13), where Quantus
    computes ||a(x) - a(x)||_1 / 1e-9 (0 for a deterministic method, ~1e9 for a stochastic one),
    is left out (28 steps are then 27 re-explanations), and a shift that leaves x unchanged (a
    constant image) scores 0; ``a`` divides each map by its own max |value| (Quantus's
    ``normalise=True`` divides the whole batch by one max); the given ``attributions`` are e(x)
    (Quantus re-explains x). Quantus's ``return_nan_when_prediction_changes`` is False by
    default: no shift is masked, as here.

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``; model: its first argument.
      x: (B, H, W, C); attributions: e(x), (B, H, W); targets: int (B,).
      key: one key or (B,) keys; step s explains with keys ``fold_in(key_i, s)`` (the shifts
        are deterministic; the keys only reach a stochastic ``explain_fn``).
      steps: shifts, 1 <= steps <= 2W + 1; direction: "x" (along the width) or "y".
    Returns (B,) in float32 (float64 for float64 inputs), one explanation batch in memory at a
    time (``lax.scan`` over shifts).
    """
    check_inputs(x, attributions, targets)
    check_positive(steps=steps)
    direction = choice(DIRECTIONS)("direction", direction)
    axis = 2 if direction == "x" else 1
    size = np.shape(x)[axis]
    if steps > 2 * size + 1:
        raise InputError(f"steps must be <= 2 * {size} + 1 = {2 * size + 1}, got {steps}")
    return _continuity(
        explain_fn,
        model,
        x,
        attributions,
        targets,
        example_keys(key, np.shape(x)[0]),
        steps=steps,
        axis=axis,
    )


def _steps_fit(options):
    limit = 2 * min(IMAGE_SIZE) + 1
    if options["steps"] > limit:
        raise InputError(f"steps must be <= {limit}, got {options['steps']}")


register_metric(
    "continuity",
    category="robustness",
    options_of=continuity,
    options=("steps", "direction"),
    check=_steps_fit,
    reexplains=True,
    columns={"continuity": ("lower", "Continuity under 10 translations (Montavon 2018)")},
)(reexplaining_score(continuity, "continuity"))
