"""A tiny conv net (conv-relu-pool-conv-relu-GAP-linear) the XAI tests check methods against.

Small enough that naive Python loops over windows, masks and channels stay fast.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai import Layer


def conv(x, k):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def tiny_params(seed=0, dtype=jnp.float32, bias=False):
    r = np.random.default_rng(seed)
    p = {
        "k1": r.normal(size=(3, 3, 1, 4)),
        "k2": r.normal(size=(3, 3, 4, 6)) / 3,
        "w": r.normal(size=(6, 3)),
        "b1": r.normal(size=4) * bias,
        "b2": r.normal(size=6) * bias,
    }
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}


def tiny_fns(p, act=jax.nn.relu):
    """(logits_fn, features_fn, head_fn) of the tiny net; features are (B, H/2, W/2, 6)."""

    def features(x):
        a = act(conv(x, p["k1"]) + p["b1"])
        b, h, w, c = a.shape
        a = a.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        return act(conv(a, p["k2"]) + p["b2"])

    def head(a):
        return a.mean((1, 2)) @ p["w"]

    return (lambda x: head(features(x))), features, head


def tiny_layers(p):
    return [
        Layer("conv", p["k1"], p["b1"]),
        Layer("relu"),
        Layer("maxpool"),
        Layer("conv", p["k2"], p["b2"]),
        Layer("relu"),
        Layer("gap"),
        Layer("dense", p["w"], jnp.zeros(3, p["w"].dtype)),
    ]


def tiny_images(n=2, size=8, seed=1, dtype=np.float32):
    """(n, size, size, 1) in [0, 1] with a black border, like a digit."""
    x = np.random.default_rng(seed).uniform(size=(n, size, size, 1)).astype(dtype)
    x[:, :2] = 0
    x[:, :, -1] = 0
    return jnp.asarray(x)


def test_tiny_layers_match_functions():
    p = tiny_params(bias=True)
    x = tiny_images()
    from mnistxai.xai.methods.lrp import forward

    np.testing.assert_allclose(forward(tiny_layers(p), x)[-1], tiny_fns(p)[0](x), rtol=1e-5)
