"""DeepLIFT and DeepLIFT-SHAP: known answers on hand-built models, a naive reference on real
digits, and their reduction to each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.data import load, to_model_input
from mnistxai.models.spec import Folded
from mnistxai.xai.methods.integrated_gradients import make_baseline
from mnistxai.xai.methods.lrp import forward

EPS = 1e-10


def conv(a, w):
    return jax.lax.conv_general_dilated(
        a, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def tiny_layers(seed=0, dtype=np.float64):
    """conv relu maxpool conv relu gap dense, with biases: references differ from zero."""
    r = np.random.default_rng(seed)
    arr = lambda *shape, s=1.0: jnp.asarray(r.normal(size=shape) * s, dtype)
    return [
        Folded("conv", arr(3, 3, 1, 4), arr(4, s=0.3)),
        Folded("relu"),
        Folded("maxpool"),
        Folded("conv", arr(3, 3, 4, 5, s=0.4), arr(5, s=0.3)),
        Folded("relu"),
        Folded("gap"),
        Folded("dense", arr(5, 3), arr(3, s=0.1)),
    ]


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return np.asarray(to_model_input(load("mnist", "test", data_dir=mnist_dir)[0][:6]), np.float64)


def naive_deeplift(layers, x, x0, t):
    """DeepLIFT written out layer by layer in NumPy for one example: linear layers by their
    transposes (jax.vjp of the plain layer), ReLU multipliers elementwise, and Captum's max-pool
    rule window by window in Python loops (tied maxima share evenly)."""
    zs, z0s = forward(layers, x[None]), forward(layers, x0[None])
    g = np.zeros(zs[-1].shape[-1])
    g[t] = 1.0
    g = g[None]
    for i in reversed(range(len(layers))):
        layer, z, z0 = layers[i], np.asarray(zs[i]), np.asarray(z0s[i])
        if layer.kind == "relu":
            dz = z - z0
            m = np.where(
                np.abs(dz) < EPS,
                z > 0,
                (np.maximum(z, 0) - np.maximum(z0, 0)) / np.where(np.abs(dz) < EPS, 1, dz),
            )
            g = g * m
        elif layer.kind == "maxpool":
            new = np.zeros_like(z)
            for b, r, c, ch in np.ndindex(g.shape):
                win, win0 = (
                    z[b, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2, ch],
                    z0[b, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2, ch],
                )
                y, y0 = win.max(), win0.max()
                top = max(y, y0)
                routed, plain = np.zeros((2, 2)), np.zeros((2, 2))
                routed[win == y] += g[b, r, c, ch] * (top - y0) / (win == y).sum()
                routed[win0 == y0] += g[b, r, c, ch] * (y - top) / (win0 == y0).sum()
                plain[win == y] = g[b, r, c, ch] / (win == y).sum()
                dz = win - win0
                new[b, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2, ch] = np.where(
                    np.abs(dz) < EPS, plain, routed / np.where(np.abs(dz) < EPS, 1, dz)
                )
            g = new
        else:
            fn = {
                "conv": lambda a: conv(a, layer.kernel) + layer.bias,
                "dense": lambda a: a @ layer.kernel + layer.bias,
                "gap": lambda a: a.mean((1, 2)),
            }[layer.kind]
            g = np.asarray(jax.vjp(fn, jnp.asarray(z))[1](jnp.asarray(g))[0])
    return ((x - x0) * g[0]).sum(-1)


def test_deeplift_equals_a_naive_layer_by_layer_reference_on_real_digits(digits):
    """Black and blurred references on real digits: the black background ties the first pool's
    windows and leaves dead ReLUs, where a wrong max-pool or ReLU rule would show."""
    with jax.enable_x64(True):
        layers = tiny_layers()
        x = jnp.asarray(digits)
        for baseline in ("black", "blurred"):
            res = xai.deeplift(layers, x, baseline=baseline)
            b = np.asarray(make_baseline(baseline, x, None, 4.0))
            for i in range(len(digits)):
                t = int(res.targets[i])
                expected = naive_deeplift(layers, digits[i], b[i], t)
                np.testing.assert_allclose(res.attributions[i], expected, rtol=1e-10, atol=1e-12)
            assert np.abs(np.asarray(res.extras["convergence_delta"])).max() < 1e-10


def test_deeplift_is_gradient_times_difference_on_a_linear_model(digits):
    r = np.random.default_rng(3)
    with jax.enable_x64(True):
        layers = [
            Folded("conv", jnp.asarray(r.normal(size=(3, 3, 1, 2))), jnp.asarray(r.normal(size=2))),
            Folded("gap"),
            Folded("dense", jnp.asarray(r.normal(size=(2, 4))), jnp.zeros(4)),
        ]
        x = jnp.asarray(digits)
        b = jnp.full_like(x, 0.3)
        res = xai.deeplift(layers, x, jnp.full(len(x), 2), baseline=np.full((1, 28, 28, 1), 0.3))
        g = jax.vmap(jax.grad(lambda v: forward(layers, v[None])[-1][0, 2]))(x)
        np.testing.assert_allclose(res.attributions, ((x - b) * g).sum(-1), rtol=1e-10, atol=1e-14)


def test_deeplift_shap_with_one_reference_is_deeplift_and_averages_over_several(digits):
    with jax.enable_x64(True):
        layers = tiny_layers(seed=1)
        x, refs = jnp.asarray(digits[:3]), digits[3:]
        t = jnp.array([0, 1, 2])
        one = xai.deeplift_shap(layers, x, t, background=jnp.asarray(refs[:1]))
        np.testing.assert_allclose(
            one.attributions, xai.deeplift(layers, x, t, baseline=refs[:1]).attributions, rtol=1e-12
        )
        many = xai.deeplift_shap(layers, x, t, background=jnp.asarray(refs), chunk_size=2)
        each = [xai.deeplift(layers, x, t, baseline=refs[i : i + 1]).attributions for i in range(3)]
        np.testing.assert_allclose(many.attributions, sum(each) / 3, rtol=1e-10, atol=1e-14)
