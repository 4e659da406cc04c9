"""Vanilla gradient saliency (Simonyan et al. 2014)."""

from __future__ import annotations

from typing import Optional

import jax

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    LogitsFn,
    over_examples,
    reduce_channels,
    target_grads,
)
from mnistxai.xai.registry import register


@register(
    "saliency",
    model="logits",
    family="gradient",
    paper="Simonyan et al. 2014, arXiv:1312.6034",
    passes=lambda o: (1, 0),
)
def saliency(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    signed: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Vanilla gradient |dy_t/dx| of the target logit (Simonyan et al. 2014, arXiv:1312.6034).

    ``signed=False`` (default) gives the max over channels of |gradient| (Simonyan et al.;
    Captum's ``Saliency``, abs=True, returns |gradient| per channel); ``signed=True`` gives the
    raw gradient summed over channels (PAIR's GradientSaliency returns it per channel). MNIST has
    one channel, so both equal the libraries' maps. The target logit's forward pass also yields
    the predicted class when ``targets`` is None. x (B, H, W, C) -> (B, H, W).
    """

    def one(xi, t, _):
        g, _, t = target_grads(logits_fn, xi[None], t)
        return reduce_channels(g[0], signed), t, {}

    return over_examples(one, x, targets, chunk_size=chunk_size)
