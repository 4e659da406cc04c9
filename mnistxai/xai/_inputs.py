"""Validation and normalisation of what users pass in, done in NumPy before anything is traced.

Every problem raises ``ValueError`` naming the argument, so a bad call fails in microseconds
instead of after (or inside) an XLA compilation.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from mnistxai.parallel import batch_mesh
from mnistxai.util.errors import InputError

IMAGE_SIZE = (28, 28)


def compute_dtype(a: np.ndarray) -> np.dtype:
    """float64 for float64 input when ``jax_enable_x64`` is on, else float32."""
    if a.dtype == np.float64 and jax.config.jax_enable_x64:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def as_images(images: Any, name: str = "images") -> np.ndarray:
    """Images as float (B, 28, 28, 1) in [0, 1]: float64 when given float64 with
    ``jax_enable_x64`` on (so a method can be checked to float64 precision), else float32.

    Accepts (28, 28), (28, 28, 1), (B, 28, 28) or (B, 28, 28, 1); uint8 in 0..255 (divided by 255)
    or a float array in [0, 1]. NaN/inf, other shapes, other dtypes and out-of-range floats raise.
    A ``jax.Array`` split over several devices (``mnistxai.parallel``) is checked on its devices
    and returned as a ``jax.Array`` with the same sharding, never gathered.
    """
    if batch_mesh(images) is not None:
        return _sharded_images(images, name)
    try:
        a = np.asarray(images)
    except Exception as e:  # e.g. ragged lists
        raise InputError(f"{name} could not be converted to an array: {e}") from None
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == bool or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise InputError(f"{name} must be uint8 (0-255) or float in [0, 1], got dtype {a.dtype}")
    elif np.issubdtype(a.dtype, np.integer):
        raise InputError(
            f"{name} of integer dtype {a.dtype} is ambiguous: pass uint8 0-255 or float in [0, 1]"
        )
    a = a.astype(compute_dtype(a))
    shape = a.shape
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] == 1 and a.shape[:2] == IMAGE_SIZE:
        a = a[None, ..., 0]
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != IMAGE_SIZE:
        raise InputError(
            f"{name} must have shape (28, 28), (28, 28, 1), (B, 28, 28) or "
            f"(B, 28, 28, 1); got {shape}"
        )
    if a.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or inf")
    if a.min() < 0.0 or a.max() > 1.0:
        raise InputError(
            f"float {name} must lie in [0, 1] (got [{a.min():.3g}, {a.max():.3g}]); "
            f"scale them, or pass uint8 0-255"
        )
    return a[..., None]


@jax.jit
def _image_stats(x: jax.Array) -> jax.Array:
    """(all finite, min, max) of a float batch, reduced on its devices."""
    return jnp.stack([jnp.isfinite(x).all().astype(x.dtype), x.min(), x.max()])


def _sharded_images(x: jax.Array, name: str) -> jax.Array:
    """``as_images`` for a batch (B, 28, 28[, 1]) split along axis 0 over a mesh: the same rules,
    checked by one jitted reduction; only three numbers leave the devices."""
    if x.dtype == np.uint8:
        x = x.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"{name} must be uint8 (0-255) or float in [0, 1], got dtype {x.dtype}")
    x = x.astype(compute_dtype(np.empty(0, x.dtype)))
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != IMAGE_SIZE:
        raise InputError(
            f"a sharded {name} must have shape (B, 28, 28) or (B, 28, 28, 1); got {x.shape}"
        )
    finite, lo, hi = np.asarray(_image_stats(x)).tolist()
    if not finite:
        raise InputError(f"{name} contains NaN or inf")
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"float {name} must lie in [0, 1] (got [{lo:.3g}, {hi:.3g}]); "
            f"scale them, or pass uint8 0-255"
        )
    return x[..., None]


def as_targets(
    targets: Any, batch: int, num_classes: int, name: str = "targets"
) -> Optional[np.ndarray]:
    """None (explain the predicted class), or int32 (B,) from an int or a length-B integer array."""
    if targets is None:
        return None
    try:
        t = np.asarray(targets)
    except Exception as e:  # e.g. ragged lists
        raise InputError(f"{name} could not be converted to an array: {e}") from None
    if not np.issubdtype(t.dtype, np.integer) or t.dtype == bool:
        raise InputError(
            f"{name} must be integers (class indices), 'all' or a Contrast, got {targets!r:.60}"
        )
    if t.ndim == 0:
        t = np.full((batch,), t)
    if t.shape != (batch,):
        raise InputError(f"{name} must be an int or have shape ({batch},), got {t.shape}")
    if t.min() < 0 or t.max() >= num_classes:
        raise InputError(f"{name} must lie in [0, {num_classes - 1}], got {t.min()}..{t.max()}")
    return t.astype(np.int32)


def as_key(key: Any, method: str, needed: bool):
    """A typed PRNG key, or None. Stochastic methods refuse to pick a seed for the user."""
    if key is None:
        if needed:
            raise InputError(f"method {method!r} is stochastic: pass key=jax.random.key(seed)")
        return None
    if isinstance(key, (jax.Array, np.ndarray)):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == np.uint32 and key.shape == (2,):  # legacy jax.random.PRNGKey
            return jax.random.wrap_key_data(key)
    raise InputError(
        f"key must be a single jax.random.key(...), got {type(key).__name__} "
        f"{getattr(key, 'shape', '')}"
    )


# ---- option checkers: each takes (name, value) and returns the normalised, hashable value ----


def positive_int(lo: int = 1, hi: Optional[int] = None):
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InputError(f"{name} must be an integer, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise InputError(f"{name} must be {bound}, got {v}")
        return int(v)

    return check


def real(lo: float = -np.inf, hi: float = np.inf, open_lo: bool = False):
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise InputError(f"{name} must be a finite number, got {v!r}")
        if v < lo or v > hi or (open_lo and v == lo):
            raise InputError(f"{name} must be in {'(' if open_lo else '['}{lo}, {hi}], got {v}")
        return float(v)

    return check


def flag(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def choice(values: Sequence[str]):
    def check(name, v):
        if not isinstance(v, str) or v not in values:
            raise InputError(f"unknown {name} {v!r}; choose one of {', '.join(values)}")
        return v

    return check


def int_pair(hi: int):
    """An int or a pair of ints in [1, hi], returned as a pair (e.g. occlusion's window)."""

    def check(name, v):
        pair = (v, v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"{name} must be an int or a pair of ints, got {v!r}")
        return tuple(positive_int(1, hi)(name, p) for p in pair)

    return check


def float_array(name, v):
    try:
        a = np.asarray(v, dtype=np.float64)  # cast to the images' dtype when the method runs
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a 1-D array of finite floats, got {v!r}") from None
    if a.ndim != 1 or not np.isfinite(a).all():
        raise InputError(f"{name} must be a 1-D array of finite floats, got shape {a.shape}")
    return a
