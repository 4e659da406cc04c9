"""Model-free reference maps that every metric is also computed for, so its numbers mean something.

A method that does not beat ``random_attribution`` on a faithfulness metric carries no
information about the model there; one that scores like ``sobel_attribution`` (an edge detector,
Adebayo et al. 2018's example of a map that looks plausible and ignores the model) may only be
tracing the digit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai.metrics._common import check_inputs, example_keys
from mnistxai.util.errors import InputError

BASELINES = ("random", "sobel")

_SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], np.float32)


@jax.jit
def _uniform(x, keys):
    return jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:3]))(keys)


def random_attribution(x, key) -> jax.Array:
    """U[0, 1) noise maps (B, H, W) for inputs x (B, H, W, C); ``key``: one key or (B,) keys."""
    check_inputs(x)
    return _uniform(jnp.asarray(x), example_keys(key, np.shape(x)[0]))


@jax.jit
def _sobel(x):
    img = x.sum(-1)[:, None]  # (B, 1, H, W)
    kernels = jnp.asarray(np.stack([_SOBEL, _SOBEL.T])[:, None])  # (2, 1, 3, 3): d/dx, d/dy
    g = jax.lax.conv_general_dilated(img, kernels, (1, 1), "SAME")
    return jnp.sqrt((g * g).sum(1))


def sobel_attribution(x) -> jax.Array:
    """Sobel gradient magnitude (B, H, W) of the (channel-summed) images x (B, H, W, C), zero
    padding."""
    check_inputs(x)
    return _sobel(jnp.asarray(x, jnp.float32))


def baseline_maps(name: str, x, key=None) -> jax.Array:
    """The maps of the baseline ``name`` (one of ``BASELINES``)."""
    if name == "random":
        return random_attribution(x, key)
    if name == "sobel":
        return sobel_attribution(x)
    raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


def baseline_explain_fn(name: str):
    """``explain_fn(model, x, targets, keys)`` for a baseline (the model is ignored): what the
    robustness and randomization metrics call."""
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return functools.partial(_baseline_fn, name)


def _baseline_fn(name, model, x, targets, keys):
    return _uniform(x, keys) if name == "random" else _sobel(x)
