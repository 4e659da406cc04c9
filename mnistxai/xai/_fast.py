"""An input-gradient-only twin of the CNN, used by ``explain`` for speed.

``classifier.logits`` differentiated by JAX is slow on XLA:CPU in two places: the max-pool
gradient (a compare, a count of ties and a division per window) and, inside loops (the chunked
IG steps, noise samples, windows), the input-gradient convolutions, whose flipped kernels are
recomputed in the loop body and then miss XLA's fast convolution path. Here BatchNorm is folded
into the convs (``mnistxai.models.spec.folded_layers``: inference statistics, equal to the Flax
model up to float rounding, tested), each conv's backward uses a kernel flipped once outside any
loop, and the pool splits each window's gradient among its tied maxima through a mask (JAX's own
rule). Only gradients with respect to the *inputs* are correct: kernels get zero cotangents, so
do not differentiate these functions with respect to weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mnistxai.models.cnn import max_pool_2x2
from mnistxai.models.spec import folded_layers

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same(x: jax.Array, w: jax.Array, w_flipped: jax.Array) -> jax.Array:
    """3x3 SAME convolution; ``w_flipped`` = w flipped spatially with in/out swapped (its VJP)."""
    return _conv(x, w)


def _conv_fwd(x, w, w_flipped):
    return _conv(x, w), (w, w_flipped)


def _conv_bwd(res, g):
    w, w_flipped = res
    return _conv(g, w_flipped), jnp.zeros_like(w), jnp.zeros_like(w_flipped)


conv_same.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def conv_one_channel(x: jax.Array, w: jax.Array) -> jax.Array:
    """``conv_same`` for a single input channel as nine shifted multiply-adds, which XLA fuses
    into one pass: XLA:CPU runs a 1-channel convolution (and a 9 -> C matmul over patches) far
    below its usual speed."""
    h, wd = x.shape[1:3]
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(p[:, i : i + h, j : j + wd] * w[i, j, 0] for i in range(3) for j in range(3))


def _conv1_fwd(x, w):
    return conv_one_channel(x, w), w


def _conv1_bwd(w, g):
    cols = g @ w.reshape(9, -1).T  # (B, H, W, 9): d patch / d output
    h, wd = g.shape[1:3]
    out = jnp.zeros((g.shape[0], h + 2, wd + 2), g.dtype)
    for n in range(9):  # scatter each tap back (col2im)
        i, j = divmod(n, 3)
        out = out.at[:, i : i + h, j : j + wd].add(cols[..., n])
    return out[:, 1:-1, 1:-1, None], jnp.zeros_like(w)


conv_one_channel.defvjp(_conv1_fwd, _conv1_bwd)


def flip(w: jax.Array) -> jax.Array:
    return jnp.flip(w, (0, 1)).swapaxes(2, 3)


@jax.custom_vjp
def pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool whose gradient splits each window's gradient evenly among the elements tied
    for its maximum: JAX's own gradient of ``max`` (PyTorch sends it all to the first maximum;
    both are valid subgradients, with entries summing to 1 per window).

    Ties are everywhere on MNIST: the black background gives equal activations over whole regions
    after BatchNorm and ReLU (about a quarter of the first pool's windows of a test digit are tied
    at a positive value), so sending the full gradient to every tied element is wrong by up to
    the map's size on real digits.
    """
    return max_pool_2x2(x)


def _windows(a: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, 2, W/2, 2, C): each 2x2 window on axes 2 and 4."""
    b, h, w, c = a.shape
    return a.reshape(b, h // 2, 2, w // 2, 2, c)


def _pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def route_to_maxima(x: jax.Array, y: jax.Array, v: jax.Array) -> jax.Array:
    """``v`` (B, H/2, W/2, C) sent to the maxima ``y`` of each 2x2 window of ``x``, split evenly
    among tied maxima (JAX's gradient of max)."""
    tied = _windows(x) == y[:, :, None, :, None, :]
    share = v / tied.sum((2, 4)).astype(v.dtype)  # >= 1 element attains each maximum
    return jnp.where(tied, share[:, :, None, :, None, :], 0).reshape(x.shape).astype(v.dtype)


def _pool_bwd(res, g):
    x, y = res
    return (route_to_maxima(x, y, g),)


pool.defvjp(_pool_fwd, _pool_bwd)


def _conv_step(layer):
    w = layer.kernel
    if w.shape[2] == 1:
        return lambda x: conv_one_channel(x, w) + layer.bias
    w_flipped = flip(w)  # once, outside every loop that calls the twin
    return lambda x: conv_same(x, w, w_flipped) + layer.bias


def affine_step(layer):
    """The function of x of a folded conv, dense or global-average-pool layer, with this
    module's fast input-gradient convolutions (kernels flipped once, when it is built)."""
    return _steps(None)[layer.kind](layer)


def _steps(activation):
    """layer kind -> (folded layer -> its function of x)."""
    return {
        "conv": _conv_step,
        "dense": lambda layer: lambda x: x @ layer.kernel + layer.bias,
        "relu": lambda layer: activation,
        "maxpool": lambda layer: pool,
        "gap": lambda layer: lambda x: x.mean((1, 2)),
    }


def layer_steps(layers, activation, label: str = "fast_logits") -> list:
    """The function of x of each folded layer, in order, ``activation`` for every ReLU; an
    unknown layer kind is an error naming ``label``."""
    steps = _steps(activation)
    unknown = sorted({layer.kind for layer in layers} - set(steps))
    if unknown:
        raise ValueError(f"{label} has no rule for layer kind(s) {unknown}")
    return [steps[layer.kind](layer) for layer in layers]


def fast_logits(classifier):
    """``logits_fn`` (B, 28, 28, 1) -> (B, 10) equal to ``classifier.logits``, fast input gradients.

    Built from the classifier's layer specification; uses ``classifier.model.activation`` for
    every ReLU (so guided ReLUs and other swaps work). An unknown layer kind is an error here.
    """
    layers = folded_layers(classifier.model.spec, classifier.variables)
    fns = layer_steps(layers, classifier.model.activation)

    def logits_fn(x):
        for fn in fns:
            x = fn(x)
        return x

    return logits_fn
