"""The standard views of a ``Classifier`` that methods ask for by name (``register(model=...)``).

- ``logits``: the fast input-gradient twin (``_fast.fast_logits``), equal to
  ``classifier.logits`` up to float rounding: for methods that differentiate the logits.
- ``forward``: ``classifier.logits`` itself (the Flax model's forward pass is ~10% faster than
  the twin's when nothing is differentiated): for perturbation methods.
- ``layer``: ``(features_fn, head_fn)`` split at the option ``layer`` (a conv layer, default
  block 3), ``head_fn(features_fn(x)) == logits``: for class activation maps.
- ``folded``: the network as a list of ``Folded`` layers, BatchNorm folded into the convs
  (``mnistxai.models.spec.folded_layers``): for methods that propagate layer by layer (LRP,
  DeepLIFT).
- ``classifier``: the classifier itself, for a method that builds what it needs.

A method that needs another view registers it in its own file (``register_model``), as guided
backprop and LRP do.
"""

from __future__ import annotations

import functools

from mnistxai.models.spec import CNN_SPEC, folded_layers
from mnistxai.util.errors import InputError
from mnistxai.xai._fast import fast_logits
from mnistxai.xai.registry import ModelView, Option, register_model


def conv_layer(name: str, value) -> str:
    """Check for a CAM's ``layer`` option: a conv layer name or block alias of the default CNN,
    returned as the layer's own name (``block3`` -> ``conv6``: one compiled program for both)."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be a layer name, got {value!r}")
    if CNN_SPEC.resolve(value) not in CNN_SPEC.convs:
        convs = list(CNN_SPEC.convs) + list(CNN_SPEC.aliases)
        raise InputError(
            f"CAM methods need a convolutional layer, not {value!r}; choose one of "
            f"{', '.join(convs)}"
        )
    return CNN_SPEC.resolve(value)


def layer_fns(classifier, layer: str) -> tuple:
    """``(features_fn, head_fn)`` of ``classifier`` split at ``layer``."""
    return (
        functools.partial(classifier.features, layer=layer),
        functools.partial(classifier.head, layer=layer),
    )


def _layer_view(classifier, options):
    layer = options.pop("layer")
    return layer_fns(classifier, layer), options


LAYER_OPTION = {"layer": Option("block3", conv_layer)}

register_model("logits", ModelView(lambda clf, o: ((fast_logits(clf),), o)))
register_model("forward", ModelView(lambda clf, o: ((clf.logits,), o)))
register_model("layer", ModelView(_layer_view, LAYER_OPTION))
register_model(
    "folded",
    ModelView(lambda clf, o: ((folded_layers(clf.model.spec, clf.variables),), o)),
)
register_model("classifier", ModelView(lambda clf, o: ((clf,), o)))


def head_fraction(layer: str) -> float:
    """The share of the default CNN's forward multiply-adds that come after ``layer``: what one
    pass of ``head_fn`` costs in forward passes (Ablation-CAM's cost: 128 head passes at block 3
    are 0.15 of a forward pass, not 128)."""
    name, size, channels, macs, after = CNN_SPEC.resolve(layer), 28, 1, [], None
    for entry in CNN_SPEC.layers:
        if entry.kind == "conv":
            macs.append(size * size * channels * entry.features * 9)
            channels = entry.features
        elif entry.kind == "dense":
            macs.append(channels * entry.features)
            channels = entry.features
        elif entry.kind == "maxpool":
            size //= 2
        elif entry.kind == "gap":
            size = 1
        if entry.name == name:
            after = len(macs)
    return sum(macs[after:]) / sum(macs)


def layer_channels(layer: str) -> int:
    """Channels of the default CNN's ``layer`` (Score-CAM's cost: one masked pass each)."""
    name = CNN_SPEC.resolve(layer)
    return next(entry.features for entry in CNN_SPEC.layers if entry.name == name)
