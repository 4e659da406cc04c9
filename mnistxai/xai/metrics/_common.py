"""What every metric shares: input checks, per-example keys, the mapping over examples, ranks.

Conventions of the whole package (all functions are pure and jit-compiled at the public boundary):

- ``x``: float32 (B, H, W, C) inputs in the model's domain ([0, 1] for the MNIST CNN).
- ``attributions``: (B, H, W) maps, one per example (any float dtype; computed in float32).
- ``targets``: int (B,) class indices explained.
- ``score_fn(x) -> (N, K)``: per-class scores of a stack of inputs (the leaderboard passes the
  softmax probabilities or the logits, as each metric's docstring says).
- ``key``: one ``jax.random.key`` (split into B per-example keys) or (B,) keys: the second form lets
  a caller that chunks the examples (``mnistxai.pipelines.evaluate``) get the same numbers as one
  big batch.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

# the XAI module's chunked loop and per-map scaling serve the metrics unchanged
from mnistxai.xai._core import DEFAULT_CHUNK, minmax  # noqa: F401  (re-exported)
from mnistxai.xai._core import chunked_map as chunked  # noqa: F401  (re-exported)
from mnistxai.util.errors import InputError


ScoreFn = Callable[[jax.Array], jax.Array]


def check_inputs(x, attributions=None, targets=None, num_classes: Optional[int] = None) -> None:
    """ValueError naming the problem, in NumPy, before anything is traced."""
    shape = np.shape(x)
    if len(shape) != 4:
        raise InputError(f"x must have shape (B, H, W, C), got {shape}")
    if shape[0] == 0:
        raise InputError("x is an empty batch")
    if attributions is not None and np.shape(attributions) != shape[:3]:
        raise InputError(
            f"attributions must have shape {shape[:3]} (one (H, W) map per example), "
            f"got {np.shape(attributions)}"
        )
    if targets is not None:
        t = np.asarray(targets)
        if t.shape != shape[:1] or not np.issubdtype(t.dtype, np.integer):
            raise InputError(f"targets must be {shape[0]} integers, got {t.dtype} {t.shape}")
        if num_classes is not None and (t.min() < 0 or t.max() >= num_classes):
            raise InputError(
                f"targets must lie in [0, {num_classes - 1}], got {t.min()}..{t.max()}"
            )
    for name, a in (("x", x), ("attributions", attributions)):
        if a is not None and not bool(np.isfinite(np.asarray(a, np.float32)).all()):
            raise InputError(f"{name} contains NaN or inf")


def check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")


def example_keys(key, n: int) -> jax.Array:
    """(n,) typed keys from one key (split) or from n keys (returned as they are)."""
    if key is None:
        raise InputError("this metric is random: pass key=jax.random.key(seed) (or (B,) keys)")
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.random.split(key, n)
    if key.shape != (n,):
        raise InputError(f"key must be one key or {n} keys, got shape {key.shape}")
    return key


def plan(n: int, inputs: int, chunk_size: int) -> tuple[int, int]:
    """(examples per pass, inputs per example per pass) for ``n`` examples of ``inputs`` model
    inputs each, so that one pass feeds the model at most ``chunk_size`` inputs (or one example's
    ``chunk_size`` when a single example needs more)."""
    examples = max(1, min(n, chunk_size // max(1, inputs)))
    return examples, max(1, min(inputs, chunk_size // examples))


def over_examples(one: Callable, args, n: int, examples_per_pass: int):
    """``one(*args_i)`` for every example i: vmap over ``examples_per_pass`` at a time."""
    return jax.lax.map(lambda a: one(*a), args, batch_size=max(1, min(n, examples_per_pass)))


def descending_order(values: jax.Array, key: Optional[jax.Array]) -> jax.Array:
    """Indices of the flat ``values`` from largest to smallest.

    Ties are broken uniformly at random with ``key`` (a constant map then gives a random order,
    so its score is the random-order expectation) and by index without it (a stable sort;
    Quantus's ``np.argsort`` is quicksort, whose tie order is unspecified).
    """
    if key is None:
        return jnp.argsort(-values, stable=True)
    perm = jax.random.permutation(key, values.shape[0])
    return perm[jnp.argsort(-values[perm], stable=True)]


def ranks_of(order: jax.Array) -> jax.Array:
    """The inverse permutation: ``ranks[order[i]] = i``."""
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


def average_ranks(values: jax.Array) -> jax.Array:
    """0-based ranks of a flat array, ties sharing their average rank (as
    ``scipy.stats.rankdata``)."""
    s = jnp.sort(values)
    lo = jnp.searchsorted(s, values, side="left")
    hi = jnp.searchsorted(s, values, side="right")
    return (lo + hi - 1).astype(jnp.float32) / 2


def box_mean(a: jax.Array, win: int) -> jax.Array:
    """The mean of every ``win`` x ``win`` window inside the (H, W) image (the valid part), as
    ``win`` shifted adds per axis: ~10x faster on XLA:CPU than a 2-D convolution."""
    h, w = a.shape
    rows = sum(a[i : h - win + 1 + i] for i in range(win))
    return sum(rows[:, j : w - win + 1 + j] for j in range(win)) / win**2


def structural_similarity(a: jax.Array, b: jax.Array, data_range, win: int = 7) -> jax.Array:
    """SSIM (Wang et al. 2004) of two (H, W) images as ``skimage.metrics.structural_similarity``
    computes it by default: a ``win`` x ``win`` uniform window, K1 = 0.01, K2 = 0.03, sample
    covariances, the mean over the pixels whose window lies inside the image; ``data_range``
    sets the constants C1 = (K1 range)^2, C2 = (K2 range)^2."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ua, ub = box_mean(a, win), box_mean(b, win)
    cov = win**2 / (win**2 - 1)
    va = cov * (box_mean(a * a, win) - ua * ua)
    vb = cov * (box_mean(b * b, win) - ub * ub)
    vab = cov * (box_mean(a * b, win) - ua * ub)
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return s.mean()


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation of two flat arrays; 0 when either is constant (scipy gives NaN)."""
    a = a - a.mean()
    b = b - b.mean()
    den = jnp.sqrt((a * a).sum() * (b * b).sum())
    return jnp.where(den > 0, (a * b).sum() / jnp.where(den > 0, den, 1.0), 0.0)


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of two arrays (flattened; ties get average ranks)."""
    return pearson(average_ranks(a.ravel()), average_ranks(b.ravel()))


def normalize_by_max(maps: jax.Array) -> jax.Array:
    """(B, H, W) maps each divided by its own largest |value|; zeros stay zeros. (Quantus's
    ``normalise_by_max`` divides the whole batch by one max unless given ``normalise_axes``.)"""
    m = jnp.abs(maps).max(axis=(-2, -1), keepdims=True)
    return maps / jnp.where(m > 0, m, 1.0)
