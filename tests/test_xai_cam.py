"""CAM family: Grad-CAM (analytic CAM check), Score-CAM (naive loop), the others."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import xai
from mnistxai.xai._core import minmax, resize_maps
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def test_gradcam_on_gap_linear_head_is_analytic_cam():
    p = tiny_params()
    _, features, head = tiny_fns(p)
    x = tiny_images(3)
    t = jnp.array([0, 1, 2])
    a = features(x)  # (3, 4, 4, 6)
    cam = jnp.einsum("bhwk,kb->bhw", a, p["w"][:, t]) / (4 * 4)  # Zhou et al.'s CAM / (h*w)
    expected = resize_maps(jax.nn.relu(cam), (8, 8))
    np.testing.assert_allclose(
        xai.gradcam(features, head, x, t).attributions, expected, rtol=1e-5, atol=1e-7
    )
    # LayerCAM with elementwise weights ReLU(w_k)/(hw) on the same head
    layer = jnp.einsum("bhwk,kb->bhw", a, jax.nn.relu(p["w"][:, t])) / 16
    np.testing.assert_allclose(
        xai.layercam(features, head, x, t).attributions,
        resize_maps(jax.nn.relu(layer), (8, 8)),
        rtol=1e-5,
        atol=1e-7,
    )


def test_scorecam_equals_naive_channel_loop():
    logits_fn, features, head = tiny_fns(tiny_params())
    x = tiny_images(2)
    res = jax.jit(lambda x: xai.scorecam(features, head, x, chunk_size=6))(x)  # 3 channels a pass
    for b in range(2):
        a = features(x[b : b + 1])[0]
        t = int(jnp.argmax(logits_fn(x[b : b + 1])[0]))
        scores = []
        for k in range(a.shape[-1]):
            up = jax.image.resize(a[..., k], (8, 8), "bilinear")
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else jnp.zeros_like(up)
            scores.append(logits_fn(x[b : b + 1] * mask[None, :, :, None])[0, t])
        w = jax.nn.softmax(jnp.array(scores))
        cam = jax.image.resize(jax.nn.relu((a * w).sum(-1)), (8, 8), "bilinear")
        np.testing.assert_allclose(res.attributions[b], cam, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(res.extras["channel_weights"][b], w, rtol=1e-5)


def test_gradcam_pp_formula():
    _, features, head = tiny_fns(tiny_params())
    x = tiny_images(1)
    a = features(x)[0]
    t = jnp.array([1])
    g = jax.grad(lambda v: head(v[None])[0, 1])(a)
    alpha = g**2 / (2 * g**2 + a.sum((0, 1)) * g**3)
    w = (jnp.nan_to_num(alpha) * jax.nn.relu(g)).sum((0, 1))
    expected = resize_maps(jax.nn.relu(a @ w), (8, 8))
    np.testing.assert_allclose(
        xai.gradcam_pp(features, head, x, t).attributions[0], expected, rtol=1e-5, atol=1e-7
    )


def test_cam_methods_on_cnn_layers(random_classifier):
    x = np.asarray(tiny_images(2, size=28))
    g3 = xai.explain("gradcam", random_classifier, x)
    g4 = xai.explain("gradcam", random_classifier, x, layer="conv4")
    for r in (g3, g4):
        assert r.attributions.shape == (2, 28, 28) and (r.attributions >= 0).all()
    assert not np.allclose(g3.attributions, g4.attributions)
    gg = xai.explain("guided_gradcam", random_classifier, x)
    gb = xai.explain("guided_backprop", random_classifier, x)
    np.testing.assert_allclose(
        gg.attributions, gb.attributions * minmax(g3.attributions), rtol=1e-4, atol=1e-9
    )
