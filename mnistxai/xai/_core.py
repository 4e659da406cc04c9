"""Pieces every method shares: the result type, target handling and the chunked loops.

Every method is written per example (``one(x_i, t_i, key_i)``) and mapped over the batch with
``over_examples``; its inner loop (path steps, noise samples, masks, channels) goes through
``sample_sum`` or ``chunked_map``. One ``chunk_size`` bounds memory everywhere: it is the largest
number of images the model sees in one pass (examples per pass x samples per pass).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

DEFAULT_CHUNK = 256

LogitsFn = Callable[[jax.Array], jax.Array]


@struct.dataclass
class Explanation:
    """What every method returns.

    Attributes:
      attributions: (B, H, W) in the dtype of x (float32 from ``explain``, or float64), one map per
      example (the
      channel axis reduced as the
        method documents; MNIST has one channel, so it is just squeezed).
      targets: int32 (B,), the class explained for each example.
      extras: method-specific arrays with a leading batch axis (e.g. IG's ``convergence_delta``).
    """

    attributions: jax.Array
    targets: jax.Array
    extras: dict = struct.field(default_factory=dict)


def reduce_channels(a: jax.Array, signed: bool) -> jax.Array:
    """(..., H, W, C) -> (..., H, W): sum of signed maps, max |.| of unsigned ones (Simonyan
    2014)."""
    return a.sum(-1) if signed else jnp.abs(a).max(-1)


def target_or_argmax(logits: jax.Array, target: Optional[jax.Array]) -> jax.Array:
    """The given target, or the predicted class of a single example's logits (K,)."""
    return jnp.argmax(logits).astype(jnp.int32) if target is None else target.astype(jnp.int32)


def one_hot_rows(target: jax.Array, rows: int, classes: int, dtype) -> jax.Array:
    """(rows, classes) cotangent selecting ``target`` in every row."""
    return jnp.broadcast_to(jax.nn.one_hot(target, classes, dtype=dtype), (rows, classes))


def target_grads(logits_fn: LogitsFn, xs: jax.Array, target: Optional[jax.Array]):
    """Gradients of one target logit for a stack ``xs`` (k, H, W, C) of inputs of one example.

    Returns ``(grads (k, H, W, C), logits (k, K), target)``; a None target becomes the class
    predicted for ``xs[0]`` from the same forward pass (no second forward).
    """
    logits, vjp = jax.vjp(logits_fn, xs)
    target = target_or_argmax(logits[0], target)
    (g,) = vjp(one_hot_rows(target, xs.shape[0], logits.shape[-1], logits.dtype))
    return g, logits, target


def at_targets(scores: jax.Array, targets: jax.Array) -> jax.Array:
    """(N,) ``scores[i, targets[i]]`` of (N, K) scores."""
    return jnp.take_along_axis(scores, targets[:, None], 1)[:, 0]


def predict_one(logits_fn: LogitsFn, x: jax.Array, target: Optional[jax.Array]) -> jax.Array:
    """The target of one example (H, W, C): the given one, or the predicted class."""
    if target is not None:
        return target.astype(jnp.int32)
    return target_or_argmax(logits_fn(x[None])[0], None)


def plan(n_examples: int, chunk_size: int) -> tuple[int, int]:
    """(examples per pass, samples per example per pass) so that their product <= chunk_size."""
    per_pass = max(1, min(n_examples, chunk_size))
    return per_pass, max(1, chunk_size // per_pass)


def over_examples(
    one: Callable,
    x: jax.Array,
    targets: Optional[jax.Array],
    key: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Map ``one(x_i, t_i, key_i) -> (map, target, extras)`` over the batch.

    vmap when the batch fits in ``chunk_size``, else ``lax.map`` over chunks of it. Example i gets
    ``jax.random.split(key, B)[i]``.
    """
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    keys = None if key is None else jax.random.split(key, n)
    per_pass = plan(n, chunk_size)[0]
    args = (x, targets, keys)
    if n <= per_pass:
        attributions, t, extras = jax.vmap(one)(*args)
    else:
        attributions, t, extras = jax.lax.map(lambda a: one(*a), args, batch_size=per_pass)
    return Explanation(attributions, t.astype(jnp.int32), extras)


def targets_or_zeros(x: jax.Array, targets: Optional[jax.Array]) -> jax.Array:
    """``targets``, or int32 zeros standing in for them where the method predicts its own."""
    return jnp.zeros(x.shape[0], jnp.int32) if targets is None else targets


def over_groups(fn: Callable, args, group: int):
    """``fn(args_g)`` on consecutive groups of ``group`` examples, concatenated along axis 0.

    Unlike ``over_examples`` nothing is vmapped: ``fn`` sees a group as one batch and can hand
    the model flat (group x samples) batches. XLA:CPU runs a model vmapped over stacks of
    perturbed copies (rank-5 activations) 1.5-2.5x slower than the same work as one flat batch
    (forward passes of the MNIST CNN: ~1,200 vs ~2,900 images/s). Full
    groups run in a ``lax.map``, a remainder group once after it.
    """
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    g = max(1, min(group, n))
    full, rem = divmod(n, g)
    parts = []
    if full:
        head = jax.tree_util.tree_map(
            lambda a: a[: full * g].reshape((full, g) + a.shape[1:]), args
        )
        out = jax.lax.map(fn, head)
        parts.append(jax.tree_util.tree_map(lambda o: o.reshape((full * g,) + o.shape[2:]), out))
    if rem:
        parts.append(fn(jax.tree_util.tree_map(lambda a: a[full * g :], args)))
    return (
        parts[0]
        if len(parts) == 1
        else jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *parts)
    )


def _tree_add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def sample_sum(fn: Callable[[jax.Array], Any], num: int, per_pass: int):
    """Sum over samples 0..num-1 of ``fn(idx)``, where ``fn`` sums its (k,) int32 sample indices.

    Full chunks of ``per_pass`` samples run in a ``lax.scan``; a remainder chunk runs once after it,
    so no padded sample is ever computed. Results depend on the sample index only, not on the
    chunking, when ``fn`` draws its randomness with ``fold_in(key, index)``.
    """
    k = max(1, min(per_pass, num))
    full, rem = divmod(num, k)
    total = None
    if full == 1:
        total = fn(jnp.arange(k))
    elif full > 1:
        init = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, jnp.arange(k))
        )
        total, _ = jax.lax.scan(
            lambda acc, i: (_tree_add(acc, fn(i * k + jnp.arange(k))), None), init, jnp.arange(full)
        )
    if rem:
        last = fn(full * k + jnp.arange(rem))
        total = last if total is None else _tree_add(total, last)
    return total


def chunked_map(fn: Callable[[jax.Array], jax.Array], num: int, per_pass: int) -> jax.Array:
    """``fn(idx)`` -> (k, ...) evaluated for indices 0..num-1, ``per_pass`` at a time; (num,
    ...)."""
    k = max(1, min(per_pass, num))
    full, rem = divmod(num, k)
    parts = []
    if full:
        out = jax.lax.map(lambda i: fn(i * k + jnp.arange(k)), jnp.arange(full))
        parts.append(out.reshape((full * k,) + out.shape[2:]))
    if rem:
        parts.append(fn(full * k + jnp.arange(rem)))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def over_active(
    fn: Callable[[jax.Array], jax.Array], active: jax.Array, per_pass: int
) -> jax.Array:
    """``fn(idx)`` -> (k,) values at the flat indices ``idx`` where the bool (P,) ``active`` holds;
    returns (P,) values (``fn``'s dtype) with those and 0 elsewhere.

    The active indices are packed first and run ``per_pass`` at a time in a loop whose trip count
    is set by the data: inactive indices cost nothing. This is how exact shortcuts (an occlusion
    window on black pixels, a deletion step removing only black pixels) turn into saved model
    passes under jit, where shapes must be static. The remainder (fewer than ``per_pass``) runs
    in passes of ``per_pass // 8``, so a pass computes at most that many padded inputs. When all
    P indices fit in one pass, that single pass runs (inactive ones masked) without the loops,
    which would compile ``fn`` twice to save at most that one pass.
    """
    p = active.shape[0]
    if p <= per_pass:
        return jnp.where(active, fn(jnp.arange(p)), 0)
    k = max(1, per_pass)
    tail = max(1, k // 8)
    total = active.sum()
    order = jnp.pad(jnp.argsort(~active, stable=True), (0, k))  # active first; room for a slice
    dtype = jax.eval_shape(fn, order[:k]).dtype

    def passes(size, offset):
        def body(i, out):
            start = offset + i * size
            idx = jax.lax.dynamic_slice(order, (start,), (size,))
            keep = start + jnp.arange(size) < total
            return out.at[idx].add(jnp.where(keep, fn(idx), 0).astype(dtype))

        return body

    full = total // k
    out = jax.lax.fori_loop(0, full, passes(k, 0), jnp.zeros(p, dtype))
    return jax.lax.fori_loop(0, (total - full * k + tail - 1) // tail, passes(tail, full * k), out)


def resize_maps(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of (..., h, w) maps to (..., *size), half-pixel centres like cv2.resize."""
    return jax.image.resize(maps, maps.shape[:-2] + tuple(size), "bilinear")


def minmax(maps: jax.Array, axes=(-2, -1)) -> jax.Array:
    """Min-max scale to [0, 1] over ``axes``; a constant map becomes zeros, not NaN."""
    lo = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - lo
    return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1), 0.0)


def blur(x: jax.Array, sigma: float) -> jax.Array:
    """Gaussian blur of (..., H, W, C) images, renormalised at the border (no dark frame)."""

    def matrix(n):
        d = np.arange(n)[:, None] - np.arange(n)[None, :]
        m = np.exp(-0.5 * (d / sigma) ** 2)
        return jnp.asarray(m / m.sum(1, keepdims=True), x.dtype)

    return jnp.einsum("ij,...jkc,lk->...ilc", matrix(x.shape[-3]), x, matrix(x.shape[-2]))
