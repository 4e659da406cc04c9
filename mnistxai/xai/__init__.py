"""Explainable-AI methods for the MNIST CNN, as jit-compiled, batched pure JAX functions.

``explain(method, classifier, images)`` is the entry point for attributions; ``METHODS`` lists the
names. Each family is also importable as plain functions of model callables (``gradients``,
``paths``, ``cam``, ``perturbation``, ``relevance``) for use with other models, and ``postprocess``
turns maps into pictures. Synthesis: ``activation_max`` (``maximize``: pixel AM and DGN-AM),
``latent_walk`` (``walk``: VAE walks with the decision flip) and ``counterfactual`` (``pgd``,
``smallest_budget``). Quantitative evaluation lives in ``metrics``.
"""

from mnistxai.xai._core import Explanation
from mnistxai.xai.activation_max import AMResult, NO_REGULARIZERS, Regularizers, maximize, success_rate
from mnistxai.xai.api import METHODS, Method, explain, explain_noise_tunnel, parse_methods
from mnistxai.xai.cam import gradcam, gradcam_pp, guided_gradcam, layercam, scorecam
from mnistxai.xai.compat import GradCAM, SaliencyMap
from mnistxai.xai.counterfactual import Counterfactual, pgd, smallest_budget
from mnistxai.xai.gradients import (grad_x_input, guided_backprop, guided_relu, noise_tunnel,
                                    saliency, smoothgrad, smoothgrad_sq, vargrad)
from mnistxai.xai.latent_walk import Walk, confused_pairs, interpolate, walk
from mnistxai.xai.paths import expected_gradients, integrated_gradients
from mnistxai.xai.relevance import Layer, classifier_layers, lrp
from mnistxai.xai.perturbation import occlusion, rise
from mnistxai.xai.postprocess import (clip_percentile, magnitude, normalize, normalize_signed,
                                      overlay)

__all__ = [
    "AMResult", "Counterfactual", "METHODS", "Explanation", "GradCAM", "Layer", "Method",
    "NO_REGULARIZERS", "Regularizers", "SaliencyMap", "Walk", "classifier_layers",
    "clip_percentile", "confused_pairs", "expected_gradients", "explain", "explain_noise_tunnel",
    "grad_x_input", "gradcam", "gradcam_pp", "guided_backprop", "guided_gradcam", "guided_relu",
    "integrated_gradients", "interpolate", "layercam", "lrp", "magnitude", "maximize",
    "noise_tunnel", "normalize", "normalize_signed", "occlusion", "overlay", "parse_methods", "pgd",
    "rise", "saliency", "scorecam", "smallest_budget", "smoothgrad", "smoothgrad_sq",
    "success_rate", "vargrad", "walk",
]
