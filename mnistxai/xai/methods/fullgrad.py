"""FullGrad (Srinivas & Fleuret 2019): the input-gradient and every bias-gradient of the network.

For a network of affine layers with biases and piecewise-linear nonlinearities (ReLU, max-pool,
global average pooling), the target logit is exactly its full-gradient representation

    F(x) = sum(x * dF/dx) + sum over layers l of sum(b_l * dF/db_l),

where dF/db_l, the gradient with respect to layer l's bias broadcast over its output, is the
gradient with respect to that layer's output (pre-activation). The convs of this CNN have no bias
but BatchNorm after them, so the network runs as its ``folded`` layers (BatchNorm folded into each
conv: the bias is BatchNorm's shift beta - mu gamma / sigma); the gradients with respect to the
input and to every conv and dense output come from one backward pass.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.models.spec import Folded
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    one_hot_rows,
    over_examples,
    resize_maps,
    target_or_argmax,
)
from mnistxai.xai._fast import layer_steps
from mnistxai.xai.registry import register

# pytorch-grad-cam's scale_cam_image divides by 1e-7 + max: a map that is constant becomes zeros
SCALE_EPS = 1e-7
BIASED = ("conv", "dense")


def full_gradient(layers: list[Folded]):
    """``fn(xs, probes) -> (logits, outputs)`` of the folded ``layers`` on (k, H, W, C) inputs:
    ``probes`` (one per conv and dense layer, shaped like its output, or None) are added to those
    outputs, so the gradient with respect to a probe is the gradient with respect to the layer's
    output; ``outputs`` are those outputs. Also returns the layers' (kind, bias) pairs in the same
    order. An unknown layer kind is an error."""
    # the Flax model's ReLU (gradient 0 at 0)
    steps = list(
        zip([layer.kind for layer in layers], layer_steps(layers, jax.nn.relu, "FullGrad"))
    )
    biases = [(layer.kind, layer.bias) for layer in layers if layer.kind in BIASED]

    def fn(xs, probes=None):
        outputs = []
        for kind, step in steps:
            xs = step(xs)
            if kind in BIASED:
                if probes is not None:
                    xs = xs + probes[len(outputs)]
                outputs.append(xs)
        return xs, outputs

    return fn, biases


def decompose(fn, biases, xi: jax.Array, t: Optional[jax.Array]):
    """The full-gradient decomposition of one example ``xi`` (H, W, C) for target ``t`` (None:
    the predicted class), from ``full_gradient``'s ``fn, biases``.

    Returns (F(xi) at the target, target, dF/dx (H, W, C), [b_l * dF/db_l: (h, w, K) for a conv,
    (K,) for a dense layer]).
    """
    xs = xi[None]
    shapes = jax.eval_shape(lambda v: fn(v)[1], xs)
    probes = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    logits, vjp, _ = jax.vjp(fn, xs, probes, has_aux=True)
    t = target_or_argmax(logits[0], t)
    gx, gprobes = vjp(one_hot_rows(t, 1, logits.shape[-1], logits.dtype))
    parts = [b * g[0] for (_, b), g in zip(biases, gprobes)]
    return logits[0, t], t, gx[0], parts


def scale_cam(maps: jax.Array, axes=(0, 1)) -> jax.Array:
    """pytorch-grad-cam's ``scale_cam_image`` without the resize: (m - min) / (1e-7 + max(m -
    min)) over ``axes``, so in [0, 1); a constant map becomes zeros."""
    shifted = maps - maps.min(axes, keepdims=True)
    return shifted / (SCALE_EPS + shifted.max(axes, keepdims=True))


def fullgrad_map(xi: jax.Array, gx: jax.Array, parts: list, biases) -> jax.Array:
    """The FullGrad map (H, W) of one example as pytorch-grad-cam post-processes it: |x dF/dx|
    and each conv's |b dF/db| min-max scaled per channel (``scale_cam``), the channels summed,
    each layer's sum resized to (H, W) bilinearly, all summed, and that sum min-max scaled."""
    size = xi.shape[:2]
    total = scale_cam(jnp.abs(xi * gx)).sum(-1)
    for (kind, _), part in zip(biases, parts):
        if kind != "conv":  # no spatial map: pytorch-grad-cam collects Conv2d and BatchNorm2d only
            continue
        # bilinear resizing is linear: summing the scaled channels first changes only rounding
        layer_map = scale_cam(jnp.abs(part)).sum(-1)
        total = total + (layer_map if layer_map.shape == size else resize_maps(layer_map, size))
    return scale_cam(total)


@register(
    "fullgrad",
    model="folded",
    family="cam",
    paper="Srinivas & Fleuret 2019, arXiv:1905.00780",
    passes=lambda o: (1, 0),
    quick={},
    smoke={},
)
def fullgrad(
    layers: list[Folded],
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """FullGrad (Srinivas & Fleuret 2019, arXiv:1905.00780), as pytorch-grad-cam's ``FullGrad``:
    the input-gradient and every conv layer's bias-gradient, each made a map and summed.

    ``layers``: the folded layers of the model (BatchNorm folded into each conv, its shift the
    conv's bias). With F the target logit (the prediction unless given) and g_l = dF/d(output of
    conv l): M = scale(scale_c(|x dF/dx|) + sum_l resize(sum_c scale_c(|b_l g_l|))), where
    scale_c min-max scales each channel of a map to [0, 1) as ``scale_cam_image`` does ((m -
    min) / (1e-7 + max(m - min))), resize is bilinear with half-pixel centres to (H, W) (as
    cv2.resize), and the outer scale is the same min-max of the sum. (B, H, W) maps in [0, 1),
    one backward pass per image; pytorch-grad-cam's ``aug_smooth`` and ``eigen_smooth`` are not
    offered.

    The bias terms are pytorch-grad-cam's: ignoring ``target_layers`` (there is no ``layer``
    option here either), it collects every module of type exactly ``Conv2d`` or ``BatchNorm2d``
    that has a bias (a BatchNorm's is beta - mu gamma / sigma, times the gradient at its output)
    and no ``Linear`` layer. This CNN's convs have no bias, so its terms are exactly the folded
    convs' (output = BatchNorm's output, bias = BatchNorm's shift); a conv with a bias before a
    BatchNorm would be two terms there and one here. Dense layers' biases are left
    out of the map, as there (and in the paper's code, which collects them but maps only conv
    layers), and counted in ``bias_part``. Departures: a max-pool window's tied maxima share its
    gradient evenly (PyTorch's max-pool routes it to one); each layer's channels are summed
    before the (linear) resize, not after (equal up to rounding); computed in x's dtype
    (pytorch-grad-cam works in float32). The map is min-max scaled at the end as there, unlike
    this package's Grad-CAM family.

    Extras, the raw full-gradient representation: ``input_part`` (B,) = sum(x dF/dx),
    ``bias_part`` (B,) = sum over conv and dense layers of sum(b dF/db), and
    ``completeness_error`` (B,) = input_part + bias_part - F(x), zero up to rounding for this
    piecewise-linear network.
    """
    fn, biases = full_gradient(layers)

    def one(xi, t, _):
        logit, t, gx, parts = decompose(fn, biases, xi, t)
        input_part = (xi * gx).sum()
        bias_part = sum((p.sum() for p in parts), jnp.zeros((), xi.dtype))
        extras = {
            "input_part": input_part,
            "bias_part": bias_part,
            "completeness_error": input_part + bias_part - logit,
        }
        return fullgrad_map(xi, gx, parts, biases), t, extras

    return over_examples(one, x, targets, chunk_size=chunk_size)
