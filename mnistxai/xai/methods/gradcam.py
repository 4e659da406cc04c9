"""Gradient-weighted class activation maps: Grad-CAM, Grad-CAM++ and LayerCAM.

Each takes ``features_fn`` x (B, H, W, C) -> A (B, h, w, K) and ``head_fn`` A -> logits (B,
classes), so ``head_fn(features_fn(x))`` is the model; for a ``Classifier`` these are
``features``/``head`` at the option ``layer`` (default block 3, 7x7x128). Maps are computed at
(h, w), ReLU'd and bilinearly upsampled to (H, W) with half-pixel centres (as cv2.resize in
pytorch-grad-cam). Unlike pytorch-grad-cam they are *not* min-max scaled: use
``postprocess.normalize`` for that, so magnitudes stay comparable across images. A new member is
one weighting function and ``gradient_cam`` (see ``hirescam``).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    one_hot_rows,
    over_examples,
    resize_maps,
    target_or_argmax,
)
from mnistxai.xai.registry import register

FeaturesFn = Callable[[jax.Array], jax.Array]
HeadFn = Callable[[jax.Array], jax.Array]
# a forward pass and a backward through the head: XLA's default convolutions measured faster
# (Grad-CAM, batch 1024 on the 2-core CI machine: 2,860 vs 2,490 images/s with the project's)
CAM_FACTS = dict(model="layer", family="cam", compile="default", passes=lambda o: (0, 1))


def layer_grads(features_fn, head_fn, xi, t):
    """Activations A (h, w, K), target-logit gradient dy/dA (h, w, K) and target for one example."""
    a = features_fn(xi[None])
    logits, vjp = jax.vjp(head_fn, a)
    t = target_or_argmax(logits[0], t)
    (g,) = vjp(one_hot_rows(t, 1, logits.shape[-1], logits.dtype))
    return a[0], g[0], t


def gradient_cam(weigh: Callable[[jax.Array, jax.Array], jax.Array], name: str, doc: str):
    """The CAM method ``name`` whose low-resolution map is ReLU(weigh(A, dy/dA)) (an (h, w) map)."""

    def method(
        features_fn: FeaturesFn,
        head_fn: HeadFn,
        x: jax.Array,
        targets: Optional[jax.Array] = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> Explanation:
        def one(xi, t, _):
            a, g, t = layer_grads(features_fn, head_fn, xi, t)
            cam = jax.nn.relu(weigh(a, g))
            return resize_maps(cam, xi.shape[:2]), t, {}

        return over_examples(one, x, targets, chunk_size=chunk_size)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


def _gradcam_weigh(a, g):
    return jnp.einsum("hwk,k->hw", a, g.mean((0, 1)))


def _gradcam_pp_weigh(a, g):
    # pytorch-grad-cam's closed form, which assumes an exponential of the score (paper eq. 19);
    # it adds 1e-6 to the denominator where a zero denominator here gives alpha = 0
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum((0, 1)) * g3
    alpha = jnp.where(g != 0, g2 / jnp.where(denom != 0, denom, 1.0), 0.0)
    return jnp.einsum("hwk,k->hw", a, (alpha * jax.nn.relu(g)).sum((0, 1)))


def _layercam_weigh(a, g):
    return (jax.nn.relu(g) * a).sum(-1)


gradcam = register("gradcam", paper="Selvaraju et al. 2017, arXiv:1610.02391", **CAM_FACTS)(
    gradient_cam(
        _gradcam_weigh,
        "gradcam",
        """Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391):
ReLU(sum_k mean_ij(dy/dA_k) A_k).

(B, H, W) non-negative maps; on a GAP + linear head this is the CAM of Zhou et al. 2016 / (h*w).""",
    )
)

gradcam_pp = register(
    "gradcam_pp", paper="Chattopadhay et al. 2018, arXiv:1710.11063", **CAM_FACTS
)(
    gradient_cam(
        _gradcam_pp_weigh,
        "gradcam_pp",
        """Grad-CAM++
(Chattopadhay et al. 2018, arXiv:1710.11063), the closed form of the paper's eq. 19.

alpha = g^2 / (2 g^2 + sum_ij A g^3), weights sum_ij alpha ReLU(g). pytorch-grad-cam adds 1e-6
to that denominator; here alpha is 0 where the denominator is 0 (and where g is 0, as there).
The two differ where the denominator is near 1e-6.""",
    )
)

layercam = register("layercam", paper="Jiang et al. 2021, IEEE TIP 30", **CAM_FACTS)(
    gradient_cam(
        _layercam_weigh,
        "layercam",
        """LayerCAM (Jiang et al. 2021, IEEE TIP 30):
ReLU(sum_k ReLU(dy/dA_k) * A_k).

Elementwise weights, so it also works at shallow layers.""",
    )
)
