"""Gradient x input (Shrikumar et al. 2016)."""

from __future__ import annotations

from typing import Optional

import jax

from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn, over_examples, target_grads
from mnistxai.xai.registry import register


@register(
    "grad_x_input",
    model="logits",
    family="gradient",
    paper="Shrikumar et al. 2016, arXiv:1605.01713",
    passes=lambda o: (1, 0),
)
def grad_x_input(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Gradient x input, signed, summed over channels (Shrikumar et al. 2016, arXiv:1605.01713;
    Captum ``InputXGradient``). Pixels that are 0 get 0, so black background is never credited."""

    def one(xi, t, _):
        g, _, t = target_grads(logits_fn, xi[None], t)
        return (g[0] * xi).sum(-1), t, {}

    return over_examples(one, x, targets, chunk_size=chunk_size)
