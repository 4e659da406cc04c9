"""Thin classes with the seed code's interface, wrapping ``explain``.

Seed users kept the module and its variables apart; these classes rebuild a ``Classifier`` from
them and return NumPy, with maps min-max scaled to [0, 1] as the seed displayed them.
For a single image they return a (28, 28) map and Python scalars; for a batch, arrays.
"""

from __future__ import annotations

import jax
import numpy as np

from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN
from mnistxai.xai._inputs import as_images
from mnistxai.xai.api import explain
from mnistxai.xai.postprocess import normalize
from mnistxai.xai.views import conv_layer
from mnistxai.util.errors import InputError


def _unbatch(single, heat, cls, score):
    heat, cls, score = np.asarray(heat), np.asarray(cls), np.asarray(score)
    return (heat[0], int(cls[0]), float(score[0])) if single else (heat, cls, score)


class _Wrapper:
    def __init__(self, model: CNN):
        if not isinstance(model, CNN):
            raise InputError(f"model must be a mnistxai.models.cnn.CNN, got {type(model).__name__}")
        self.model = model

    def _explain(self, method, params, batch_stats, image, class_idx, **options):
        clf = Classifier({"params": params, "batch_stats": batch_stats}, self.model)
        single = np.ndim(image) == 2 or (
            np.ndim(image) == 3 and np.shape(image)[-1] == 1 and np.shape(image)[0] == 28
        )
        res = explain(method, clf, image, class_idx, **options)
        probs = jax.nn.softmax(clf.logits(as_images(image)))
        score = np.take_along_axis(np.asarray(probs), np.asarray(res.targets)[:, None], 1)[:, 0]
        return _unbatch(single, normalize(res.attributions), res.targets, score)


class GradCAM(_Wrapper):
    """``GradCAM(model, target_layer='conv3').compute_gradcam(params, batch_stats, image)``.

    Returns ``(heatmap in [0, 1] (28, 28), class explained, its softmax probability)``; the class is
    the prediction unless ``class_idx`` is given. Any conv layer or block alias works.
    """

    def __init__(self, model: CNN, target_layer: str = "conv3"):
        super().__init__(model)
        self.target_layer = conv_layer("target_layer", target_layer)

    def compute_gradcam(self, params, batch_stats, image, class_idx=None):
        return self._explain(
            "gradcam", params, batch_stats, image, class_idx, layer=self.target_layer
        )


class SaliencyMap(_Wrapper):
    """``SaliencyMap(model).compute_saliency(params, batch_stats, image)`` and
    ``.compute_smooth_saliency(..., n_samples=50)``, each ``(map in [0, 1], class, probability)``.

    Unlike ``explain`` (which insists on a key), SmoothGrad here defaults to the fixed
    ``jax.random.key(0)`` so seed code runs unchanged; pass ``key`` to vary it.
    """

    def compute_saliency(self, params, batch_stats, image, class_idx=None):
        return self._explain("saliency", params, batch_stats, image, class_idx)

    def compute_smooth_saliency(
        self, params, batch_stats, image, class_idx=None, n_samples=None, noise_level=None, key=None
    ):
        """SmoothGrad; ``n_samples`` and ``noise_level`` default to smoothgrad's registered
        ``samples`` and ``noise``."""
        key = jax.random.key(0) if key is None else key
        options = {
            k: v for k, v in (("samples", n_samples), ("noise", noise_level)) if v is not None
        }
        return self._explain(
            "smoothgrad", params, batch_stats, image, class_idx, key=key, **options
        )
