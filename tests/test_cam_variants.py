"""XGrad-CAM, Eigen-CAM, Eigen-Grad-CAM and Ablation-CAM: their defining properties on hand-built
models (the real-digit references are in test_real_digits.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import xai
from mnistxai.xai.methods.eigencam import first_component
from mnistxai.xai.methods.gradcam import layer_grads
from mnistxai.xai.methods.xgradcam import xgradcam_weights
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def test_xgradcam_weights_satisfy_the_conservation_axiom():
    """sum_ij sum_k w_k A_k = sum_k sum_ij dy/dA_k A_k (Fu et al. 2020, eq. 6), with one channel
    dead everywhere (weight 0, not a division by zero)."""
    _, features, head = tiny_fns(tiny_params(seed=2))
    dead = lambda x: features(x).at[..., 0].set(0.0)
    for i, xi in enumerate(tiny_images(3)):
        a, g, _ = layer_grads(dead, head, xi, jnp.int32(i % 3))
        w = xgradcam_weights(a, g)
        assert w[0] == 0
        np.testing.assert_allclose(jnp.einsum("hwk,k->", a, w), (g * a).sum(), rtol=1e-5)


def test_eigencam_is_class_agnostic_and_its_sign_follows_the_larger_extreme():
    _, features, head = tiny_fns(tiny_params())
    x = tiny_images(3)
    maps = [xai.eigencam(features, head, x, jnp.full(3, t)).attributions for t in range(3)]
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])
    m = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 6)))
    for sign in (1.0, -1.0):  # the component of -m is that of m up to sign: the same after the fix
        p = first_component(sign * m)
        assert abs(p.max()) >= abs(p.min())
    np.testing.assert_allclose(first_component(m), first_component(-m), atol=1e-6)


def test_eigengradcam_differs_from_eigencam_and_depends_on_the_target():
    _, features, head = tiny_fns(tiny_params())
    x = tiny_images(3)
    by_target = [xai.eigengradcam(features, head, x, jnp.full(3, t)).attributions for t in range(3)]
    assert not np.allclose(by_target[0], by_target[1])
    assert not np.allclose(by_target[0], xai.eigencam(features, head, x).attributions)


def test_ablationcam_weights_on_a_gap_linear_head_are_known():
    """With head(A) = mean_ij(A) @ W, zeroing channel k lowers the score by mean_ij(A_k) W_kt:
    w_k = mean_ij(A_k) W_kt / y."""
    p = tiny_params()
    _, features, head = tiny_fns(p)
    x = tiny_images(3)
    t = jnp.array([0, 1, 2])
    res = xai.ablationcam(features, head, x, t, chunk_size=5)  # groups and channel chunks
    a = features(x)
    y = (a.mean((1, 2)) @ p["w"])[jnp.arange(3), t]
    expected = a.mean((1, 2)) * p["w"][:, t].T / y[:, None]
    np.testing.assert_allclose(res.extras["channel_weights"], expected, rtol=1e-4, atol=1e-7)


def test_deconvnet_passes_positive_signals_through_off_units_and_guided_backprop_does_not():
    """y = W2[:, t] . relu(W1 x) with unit 0 off at x: the deconvnet map is W1^T relu(W2[:, t]),
    guided backprop's W1^T (relu(W2[:, t]) * 1[unit on])."""
    w1 = jnp.array([[-1.0, 0.5], [-1.0, 0.5], [-1.0, 0.5], [-1.0, 0.5]])  # (4 pixels, 2 units)
    w2 = jnp.array([[2.0, 1.0], [3.0, -1.0]])  # (2 units, 2 classes)
    x = jnp.full((1, 2, 2, 1), 0.5)

    def net(relu):
        return lambda v: relu(v.reshape(v.shape[0], 4) @ w1) @ w2

    deconv = xai.deconvnet(net(xai.deconv_relu), x, jnp.array([0])).attributions
    guided = xai.guided_backprop(net(xai.guided_relu), x, jnp.array([0])).attributions
    np.testing.assert_allclose(deconv.reshape(4), w1 @ jnp.array([2.0, 3.0]))
    np.testing.assert_allclose(guided.reshape(4), w1 @ jnp.array([0.0, 3.0]))
    # for class 1 unit 1's signal is negative: the deconvnet drops it though the unit is on
    deconv1 = xai.deconvnet(net(xai.deconv_relu), x, jnp.array([1])).attributions
    np.testing.assert_allclose(deconv1.reshape(4), w1 @ jnp.array([1.0, 0.0]))
    assert jax.grad(lambda v: net(jax.nn.relu)(v)[0, 1])(x).reshape(4)[0] == -0.5
