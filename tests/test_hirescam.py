"""HiResCAM against its definition on the CNN and its known answer on a GAP + linear head."""

import jax
import numpy as np

from mnistxai import xai
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def test_hirescam_equals_gradcam_on_a_gap_linear_head():
    _, features, head = tiny_fns(tiny_params())  # head: GAP then a linear map
    x = tiny_images(3)
    hires = xai.hirescam(features, head, x)
    np.testing.assert_allclose(
        hires.attributions, xai.gradcam(features, head, x).attributions, rtol=1e-5, atol=1e-6
    )


def test_hirescam_is_relu_of_gradient_times_activations(random_classifier, mnist_dir):
    from mnistxai import data

    x = data.to_model_input(data.load("mnist", "test", mnist_dir)[0][:2])
    res = xai.explain("hirescam", random_classifier, x, layer="conv3")
    for i in range(2):
        a = random_classifier.features(x[i : i + 1], "conv3")[0]
        t = int(res.targets[i])
        g = jax.grad(lambda v: random_classifier.head(v[None], "conv3")[0, t])(a)
        cam = np.maximum(np.asarray((g * a).sum(-1)), 0)
        expected = jax.image.resize(cam, (28, 28), "bilinear")
        np.testing.assert_allclose(
            res.attributions[i], expected, rtol=1e-4, atol=1e-6 * float(np.abs(expected).max())
        )
