"""LRP: conservation, BatchNorm folding, relation to gradient x input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.xai.methods.lrp import classifier_layers, forward
from test_xai_tiny import tiny_fns, tiny_images, tiny_layers, tiny_params


@pytest.mark.parametrize(
    "opts",
    [
        dict(rule="epsilon", input_rule="same"),
        dict(rule="epsilon"),
        dict(rule="alpha_beta", alpha=2.0, beta=1.0),
        dict(rule="gamma", gamma=0.5),
    ],
)
def test_lrp_conserves_relevance_on_bias_free_relu_net(opts):
    layers = tiny_layers(tiny_params(bias=False))
    x = tiny_images(3)
    res = jax.jit(lambda x: xai.lrp(layers, x, epsilon=1e-9, **opts))(x)
    total = res.attributions.sum((1, 2))
    np.testing.assert_allclose(total, res.extras["logit"], rtol=1e-4)
    assert not np.allclose(res.attributions, 0)


def test_lrp_epsilon_zero_is_gradient_times_input_on_relu_net():
    p = tiny_params(bias=True)
    x = tiny_images(2)
    lrp = xai.lrp(tiny_layers(p), x, epsilon=0.0, input_rule="same")
    gx = xai.grad_x_input(tiny_fns(p)[0], x, lrp.targets)
    np.testing.assert_allclose(lrp.attributions, gx.attributions, rtol=1e-3, atol=1e-6)


def test_folded_layers_reproduce_classifier(random_classifier):
    # perturb the BatchNorm statistics so that folding them matters
    clf = random_classifier.replace(
        variables=jax.tree_util.tree_map(lambda v: v * 1.3 + 0.05, random_classifier.variables)
    )
    x = jnp.asarray(tiny_images(2, size=28))
    np.testing.assert_allclose(
        forward(classifier_layers(clf), x)[-1], clf.logits(x), rtol=1e-4, atol=1e-5
    )
    res = xai.explain("lrp", clf, np.asarray(x), rule="alpha_beta")
    assert res.attributions.shape == (2, 28, 28) and np.isfinite(res.attributions).all()
