"""Score-CAM (Wang et al. 2020): gradient-free class activation maps."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    chunked_map,
    minmax,
    over_groups,
    plan,
    resize_maps,
    targets_or_zeros,
)
from mnistxai.xai.methods.gradcam import FeaturesFn, HeadFn
from mnistxai.xai.registry import register
from mnistxai.xai.views import layer_channels


@register(
    "scorecam",
    model="layer",
    family="cam",
    paper="Wang et al. 2020, arXiv:1910.01279",
    passes=lambda o: (0, 1 + layer_channels(o["layer"])),
)
def scorecam(
    features_fn: FeaturesFn,
    head_fn: HeadFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Score-CAM (Wang et al. 2020, arXiv:1910.01279), gradient-free.

    Each channel A_k is upsampled to (H, W) and min-max scaled to a mask M_k (a constant channel
    gives a zero mask); the channel's weight is the softmax over channels of the target logit of
    x * M_k, as in pytorch-grad-cam (the paper uses the softmax *probability* minus a baseline's).
    The one difference from pytorch-grad-cam: it upsamples A_k with corner-aligned bilinear
    interpolation (``UpsamplingBilinear2d``, align_corners=True), this with half-pixel centres
    (``resize_maps``, as its other CAMs and cv2.resize).
    Groups of examples go through the model as flat batches of at most ``chunk_size`` masked
    images (``chunk_size // examples`` channels each). Extras: ``channel_weights`` (B, K).
    """
    examples, per_pass = plan(x.shape[0], chunk_size)
    size = x.shape[1:3]

    def group(args):
        xg, tg = args
        a = features_fn(xg)  # (E, h, w, K)
        t = (jnp.argmax(head_fn(a), -1) if targets is None else tg).astype(jnp.int32)
        masks = minmax(resize_maps(jnp.moveaxis(a, -1, 1), size))  # (E, K, H, W)

        def chunk(idx):  # -> (k, E) target logits
            masked = (xg[:, None] * masks[:, idx][..., None]).reshape((-1,) + xg.shape[1:])
            logits = head_fn(features_fn(masked)).reshape(xg.shape[0], idx.shape[0], -1)
            return logits[jnp.arange(xg.shape[0]), :, t].T

        w = jax.nn.softmax(chunked_map(chunk, a.shape[-1], per_pass).T, -1)  # (E, K)
        cam = jax.nn.relu(jnp.einsum("ehwk,ek->ehw", a, w))
        return resize_maps(cam, size), t, w

    maps, t, w = over_groups(group, (x, targets_or_zeros(x, targets)), examples)
    return Explanation(maps, t, {"channel_weights": w})
