"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x Grad-CAM."""

from __future__ import annotations

from typing import Optional

import jax

from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn, minmax
from mnistxai.xai.methods.gradcam import FeaturesFn, HeadFn, gradcam
from mnistxai.xai.methods.guided_backprop import guided_backprop, guided_logits
from mnistxai.xai.registry import ModelView, register, register_model
from mnistxai.xai.views import LAYER_OPTION, layer_fns


def _layer_and_guided(classifier, options):
    layer = options.pop("layer")
    return layer_fns(classifier, layer) + (guided_logits(classifier),), options


register_model("layer_and_guided", ModelView(_layer_and_guided, LAYER_OPTION))


@register(
    "guided_gradcam",
    model="layer_and_guided",
    family="cam",
    paper="Selvaraju et al. 2017, arXiv:1610.02391",
    passes=lambda o: (1, 1),
)
def guided_gradcam(
    features_fn: FeaturesFn,
    head_fn: HeadFn,
    guided_logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x Grad-CAM, signed.

    The Grad-CAM factor is min-max scaled to [0, 1] per map first, as in pytorch-grad-cam, so the
    result has guided backprop's units. ``guided_logits_fn`` is the model with ``guided_relu``.
    """
    cam = gradcam(features_fn, head_fn, x, targets, chunk_size=chunk_size)
    gb = guided_backprop(guided_logits_fn, x, cam.targets, chunk_size=chunk_size)
    return cam.replace(attributions=gb.attributions * minmax(cam.attributions))
