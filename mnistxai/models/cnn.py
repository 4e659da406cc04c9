"""The BatchNorm CNN classifier as a Flax module derived from its layer specification
(``mnistxai.models.spec``), written so that any prefix or suffix of it is a pure function.

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

from mnistxai.models.spec import BN_EPSILON, CNN_SPEC, Spec, cnn_spec

CONV_LAYERS = CNN_SPEC.convs
LAYER_ALIASES = CNN_SPEC.aliases
LAYERS = CNN_SPEC.named


def resolve_layer(layer: str) -> str:
    """Map a layer name or alias (``block1..3``) to its canonical name, or raise InputError."""
    return CNN_SPEC.resolve(layer)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 on NHWC input (H and W even).

    Written as reshape + max rather than ``nn.max_pool``: the gradient of ``lax.reduce_window``
    lowers to ``select_and_scatter``, which XLA:CPU runs several times slower than the
    mask-based gradient of a plain reduction.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
    """The seed's BatchNorm CNN for 28x28x1 inputs in [0, 1] (``spec`` has its layers).

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

    @property
    def spec(self) -> Spec:
        return cnn_spec(tuple(self.widths), self.hidden, self.num_classes, self.dropout_rate)

    def setup(self):
        def build(layer):
            if layer.kind == "conv":
                return nn.Conv(
                    layer.features, (3, 3), padding="SAME", use_bias=False, name=layer.name
                )
            if layer.kind == "batchnorm":
                return nn.BatchNorm(momentum=self.bn_momentum, epsilon=BN_EPSILON, name=layer.name)
            return nn.Dense(layer.features, name=layer.name)

        self.scopes = {entry.name: build(entry) for entry in self.spec.layers if entry.name}
        self.dropout = nn.Dropout(self.dropout_rate)

    def _run(self, x, start: int, stop: int, train: bool):
        for layer in self.spec.layers[start:stop]:
            kind = layer.kind
            if kind in ("conv", "dense"):
                x = self.scopes[layer.name](x)
            elif kind == "batchnorm":
                x = self.scopes[layer.name](x, use_running_average=not train)
            elif kind == "relu":
                x = self.activation(x)
            elif kind == "maxpool":
                x = max_pool_2x2(x)
            elif kind == "gap":
                x = x.mean(axis=(1, 2))
            elif kind == "dropout":
                x = self.dropout(x, deterministic=not train)
            else:
                raise ValueError(f"CNN has no rule for layer kind {kind!r}")
        return x

    def forward_to(self, x, layer: str = "block3", train: bool = False):
        """Activations of ``layer`` for inputs ``x`` of shape (B, 28, 28, 1)."""
        return self._run(x, 0, self.spec.point(layer), train)

    def forward_from(self, a, layer: str = "block3", train: bool = False):
        """Logits (B, num_classes) from the activations ``a`` of ``layer``."""
        return self._run(a, self.spec.point(layer), len(self.spec.layers), train)

    def __call__(self, x, train: bool = False):
        return self._run(x, 0, len(self.spec.layers), train)


def init_cnn(model: CNN, key: jax.Array) -> dict:
    """Fresh variables ``{'params', 'batch_stats'}`` for ``model``."""
    return dict(model.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32)))


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
