"""The BatchNorm CNN's architecture, written once as a sequence of layers.

Everything that needs the architecture derives it from a ``Spec``: the Flax module
(``mnistxai.models.cnn.CNN``), its split at a named layer (``features``/``head``), the inference
layers with BatchNorm folded into the convs (``folded_layers``: the fast input-gradient twin and
LRP), the randomization cascade (``cascade``) and the head that transfer learning re-initializes
(``head_layers``). An unknown layer kind is an error wherever a spec is read.

The default (``cnn_spec()``)::

    conv1 bn1 relu  conv2 bn2 relu  maxpool    block1 = conv2: (B, 28, 28, 32)
    conv3 bn3 relu  conv4 bn4 relu  maxpool    block2 = conv4: (B, 14, 14, 64)
    conv5 bn5 relu  conv6 bn6 relu  gap        block3 = conv6: (B, 7, 7, 128)
    dense relu  dropout  out                   dense: (B, 256), logits: (B, 10)

A named layer's activations are read after its activation function (a conv's after BatchNorm and
ReLU, before any pooling); block k is the last conv before the k-th pooling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple, Optional, Sequence

import jax

from mnistxai.util.errors import InputError

Kind = Literal["conv", "batchnorm", "relu", "maxpool", "gap", "dense", "dropout"]
KINDS: tuple[str, ...] = ("conv", "batchnorm", "relu", "maxpool", "gap", "dense", "dropout")
BN_EPSILON = 1e-5  # flax.linen.BatchNorm's default


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: ``kind``; ``name`` (the parameter scope of conv, batchnorm and dense layers);
    ``features`` (output channels or units); ``rate`` (dropout)."""

    kind: Kind
    name: str = ""
    features: int = 0
    rate: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; known: {', '.join(KINDS)}")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A CNN as layers, with the names every consumer reads off it."""

    layers: tuple[Layer, ...]

    @property
    def named(self) -> tuple[str, ...]:
        """The layers whose activations can be read (every conv and dense layer but the output)."""
        names = [entry.name for entry in self.layers if entry.kind in ("conv", "dense")]
        return tuple(names[:-1])

    @property
    def convs(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.layers if entry.kind == "conv")

    @property
    def aliases(self) -> dict[str, str]:
        """``block<k>``: the last conv before the k-th pooling (max-pool or global average)."""
        out, last = {}, None
        for layer in self.layers:
            if layer.kind == "conv":
                last = layer.name
            elif layer.kind in ("maxpool", "gap") and last is not None:
                out[f"block{len(out) + 1}"] = last
        return out

    def resolve(self, layer: Any) -> str:
        """A layer name or alias as its canonical name, or an ``InputError`` listing them."""
        name = self.aliases.get(layer, layer) if isinstance(layer, str) else layer
        if name not in self.named:
            known = ", ".join(self.named + tuple(self.aliases))
            raise InputError(f"unknown layer {layer!r}; known layers: {known}")
        return name

    def point(self, layer: str) -> int:
        """The index in ``layers`` just after ``layer``'s activation: features end there."""
        name = self.resolve(layer)
        i = next(i for i, entry in enumerate(self.layers) if entry.name == name)
        while i + 1 < len(self.layers) and self.layers[i + 1].kind in ("batchnorm", "relu"):
            i += 1
        return i + 1

    @property
    def head_layers(self) -> tuple[str, ...]:
        """The parametrized layers after the global pooling: what transfer learning retrains."""
        gap = next(i for i, entry in enumerate(self.layers) if entry.kind == "gap")
        return tuple(entry.name for entry in self.layers[gap:] if entry.name)

    @property
    def cascade(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """((stage, parameter scopes), ...) from the output down: each conv or dense layer with
        the BatchNorm after it, the order in which the randomization check re-initializes them."""
        stages = []
        for i, layer in enumerate(self.layers):
            if layer.kind in ("conv", "dense"):
                scopes = [layer.name]
                if i + 1 < len(self.layers) and self.layers[i + 1].kind == "batchnorm":
                    scopes.append(self.layers[i + 1].name)
                stages.append((layer.name, tuple(scopes)))
        return tuple(reversed(stages))


def cnn_spec(
    widths: Sequence[int] = (32, 64, 128),
    hidden: int = 256,
    num_classes: int = 10,
    dropout_rate: float = 0.5,
) -> Spec:
    """The seed's CNN: per width a block of two [3x3 conv, BatchNorm, ReLU], 2x2 max-pool between
    blocks, global average pool, dense ``hidden`` + ReLU + dropout, dense ``num_classes``."""
    layers: list[Layer] = []
    n = 0
    for b, width in enumerate(widths):
        if b:
            layers.append(Layer("maxpool"))
        for _ in range(2):
            n += 1
            layers += [
                Layer("conv", f"conv{n}", width),
                Layer("batchnorm", f"bn{n}"),
                Layer("relu"),
            ]
    layers += [
        Layer("gap"),
        Layer("dense", "dense", hidden),
        Layer("relu"),
        Layer("dropout", rate=dropout_rate),
        Layer("dense", "out", num_classes),
    ]
    return Spec(tuple(layers))


class Folded(NamedTuple):
    """An inference layer: ``kind`` in conv / dense / relu / maxpool / gap; ``kernel`` (HWIO for
    conv, (in, out) for dense) and ``bias`` for the affine kinds."""

    kind: str
    kernel: Optional[jax.Array] = None
    bias: Optional[jax.Array] = None


FOLDED_KINDS = ("conv", "dense", "relu", "maxpool", "gap")


def folded_layers(spec: Spec, variables: dict) -> list[Folded]:
    """The network in inference mode as affine and fixed layers: each BatchNorm folded into the
    conv before it (running statistics; equal to the Flax model up to float rounding), dropout
    removed. Used by the fast input-gradient twin and by LRP."""
    params, stats = variables["params"], variables["batch_stats"]
    out: list[Folded] = []
    for i, layer in enumerate(spec.layers):
        kind = layer.kind
        if kind == "conv":
            bn = spec.layers[i + 1] if i + 1 < len(spec.layers) else None
            kernel = params[layer.name]["kernel"]
            if bn is None or bn.kind != "batchnorm":
                raise ValueError(f"{layer.name}: a conv without bias needs a BatchNorm after it")
            p, s = params[bn.name], stats[bn.name]
            scale = p["scale"] * jax.lax.rsqrt(s["var"] + BN_EPSILON)
            out.append(Folded("conv", kernel * scale, p["bias"] - s["mean"] * scale))
        elif kind == "dense":
            out.append(Folded("dense", params[layer.name]["kernel"], params[layer.name]["bias"]))
        elif kind in ("relu", "maxpool", "gap"):
            out.append(Folded(kind))
        elif kind not in ("batchnorm", "dropout"):  # folded into the conv / off in inference
            raise ValueError(f"folded_layers has no rule for layer kind {kind!r}")
    return out


CNN_SPEC = cnn_spec()
