"""Integrated Gradients and Expected Gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.xai._core import blur
from mnistxai.xai.methods.integrated_gradients import RULES
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def linear_model(seed=0):
    w = jnp.asarray(np.random.default_rng(seed).normal(size=(64, 3)), jnp.float32)
    return lambda x: x.reshape(x.shape[0], -1) @ w + 1.0, w


@pytest.mark.parametrize("rule", RULES)
def test_ig_on_linear_model_is_input_minus_baseline_times_weight(rule):
    logits_fn, w = linear_model()
    x = tiny_images(2)
    base = jnp.full_like(x, 0.3)
    res = xai.integrated_gradients(
        logits_fn, x, jnp.array([1, 2]), baseline=base, steps=3, rule=rule
    )
    expected = (x - base)[..., 0] * w[:, jnp.array([1, 2])].T.reshape(2, 8, 8)
    np.testing.assert_allclose(res.attributions, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.extras["convergence_delta"], 0.0, atol=1e-5)


def test_ig_completeness_on_cnn_at_128_steps(random_classifier):
    x = np.asarray(tiny_images(2, size=28))
    res = xai.explain("integrated_gradients", random_classifier, x, steps=128)
    logits = random_classifier.logits(jnp.asarray(x))
    gap = (
        logits[jnp.arange(2), res.targets]
        - random_classifier.logits(jnp.zeros_like(x))[jnp.arange(2), res.targets]
    )
    np.testing.assert_allclose(
        res.attributions.sum((1, 2)) - gap, res.extras["convergence_delta"], atol=1e-6
    )
    assert (np.abs(res.extras["convergence_delta"]) < 0.01 * np.abs(gap)).all()


def test_gauss_legendre_converges_faster_than_left_riemann():
    with jax.enable_x64(True):
        logits_fn = tiny_fns(tiny_params(dtype=jnp.float64), act=jnp.tanh)[0]
        x = tiny_images(2, dtype=np.float64)
        err = {}
        for rule in ("left", "gauss_legendre"):
            run = jax.jit(
                functools.partial(xai.integrated_gradients, logits_fn, rule=rule, steps=8)
            )
            err[rule] = np.abs(run(x, jnp.array([0, 1])).extras["convergence_delta"])
        assert (err["gauss_legendre"] < err["left"] / 100).all(), err


def test_expected_gradients_with_one_baseline_and_fixed_grid_is_ig():
    logits_fn = tiny_fns(tiny_params(), act=jnp.tanh)[0]
    x = tiny_images(2)
    base = tiny_images(1, seed=5) * 0.5
    steps = 6
    ig = jax.jit(
        lambda x: xai.integrated_gradients(logits_fn, x, baseline=base, steps=steps, rule="left")
    )(x)
    eg = jax.jit(
        lambda x: xai.expected_gradients(
            logits_fn,
            x,
            background=base,
            key=jax.random.key(0),
            samples=steps,
            alphas=jnp.arange(steps) / steps,
            chunk_size=8,
        )
    )(x)
    np.testing.assert_array_equal(eg.targets, ig.targets)
    np.testing.assert_allclose(eg.attributions, ig.attributions, rtol=1e-4, atol=1e-7)


def test_expected_gradients_is_random_but_reproducible(random_classifier):
    x = np.asarray(tiny_images(2, size=28))
    bg = np.asarray(tiny_images(5, size=28, seed=9))
    run = lambda seed: (
        xai.explain(
            "expected_gradients",
            random_classifier,
            x,
            background=bg,
            key=jax.random.key(seed),
            samples=4,
            noise=0.1,
        ).attributions
    )
    a = run(0)
    np.testing.assert_array_equal(run(0), a)
    assert not np.allclose(run(1), a)


def test_named_baselines():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(2)
    ig = lambda x, b, key: jax.jit(
        lambda x: xai.integrated_gradients(
            logits_fn, x, jnp.array([0, 1]), baseline=b, steps=4, key=key
        )
    )(x)
    white = ig(x, "white", None)
    explicit = ig(x, jnp.ones((8, 8, 1)), None)
    np.testing.assert_allclose(white.attributions, explicit.attributions, rtol=1e-5, atol=1e-9)
    noisy = ig(x, "uniform", jax.random.key(0))
    assert np.isfinite(noisy.attributions).all() and not np.allclose(
        noisy.attributions, white.attributions
    )
    flat = jnp.full((1, 28, 28, 1), 0.4)
    np.testing.assert_allclose(blur(flat, 3.0), flat, rtol=1e-6)  # renormalised at the borders
