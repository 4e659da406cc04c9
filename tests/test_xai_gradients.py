"""Gradient-family attributions: saliency, grad x input, SmoothGrad family, guided backprop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def test_saliency_matches_central_differences():
    with jax.enable_x64(True):
        logits_fn = tiny_fns(tiny_params(dtype=jnp.float64), act=jnp.tanh)[0]
        x = tiny_images(2, dtype=np.float64)
        targets = jnp.array([0, 2])
        grad = xai.saliency(logits_fn, x, targets, signed=True).attributions
        assert grad.dtype == jnp.float64
        h = 1e-6
        rng = np.random.default_rng(0)
        for b in range(2):
            for i, j in rng.integers(0, 8, size=(6, 2)):
                e = jnp.zeros_like(x).at[b, i, j, 0].set(h)
                fd = (logits_fn(x + e)[b, targets[b]] - logits_fn(x - e)[b, targets[b]]) / (2 * h)
                np.testing.assert_allclose(grad[b, i, j], fd, rtol=1e-6, atol=1e-9)
        unsigned = xai.saliency(logits_fn, x, targets).attributions
        np.testing.assert_allclose(unsigned, jnp.abs(grad))


def test_grad_x_input_is_gradient_times_input():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(3)
    g = xai.saliency(logits_fn, x, signed=True)
    gx = xai.grad_x_input(logits_fn, x)
    np.testing.assert_array_equal(g.targets, gx.targets)
    np.testing.assert_allclose(gx.attributions, g.attributions * x[..., 0], rtol=1e-6)


def test_none_targets_mean_predicted_class():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(4)
    res = xai.saliency(logits_fn, x)
    np.testing.assert_array_equal(res.targets, jnp.argmax(logits_fn(x), -1))


def test_zero_noise_smoothgrad_equals_saliency():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(2)
    key = jax.random.key(0)
    sal = jax.jit(lambda x: xai.saliency(logits_fn, x, signed=True).attributions)(x)
    noiseless = jax.jit(
        lambda x: (
            xai.smoothgrad(logits_fn, x, key=key, samples=3, noise=0.0, signed=True).attributions,
            xai.smoothgrad_sq(logits_fn, x, key=key, samples=3, noise=0.0).attributions,
            xai.vargrad(logits_fn, x, key=key, samples=3, noise=0.0).attributions,
        )
    )
    sg, sq, var = noiseless(x)
    np.testing.assert_allclose(sg, sal, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sq, sal**2, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(
        var, 0.0, atol=1e-6 * float((sal**2).max())
    )  # E[g^2]-E[g]^2 rounding


def test_smoothgrad_via_explain_is_noisy_saliency(random_classifier):
    x = np.asarray(tiny_images(2, size=28))
    sal = xai.explain("saliency", random_classifier, x).attributions
    sg = xai.explain("smoothgrad", random_classifier, x, key=jax.random.key(0), samples=2)
    assert sg.attributions.shape == sal.shape and not np.allclose(sg.attributions, sal)


def test_smoothgrad_does_not_depend_on_chunking_but_on_key():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(2)
    k = jax.random.key(3)
    run = jax.jit(
        lambda key, chunk: (
            xai.smoothgrad(
                logits_fn, x, key=key, samples=7, noise=0.2, chunk_size=chunk
            ).attributions
        ),
        static_argnums=1,
    )
    a = run(k, 256)
    # 3 per pass: scan of 2 + rest 1; sums in another order round differently
    np.testing.assert_allclose(run(k, 6), a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))
    assert not np.allclose(run(jax.random.key(4), 256), a)


def test_noise_tunnel_equals_each_method_with_the_same_key(random_classifier):
    x = np.asarray(tiny_images(3, size=28))
    key = jax.random.key(5)
    together = xai.explain_noise_tunnel(
        ("vargrad", "smoothgrad", "smoothgrad_sq"),
        random_classifier,
        x,
        key=key,
        samples=4,
        signed=True,
    )
    assert list(together) == ["vargrad", "smoothgrad", "smoothgrad_sq"]
    for kind, result in together.items():
        alone = xai.explain(
            kind,
            random_classifier,
            x,
            key=key,
            samples=4,
            **({"signed": True} if kind == "smoothgrad" else {}),
        )
        np.testing.assert_allclose(
            result.attributions, alone.attributions, rtol=1e-5, atol=1e-7, err_msg=kind
        )
        np.testing.assert_array_equal(result.targets, alone.targets)
    assert np.asarray(together["smoothgrad"].attributions).min() < 0  # signed reached smoothgrad
    with pytest.raises(ValueError, match="kinds must be"):
        xai.explain_noise_tunnel(("smoothgrad", "saliency"), random_classifier, x, key=key)
    with pytest.raises(ValueError, match="stochastic"):
        xai.explain_noise_tunnel(("vargrad",), random_classifier, x)
    with pytest.raises(ValueError, match="signed is not an option of any of vargrad"):
        xai.explain_noise_tunnel(("vargrad",), random_classifier, x, key=key, signed=True)


def test_guided_relu_passes_only_positive_gradients_at_positive_inputs():
    z = jnp.array([-1.0, -1.0, 2.0, 2.0, 0.0])
    g = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0])
    out, vjp = jax.vjp(xai.guided_relu, z)
    np.testing.assert_array_equal(out, jax.nn.relu(z))
    np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 1.0, 0.0, 0.0])


def test_guided_backprop_in_network_sends_no_negative_gradient_through_relus(random_classifier):
    seen = []

    @jax.custom_vjp
    def tap(z):  # identity whose backward records the gradient arriving at the ReLU's input
        return z

    tap.defvjp(
        lambda z: (z, None),
        lambda _, g: (jax.debug.callback(lambda v: seen.append(np.asarray(v)), g), (g,))[1],
    )
    clf = random_classifier.with_activation(lambda z: xai.guided_relu(tap(z)))
    x = jnp.asarray(tiny_images(2, size=28))
    gb = jax.jit(lambda x: xai.guided_backprop(clf.logits, x).attributions)(x)
    jax.effects_barrier()
    assert len(seen) == 7 * 2  # six convs and the dense layer, once per example under vmap
    assert all((s >= 0).all() for s in seen)
    plain = jax.jit(lambda x: xai.saliency(random_classifier.logits, x, signed=True))(
        x
    ).attributions
    assert not np.allclose(gb, plain, rtol=0.1)
    via_explain = xai.explain("guided_backprop", random_classifier, np.asarray(x)).attributions
    assert np.abs(via_explain - gb).max() <= 1e-6 * np.abs(gb).max()
