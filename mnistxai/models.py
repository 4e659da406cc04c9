"""The BatchNorm CNN classifier, written so that any prefix or suffix of it is a pure function.

Architecture (the seed's, ~323k parameters)::

    conv1 conv2 | pool | conv3 conv4 | pool | conv5 conv6 | GAP | dense(256) ReLU dropout | out(10)
    \\_ block1 _/         \\_ block2 _/         \\_ block3 _/

Each ``convK`` is a 3x3 SAME convolution (no bias: BatchNorm follows) -> BatchNorm -> activation.
Feature maps are named by the layer that produced them (after BatchNorm and ReLU, before pooling):

    ============  ====================  ==================================
    layer         shape                 alias
    ============  ====================  ==================================
    conv1, conv2  (B, 28, 28, 32)       ``block1`` = conv2
    conv3, conv4  (B, 14, 14, 64)       ``block2`` = conv4
    conv5, conv6  (B, 7, 7, 128)        ``block3`` = conv6
    dense         (B, 256)              penultimate activations (post-ReLU)
    ============  ====================  ==================================

``CNN.forward_to(x, layer)`` and ``CNN.forward_from(a, layer)`` split the network at any of these,
so that ``forward_from(forward_to(x, l), l) == __call__(x)`` for every ``l``. Grad-CAM and its
family take gradients through ``forward_from``; activation maximization reads ``forward_to``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")
LAYER_ALIASES = {"block1": "conv2", "block2": "conv4", "block3": "conv6"}
LAYERS = CONV_LAYERS + ("dense",)


def resolve_layer(layer: str) -> str:
    """Map a layer name or alias (``block1..3``) to its canonical name, or raise ValueError."""
    name = LAYER_ALIASES.get(layer, layer)
    if name not in LAYERS:
        known = ", ".join(LAYERS + tuple(LAYER_ALIASES))
        raise ValueError(f"unknown layer {layer!r}; known layers: {known}")
    return name


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 on NHWC input (H and W even).

    Written as reshape + max rather than ``nn.max_pool``: the gradient of ``lax.reduce_window``
    lowers to ``select_and_scatter``, which XLA:CPU runs several times slower than the
    mask-based gradient of a plain reduction.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
    """The seed's BatchNorm CNN for 28x28x1 inputs in [0, 1].

    Attributes:
      num_classes: number of output logits (10).
      widths: channels of the three blocks (32, 64, 128).
      hidden: units of the penultimate dense layer (256).
      dropout_rate: dropout before the output layer, active only with ``train=True`` (0.5).
      bn_momentum: BatchNorm running-statistics momentum (0.9).
      activation: the nonlinearity; XAI methods swap it (e.g. guided backprop's ReLU).
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 128)
    hidden: int = 256
    dropout_rate: float = 0.5
    bn_momentum: float = 0.9
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    def setup(self):
        channels = [w for w in self.widths for _ in range(2)]
        self.convs = [nn.Conv(c, (3, 3), padding="SAME", use_bias=False, name=n)
                      for c, n in zip(channels, CONV_LAYERS)]
        self.norms = [nn.BatchNorm(momentum=self.bn_momentum, name=f"bn{i + 1}")
                      for i in range(len(CONV_LAYERS))]
        self.dense = nn.Dense(self.hidden, name="dense")
        self.dropout = nn.Dropout(self.dropout_rate)
        self.out = nn.Dense(self.num_classes, name="out")

    def _conv(self, i: int, x, train: bool):
        if i in (2, 4):  # pool at the entry of blocks 2 and 3
            x = max_pool_2x2(x)
        x = self.convs[i](x)
        x = self.norms[i](x, use_running_average=not train)
        return self.activation(x)

    def forward_to(self, x, layer: str = "block3", train: bool = False):
        """Activations of ``layer`` for inputs ``x`` of shape (B, 28, 28, 1)."""
        stop = LAYERS.index(resolve_layer(layer))
        for i in range(min(stop + 1, len(CONV_LAYERS))):
            x = self._conv(i, x, train)
        if LAYERS[stop] == "dense":
            x = self.activation(self.dense(x.mean(axis=(1, 2))))
        return x

    def forward_from(self, a, layer: str = "block3", train: bool = False):
        """Logits (B, num_classes) from the activations ``a`` of ``layer``."""
        start = LAYERS.index(resolve_layer(layer))
        if LAYERS[start] != "dense":
            for i in range(start + 1, len(CONV_LAYERS)):
                a = self._conv(i, a, train)
            a = self.activation(self.dense(a.mean(axis=(1, 2))))
        a = self.dropout(a, deterministic=not train)
        return self.out(a)

    def __call__(self, x, train: bool = False):
        return self.forward_from(self.forward_to(x, "conv6", train), "conv6", train)


def init_cnn(model: CNN, key: jax.Array) -> dict:
    """Fresh variables ``{'params', 'batch_stats'}`` for ``model``."""
    return dict(model.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32)))


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
