"""Explainable-AI methods for the MNIST CNN, as jit-compiled, batched pure JAX functions.

``explain(method, classifier, images)`` is the entry point; ``METHODS`` lists the names. Each
family is also importable as plain functions of model callables (``gradients``,
``paths``, ``cam``, ``perturbation``, ``relevance``) for use with other models, and
``postprocess`` turns maps into pictures.
"""

from mnistxai.xai._core import Explanation
from mnistxai.xai.api import METHODS, Method, explain
from mnistxai.xai.cam import gradcam, gradcam_pp, guided_gradcam, layercam, scorecam
from mnistxai.xai.compat import GradCAM, SaliencyMap
from mnistxai.xai.gradients import (grad_x_input, guided_backprop, guided_relu, saliency,
                                    smoothgrad, smoothgrad_sq, vargrad)
from mnistxai.xai.paths import expected_gradients, integrated_gradients
from mnistxai.xai.relevance import Layer, classifier_layers, lrp
from mnistxai.xai.perturbation import occlusion, rise
from mnistxai.xai.postprocess import (clip_percentile, magnitude, normalize, normalize_signed,
                                      overlay)

__all__ = [
    "METHODS", "Explanation", "GradCAM", "Layer", "Method", "SaliencyMap", "classifier_layers",
    "clip_percentile", "expected_gradients", "explain", "grad_x_input", "gradcam", "gradcam_pp",
    "guided_backprop", "guided_gradcam", "guided_relu", "integrated_gradients", "layercam", "lrp",
    "magnitude", "normalize", "normalize_signed", "occlusion", "overlay", "rise", "saliency",
    "scorecam", "smoothgrad", "smoothgrad_sq", "vargrad",
]
