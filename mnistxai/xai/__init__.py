"""Explainable-AI methods for the MNIST CNN, as jit-compiled, batched pure JAX functions.

``explain(method, classifier, images)`` is the entry point for attributions; ``METHODS`` is the
registry (``registry``) of every method in ``methods/``, one file each. Each method is also its
plain function of model callables, for use with other models: ``mnistxai.xai.saliency(logits_fn,
x, targets)``, ``mnistxai.xai.gradcam(features_fn, head_fn, x, targets)``, and so on for every
registered name. ``layer_attribution`` and ``neuron_attribution`` attribute to a layer's units and
from one unit (Captum's layer and neuron families). ``postprocess`` turns maps into pictures.
Synthesis (``synthesis``): activation maximization (``maximize``: pixel AM and DGN-AM), latent
walks (``walk``: VAE walks with the decision flip) and counterfactuals (``pgd``,
``smallest_budget``). Quantitative evaluation lives in ``metrics``.
"""

from mnistxai.xai import methods as _methods  # noqa: F401  (registers every method)
from mnistxai.xai._core import Explanation
from mnistxai.xai.api import Contrast, explain, explain_together, parse_methods
from mnistxai.xai.compat import GradCAM, SaliencyMap
from mnistxai.xai.layer_attribution import (
    LAYER_KINDS,
    NEURON_KINDS,
    LayerExplanation,
    NeuronExplanation,
    layer_attribution,
    neuron_attribution,
)
from mnistxai.xai.methods.deconvnet import deconv_relu
from mnistxai.xai.methods.guided_backprop import guided_relu
from mnistxai.xai.methods.lrp import Layer, classifier_layers
from mnistxai.xai.methods.smoothgrad import explain_noise_tunnel
from mnistxai.xai.postprocess import (
    clip_percentile,
    magnitude,
    normalize,
    normalize_signed,
    overlay,
)
from mnistxai.xai.registry import METHODS, Method
from mnistxai.xai.synthesis.activation_max import (
    AMResult,
    NO_REGULARIZERS,
    Regularizers,
    maximize,
    success_rate,
)
from mnistxai.xai.synthesis.counterfactual import Counterfactual, pgd, smallest_budget
from mnistxai.xai.synthesis.latent_walk import Walk, confused_pairs, interpolate, walk

__all__ = [
    "AMResult",
    "Contrast",
    "Counterfactual",
    "METHODS",
    "Explanation",
    "GradCAM",
    "LAYER_KINDS",
    "Layer",
    "LayerExplanation",
    "NEURON_KINDS",
    "NeuronExplanation",
    "Method",
    "NO_REGULARIZERS",
    "Regularizers",
    "SaliencyMap",
    "Walk",
    "classifier_layers",
    "clip_percentile",
    "confused_pairs",
    "explain",
    "explain_noise_tunnel",
    "explain_together",
    "deconv_relu",
    "guided_relu",
    "interpolate",
    "layer_attribution",
    "magnitude",
    "maximize",
    "neuron_attribution",
    "normalize",
    "normalize_signed",
    "overlay",
    "parse_methods",
    "pgd",
    "smallest_budget",
    "success_rate",
    "walk",
    *METHODS,
]


def __getattr__(name: str):
    """Every registered method's function by its name (``mnistxai.xai.saliency``)."""
    if name in METHODS:
        return METHODS[name].fn
    raise AttributeError(f"module 'mnistxai.xai' has no attribute {name!r}")
