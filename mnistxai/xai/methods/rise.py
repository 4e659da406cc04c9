"""RISE: randomized input sampling for explanation (Petsiuk et al. 2018)."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    LogitsFn,
    over_groups,
    plan,
    sample_sum,
    targets_or_zeros,
)
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.registry import register


def rise_masks(
    key: jax.Array, idx: jax.Array, size: tuple[int, int], cells: int, p: float, dtype=jnp.float32
) -> jax.Array:
    """RISE masks number ``idx`` (k,) -> (k, H, W) in [0, 1] of ``dtype``, mask i drawn from
    fold_in(key, i).

    A ``cells`` x ``cells`` Bernoulli(p) grid is bilinearly upsampled to (cells + 1) cell sizes
    and cropped at a random shift of less than one cell (Petsiuk et al. 2018, sec. 3.2). RISE's
    code resizes with skimage's mode='reflect', ``jax.image.resize`` clamps at the edge: they
    differ in the outermost upsampled pixels, which a crop at shift 0 or 1 keeps.
    """
    h, w = size
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)

    def one(i):
        kg, ky, kx = jax.random.split(jax.random.fold_in(key, i), 3)
        grid = jax.random.bernoulli(kg, p, (cells, cells)).astype(dtype)
        up = jax.image.resize(
            grid, ((cells + 1) * ch, (cells + 1) * cw), "bilinear", antialias=False
        )
        dy, dx = jax.random.randint(ky, (), 0, ch), jax.random.randint(kx, (), 0, cw)
        return jax.lax.dynamic_slice(up, (dy, dx), (h, w))

    return jax.vmap(one)(idx)


@register(
    "rise",
    model="forward",
    family="perturbation",
    paper="Petsiuk et al. 2018, arXiv:1806.07421",
    checks={"cells": positive_int(1, 28), "p": real(0.01, 0.99)},
    stochastic=True,
    score="probability",
    passes=lambda o: (0, 1 + o["masks"]),
    quick={"masks": 256},
    smoke={"masks": 8},
)
def rise(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    masks: int = 1000,
    cells: int = 7,
    p: float = 0.5,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """RISE (Petsiuk et al. 2018, arXiv:1806.07421): sum_i P(t | x * M_i) M_i / (masks * p).

    Scores are softmax probabilities of the target, as in the paper (Captum has no RISE). All
    examples share the same ``masks`` random masks drawn from ``key`` (held in memory at once:
    masks x H x W floats), so an example's map does not depend on the rest of the batch.
    Options: ``masks`` (1000), ``cells`` (7: each mask is a cells x cells grid, in [1, 28]),
    ``p`` (0.5: the probability that a cell is kept, in [0.01, 0.99]; near 0 or 1 every mask
    is alike and the map carries nothing). Non-negative, (B, H, W). Groups of examples go
    through the model as flat batches of at most ``chunk_size`` masked images.
    """
    examples, per_pass = plan(x.shape[0], chunk_size)
    all_masks = rise_masks(key, jnp.arange(masks), x.shape[1:3], cells, p, x.dtype)  # drawn once

    def group(args):
        xg, tg = args  # (E, H, W, C), (E,)
        t = jnp.argmax(logits_fn(xg), -1) if targets is None else tg
        t = t.astype(jnp.int32)

        def chunk(idx):
            m = all_masks[idx]  # (k, H, W)
            masked = (xg[:, None] * m[None, ..., None]).reshape((-1,) + xg.shape[1:])
            prob = jax.nn.softmax(logits_fn(masked), -1).reshape(xg.shape[0], idx.shape[0], -1)
            return jnp.einsum("ek,khw->ehw", prob[jnp.arange(xg.shape[0]), :, t], m)

        return sample_sum(chunk, masks, per_pass) / (masks * p), t

    attributions, t = over_groups(group, (x, targets_or_zeros(x, targets)), examples)
    return Explanation(attributions, t, {})
