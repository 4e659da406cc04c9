"""Robustness: does the map stay put when the input barely moves? Max-sensitivity (Yeh et al. 2019).

The loop over perturbed inputs (``reexplain_scan``) and the sensitivity ratios are shared with
the other re-explaining metrics (``avg_sensitivity``, ``local_lipschitz``, ``continuity``,
``relative_stability``).

``explain_fn(model, x, targets, keys) -> (B, H, W)`` is any jit-traceable explanation function:
``model`` a pytree (e.g. a ``Classifier``), x (B, H, W, C), targets int (B,), keys (B,) PRNG keys.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.jit import jit
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import (
    check_inputs,
    check_positive,
    example_keys,
    normalize_by_max,
)
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.util.errors import InputError

ExplainFn = Callable[..., jax.Array]


def _fro(a):
    return jnp.sqrt((a * a).sum((-2, -1)))


def reexplain_scan(explain_fn, model, x, targets, keys, steps, perturb, measure):
    """The loop every re-explaining robustness metric shares (traced inside their jits).

    For each ``s`` of ``steps`` (an int array, scanned), in a ``lax.scan`` so that one explanation
    batch is in memory at a time: per-example keys ``ks = fold_in(keys_i, s)``, the perturbed
    inputs ``xp = perturb(ks, s)`` (B, H, W, C), their maps ``explain_fn(model, xp, targets, ks)``
    and ``measure(xp, maps, s)``. Returns the stacked measures, (len(steps), ...). Noise drawn
    from ``ks`` depends on the example's own key only, so chunking the batch changes nothing.
    """

    def step(carry, s):
        ks = jax.vmap(lambda k: jax.random.fold_in(k, s))(keys)
        xp = perturb(ks, s)
        return carry, measure(xp, explain_fn(model, xp, targets, ks), s)

    return jax.lax.scan(step, None, steps)[1]


def uniform_noise(ks, x, lo, hi, clip):
    """``x`` plus per-example noise U[lo, hi)^d drawn from keys ``ks``, clipped to ``clip``
    (None: not clipped)."""
    noise = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, lo, hi))(ks)
    xp = x + noise
    return xp if clip is None else jnp.clip(xp, *clip)


def sensitivity_ratios(
    explain_fn, model, x, attributions, targets, keys, *, samples, radius, clip, dtype
):
    """(samples, B) ratios ||e(x + delta) - e(x)||_F / ||e(x)||_F of max- and
    average-sensitivity, every map divided by its max |value|, computed in ``dtype``."""
    base = normalize_by_max(attributions.astype(dtype))
    base_norm = _fro(base)

    def measure(xp, maps, s):
        maps = normalize_by_max(maps.astype(dtype))
        return _fro(maps - base) / jnp.where(base_norm > 0, base_norm, 1.0)

    perturb = lambda ks, s: uniform_noise(ks, x, -radius, radius, clip)
    steps = jnp.arange(samples)
    return reexplain_scan(explain_fn, model, x, targets, keys, steps, perturb, measure)


def compute_dtype(x, attributions):
    """float32, or float64 when the images or maps are (``jax_enable_x64``)."""
    return jnp.result_type(x.dtype, attributions.dtype, jnp.float32)


def as_clip(clip):
    """None, or ``clip`` as a (lo, hi) pair of floats with lo < hi (else ``InputError``)."""
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise InputError(f"clip must be None or a pair (lo, hi), got {clip!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"clip must be finite with lo < hi, got {clip!r}")
    return lo, hi


def check_sensitivity(x, attributions, targets, samples, radius, clip):
    """``InputError`` for bad inputs of max- and average-sensitivity; ``clip`` as floats."""
    check_inputs(x, attributions, targets)
    check_positive(samples=samples)
    if not radius > 0:
        raise InputError(f"radius must be > 0, got {radius}")
    return as_clip(clip)


@functools.partial(jit, static_argnames=("explain_fn", "samples", "radius", "clip"))
def _max_sensitivity(explain_fn, model, x, attributions, targets, keys, *, samples, radius, clip):
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
        dtype=jnp.float32,
    )
    return ratios.max(0)


def max_sensitivity(
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
    """Max-sensitivity (Yeh et al. 2019, arXiv:1901.09392). Lower is better.

    max over ``samples`` draws of delta ~ U[-radius, radius]^d of
    ||e(x + delta) - e(x)||_F / ||e(x)||_F, every map first divided by its max |value|, and the
    targets kept fixed. As Quantus 0.6's ``MaxSensitivity`` (uniform noise of radius 0.2,
    Frobenius norms, the maximum over samples), except: each map is first divided by its own max
    |value| (Quantus's default is ``normalise=False``, the raw maps; with ``normalise=True`` it
    divides a whole batch by one max), 10 samples instead of 200 (a lower bound of Quantus's
    maximum; pass ``samples=200`` to match), and the perturbed input is clipped to ``clip``
    (default [0, 1], the model's input range; None to not clip; Quantus does not clip).

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``; model: its first argument.
      x: (B, H, W, C); attributions: e(x), (B, H, W); targets: int (B,).
      key: one key or (B,) keys (per-example noise, so chunking the batch changes nothing).
    Returns (B,); the steps run in a ``lax.scan``, one explanation batch in memory at a time.
    """
    clip = check_sensitivity(x, attributions, targets, samples, radius, clip)
    return _max_sensitivity(
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
    "max_sensitivity",
    category="robustness",
    options_of=max_sensitivity,
    options=("samples", "radius"),
    checks={"radius": real(0.0, open_lo=True)},
    reexplains=True,
    columns={"max_sensitivity": ("lower", "Max-sensitivity, radius 0.2 (Yeh 2019)")},
)(reexplaining_score(max_sensitivity, "max_sensitivity"))
