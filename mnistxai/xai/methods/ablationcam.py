"""Ablation-CAM (Desai & Ramaswamy 2020): channel weights from the score drop when a channel is
ablated."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    at_targets,
    chunked_map,
    over_groups,
    plan,
    resize_maps,
    targets_or_zeros,
)
from mnistxai.xai.methods.gradcam import FeaturesFn, HeadFn
from mnistxai.xai.registry import register
from mnistxai.xai.views import head_fraction, layer_channels


@register(
    "ablationcam",
    model="layer",
    family="cam",
    paper="Desai & Ramaswamy 2020, WACV",
    # one forward pass, then one pass of the head for each ablated channel
    passes=lambda o: (0, 1 + layer_channels(o["layer"]) * head_fraction(o["layer"])),
)
def ablationcam(
    features_fn: FeaturesFn,
    head_fn: HeadFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Ablation-CAM (Desai & Ramaswamy 2020, WACV), gradient-free.

    ReLU(sum_k w_k A_k) with w_k = (y - y_k) / y, where y is the target logit and y_k the target
    logit with channel k of the option ``layer`` (block 3) set to zero. As pytorch-grad-cam's
    ``AblationCAM`` with all channels ablated (``ratio_channels_to_ablate=1``): it too sets a
    channel to zero when the layer's smallest activation is zero, which every named layer here
    has after its ReLU (it uses min - 1e7 otherwise). Only the head after the layer is rerun, on
    flat batches of at most ``chunk_size`` ablated activations. A target logit of exactly 0
    gives zero weights (the library divides by it). Not min-max scaled. (B, H, W) non-negative
    maps; extras: ``channel_weights`` (B, K).
    """
    examples, per_pass = plan(x.shape[0], chunk_size)

    def group(args):
        xg, tg = args
        a = features_fn(xg)  # (E, h, w, K)
        logits = head_fn(a)
        t = (jnp.argmax(logits, -1) if targets is None else tg).astype(jnp.int32)
        score = at_targets(logits, t)  # (E,)

        def chunk(idx):  # -> (k, E) target logits with channel idx[j] zeroed
            keep = 1 - jax.nn.one_hot(idx, a.shape[-1], dtype=a.dtype)  # (k, K)
            ablated = (a[:, None] * keep[None, :, None, None]).reshape((-1,) + a.shape[1:])
            scores = head_fn(ablated).reshape(a.shape[0], idx.shape[0], -1)
            return jnp.take_along_axis(scores, t[:, None, None], -1)[..., 0].T

        ablated_scores = chunked_map(chunk, a.shape[-1], per_pass).T  # (E, K)
        safe = jnp.where(score != 0, score, 1.0)[:, None]
        w = jnp.where(score[:, None] != 0, (score[:, None] - ablated_scores) / safe, 0.0)
        cam = jax.nn.relu(jnp.einsum("ehwk,ek->ehw", a, w))
        return resize_maps(cam, xg.shape[1:3]), t, w

    maps, t, w = over_groups(group, (x, targets_or_zeros(x, targets)), examples)
    return Explanation(maps, t, {"channel_weights": w})
