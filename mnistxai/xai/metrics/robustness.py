"""Robustness: does the map stay put when the input barely moves? Max-sensitivity (Yeh et al. 2019).

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
from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.util.errors import InputError

ExplainFn = Callable[..., jax.Array]


def _fro(a):
    return jnp.sqrt((a * a).sum((-2, -1)))


@functools.partial(jit, static_argnames=("explain_fn", "samples", "radius", "clip"))
def _max_sensitivity(explain_fn, model, x, attributions, targets, keys, *, samples, radius, clip):
    base = normalize_by_max(attributions.astype(jnp.float32))
    base_norm = _fro(base)

    def step(worst, s):
        ks = jax.vmap(lambda k: jax.random.fold_in(k, s))(keys)
        noise = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -radius, radius))(ks)
        xp = x + noise
        if clip is not None:
            xp = jnp.clip(xp, *clip)
        maps = normalize_by_max(explain_fn(model, xp, targets, ks).astype(jnp.float32))
        ratio = _fro(maps - base) / jnp.where(base_norm > 0, base_norm, 1.0)
        return jnp.maximum(worst, ratio), None

    worst, _ = jax.lax.scan(step, jnp.zeros(x.shape[:1], jnp.float32), jnp.arange(samples))
    return worst


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
    check_inputs(x, attributions, targets)
    check_positive(samples=samples)
    if not radius > 0:
        raise InputError(f"radius must be > 0, got {radius}")
    clip = None if clip is None else (float(clip[0]), float(clip[1]))
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


@register_metric(
    "max_sensitivity",
    category="robustness",
    options_of=max_sensitivity,
    options=("samples", "radius"),
    checks={"radius": real(0.0, open_lo=True)},
    reexplains=True,
    columns={"max_sensitivity": ("lower", "Max-sensitivity, radius 0.2 (Yeh 2019)")},
)
def _score_max_sensitivity(batch: Batch, **options) -> dict:
    return {
        "max_sensitivity": max_sensitivity(
            batch.explain_fn,
            batch.classifier,
            batch.x,
            batch.maps,
            batch.targets,
            key=batch.keys,
            **options,
        )
    }
