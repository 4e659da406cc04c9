"""Class activation maps: Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM and Guided Grad-CAM.

The functional core takes ``features_fn`` x (B, H, W, C) -> A (B, h, w, K) and ``head_fn``
A -> logits (B, classes), so ``head_fn(features_fn(x))`` is the model; for a ``Classifier`` these are
``features``/``head`` at a chosen layer (default block 3, 7x7x128). Maps are computed at (h, w),
ReLU'd and bilinearly upsampled to (H, W) with half-pixel centres (as cv2.resize in
pytorch-grad-cam). Unlike pytorch-grad-cam they are *not* min-max scaled: use
``postprocess.normalize`` for that, so magnitudes stay comparable across images.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (DEFAULT_CHUNK, Explanation, chunked_map, minmax, one_hot_rows,
                                over_examples, over_groups, plan, resize_maps, target_or_argmax,
                                targets_or_zeros)
from mnistxai.xai.gradients import guided_backprop

FeaturesFn = Callable[[jax.Array], jax.Array]
HeadFn = Callable[[jax.Array], jax.Array]


def _layer_grads(features_fn, head_fn, xi, t):
    """Activations A (h, w, K), target-logit gradient dy/dA (h, w, K) and target for one example."""
    a = features_fn(xi[None])
    logits, vjp = jax.vjp(head_fn, a)
    t = target_or_argmax(logits[0], t)
    (g,) = vjp(one_hot_rows(t, 1, logits.shape[-1], logits.dtype))
    return a[0], g[0], t


def _gradient_cam(weigh: Callable[[jax.Array, jax.Array], jax.Array]):
    """A CAM whose low-resolution map is ReLU(weigh(A, dy/dA)) (an (h, w) map)."""
    def method(features_fn: FeaturesFn, head_fn: HeadFn, x: jax.Array,
               targets: Optional[jax.Array] = None, *,
               chunk_size: int = DEFAULT_CHUNK) -> Explanation:
        def one(xi, t, _):
            a, g, t = _layer_grads(features_fn, head_fn, xi, t)
            cam = jax.nn.relu(weigh(a, g))
            return resize_maps(cam, xi.shape[:2]), t, {}
        return over_examples(one, x, targets, chunk_size=chunk_size)
    return method


def _gradcam_weigh(a, g):
    return jnp.einsum("hwk,k->hw", a, g.mean((0, 1)))


def _gradcam_pp_weigh(a, g):
    # pytorch-grad-cam's closed form, which assumes an exponential of the score (paper eq. 19);
    # it adds 1e-6 to the denominator where a zero denominator here gives alpha = 0
    g2, g3 = g ** 2, g ** 3
    denom = 2 * g2 + a.sum((0, 1)) * g3
    alpha = jnp.where(g != 0, g2 / jnp.where(denom != 0, denom, 1.0), 0.0)
    return jnp.einsum("hwk,k->hw", a, (alpha * jax.nn.relu(g)).sum((0, 1)))


def _layercam_weigh(a, g):
    return (jax.nn.relu(g) * a).sum(-1)


gradcam = _gradient_cam(_gradcam_weigh)
gradcam.__name__ = "gradcam"
gradcam.__doc__ = """Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): ReLU(sum_k mean_ij(dy/dA_k) A_k).

(B, H, W) non-negative maps; on a GAP + linear head this is the CAM of Zhou et al. 2016 / (h*w)."""

gradcam_pp = _gradient_cam(_gradcam_pp_weigh)
gradcam_pp.__name__ = "gradcam_pp"
gradcam_pp.__doc__ = """Grad-CAM++ (Chattopadhay et al. 2018, arXiv:1710.11063), the closed-form
alpha = g^2 / (2 g^2 + sum_ij A g^3) of the paper's eq. 19, weights sum_ij alpha ReLU(g).
pytorch-grad-cam adds 1e-6 to that denominator; here alpha is 0 where the denominator is 0 (and
where g is 0, as there). The two differ where the denominator is near 1e-6."""

layercam = _gradient_cam(_layercam_weigh)
layercam.__name__ = "layercam"
layercam.__doc__ = """LayerCAM (Jiang et al. 2021, IEEE TIP 30): ReLU(sum_k ReLU(dy/dA_k) * A_k),
elementwise weights, so it also works at shallow layers."""


def scorecam(features_fn: FeaturesFn, head_fn: HeadFn, x: jax.Array,
             targets: Optional[jax.Array] = None, *,
             chunk_size: int = DEFAULT_CHUNK) -> Explanation:
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
        a = features_fn(xg)                                                # (E, h, w, K)
        t = (jnp.argmax(head_fn(a), -1) if targets is None else tg).astype(jnp.int32)
        masks = minmax(resize_maps(jnp.moveaxis(a, -1, 1), size))          # (E, K, H, W)

        def chunk(idx):                                                    # -> (k, E) target logits
            masked = (xg[:, None] * masks[:, idx][..., None]).reshape((-1,) + xg.shape[1:])
            logits = head_fn(features_fn(masked)).reshape(xg.shape[0], idx.shape[0], -1)
            return logits[jnp.arange(xg.shape[0]), :, t].T
        w = jax.nn.softmax(chunked_map(chunk, a.shape[-1], per_pass).T, -1)  # (E, K)
        cam = jax.nn.relu(jnp.einsum("ehwk,ek->ehw", a, w))
        return resize_maps(cam, size), t, w
    maps, t, w = over_groups(group, (x, targets_or_zeros(x, targets)), examples)
    return Explanation(maps, t, {"channel_weights": w})


def guided_gradcam(features_fn: FeaturesFn, head_fn: HeadFn, guided_logits_fn, x: jax.Array,
                   targets: Optional[jax.Array] = None, *,
                   chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x Grad-CAM, signed.

    The Grad-CAM factor is min-max scaled to [0, 1] per map first, as in pytorch-grad-cam, so the
    result has guided backprop's units. ``guided_logits_fn`` is the model with ``guided_relu``.
    """
    cam = gradcam(features_fn, head_fn, x, targets, chunk_size=chunk_size)
    gb = guided_backprop(guided_logits_fn, x, cam.targets, chunk_size=chunk_size)
    return cam.replace(attributions=gb.attributions * minmax(cam.attributions))
