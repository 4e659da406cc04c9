"""Activation maximization: raises its objective, respects bounds and regularizers, batches
exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from generative_fixtures import mnist_test_images
from generative_fixtures import small_classifier as trained_small_classifier
from mnistxai.models.gan import Discriminator, Generator, GeneratorModel, init_gan
from mnistxai.xai.synthesis import activation_max as am


@pytest.fixture(scope="module")
def small_classifier(mnist_dir):
    """A narrow CNN trained briefly: the same code path as the real one, a fraction of the cost."""
    return trained_small_classifier(str(mnist_dir))


REG = am.Regularizers(l2=1e-3)  # the defaults but a lighter L2: the small CNN's logits are small


@pytest.fixture(scope="module")
def logit_run(small_classifier):
    return am.maximize(
        small_classifier, "logit", key=jax.random.key(1), starts=2, steps=30, regularizers=REG
    )


def test_raises_the_objective_and_stays_in_bounds(logit_run):
    r = logit_run
    assert r.images.shape == (10, 2, 28, 28, 1) and r.trajectory.shape == (10, 2, 30)
    gain = np.asarray(r.final - r.initial)
    assert np.all(gain > 1.0) and gain.mean() > 5.0, gain  # every class and start, by logits
    assert float(r.images.min()) >= 0.0 and float(r.images.max()) <= 1.0
    assert (
        np.mean(
            np.asarray(r.trajectory[..., -5:]).mean(-1) > np.asarray(r.trajectory[..., :5]).mean(-1)
        )
        == 1.0
    )


def test_batched_over_ten_classes_equals_ten_single_runs(small_classifier, logit_run):
    for k in range(10):
        single = am.maximize(
            small_classifier,
            "logit",
            [k],
            key=jax.random.key(1),
            starts=2,
            steps=30,
            regularizers=REG,
        )
        np.testing.assert_allclose(single.images[0], logit_run.images[k], atol=1e-5)
        np.testing.assert_allclose(
            single.trajectory[0], logit_run.trajectory[k], rtol=1e-4, atol=1e-4
        )


def test_zero_weight_regularizers_change_nothing(small_classifier):
    """With every regularizer off, AM is plain Adam ascent on the objective: compare with one
    written out."""
    zero = am.Regularizers(
        l2=0.0, tv=0.0, jitter=0, blur_every=0, clip=False, latent_l2=0.0, latent_clip=None
    )
    r = am.maximize(
        small_classifier,
        "probability",
        [3],
        key=jax.random.key(2),
        starts=1,
        steps=15,
        lr=0.05,
        regularizers=zero,
    )
    init_key = jax.random.split(jax.random.split(jax.random.key(2), 1)[0])[0]
    x = 0.1 * jax.random.uniform(init_key, (28, 28, 1))
    tx = optax.adam(0.05)
    state = tx.init(x)
    value = lambda a: jax.nn.softmax(small_classifier.logits(a[None]))[0, 3]  # noqa: E731
    step = jax.jit(lambda x, state: tx.update(jax.grad(lambda a: -value(a))(x), state, x))
    for _ in range(15):
        updates, state = step(x, state)
        x = optax.apply_updates(x, updates)
    np.testing.assert_allclose(r.images[0, 0], x, atol=1e-5)
    np.testing.assert_allclose(r.final[0, 0], value(x), rtol=1e-4)


def test_regularizers_do_what_they_say(small_classifier):
    common = dict(key=jax.random.key(3), starts=2, steps=25, lr=0.05)
    off = am.maximize(small_classifier, "logit", [0, 7], regularizers=am.NO_REGULARIZERS, **common)
    tv = am.maximize(
        small_classifier,
        "logit",
        [0, 7],
        regularizers=am.Regularizers(
            l2=0.0, tv=1.0, jitter=0, blur_every=0, clip=False, latent_l2=0.0, latent_clip=None
        ),
        **common,
    )
    l2 = am.maximize(
        small_classifier,
        "logit",
        [0, 7],
        regularizers=am.Regularizers(l2=1.0, jitter=0, blur_every=0, clip=False),
        **common,
    )
    blurred = am.maximize(
        small_classifier,
        "logit",
        [0, 7],
        regularizers=am.Regularizers(l2=0.0, jitter=0, blur_every=5, blur_sigma=1.0, clip=False),
        **common,
    )
    norm = lambda r: np.asarray(jnp.sum(r.images**2, axis=(2, 3, 4)))  # noqa: E731
    total_variation = lambda r: np.asarray(jax.vmap(jax.vmap(am.total_variation))(r.images))  # noqa: E731
    assert np.all(total_variation(tv) < total_variation(off))
    assert np.all(total_variation(blurred) < total_variation(off))
    assert np.all(norm(l2) < norm(off))
    assert (
        float(off.images.min()) < 0.0 or float(off.images.max()) > 1.0
    )  # only clipping keeps [0, 1]


@pytest.mark.parametrize("objective, layer", [("channel", "conv3"), ("unit", "dense")])
def test_channel_and_unit_objectives(small_classifier, mnist_dir, objective, layer):
    mean = lambda a: a.mean(axis=(0, 1, 2)) if objective == "channel" else a.mean(axis=0)  # noqa: E731
    typical = mean(small_classifier.features(mnist_test_images(str(mnist_dir))[0][:256], layer))
    noise = 0.1 * jax.random.uniform(
        jax.random.key(0), (16, 28, 28, 1)
    )  # like AM's starting images
    targets = [
        int(i) for i in np.argsort(np.asarray(mean(small_classifier.features(noise, layer))))[-2:]
    ]
    r = am.maximize(
        small_classifier,
        objective,
        targets,
        layer=layer,
        key=jax.random.key(4),
        starts=2,
        steps=20,
        regularizers=REG,
    )
    assert np.all(np.asarray(r.final) > np.asarray(r.initial))
    assert np.all(
        np.asarray(r.final) > np.asarray(typical)[targets][:, None]
    )  # beyond the average digit's
    a = small_classifier.features(r.images[0], layer)
    expected = a[..., targets[0]].mean(axis=(1, 2)) if objective == "channel" else a[:, targets[0]]
    np.testing.assert_allclose(r.final[0], expected, rtol=1e-4, atol=1e-5)


def test_dgn_am_stays_in_the_generator_range(small_classifier):
    module = Generator(latent_dim=8)
    generator = GeneratorModel(init_gan(module, Discriminator(), jax.random.key(5))[0], module)
    reg = am.Regularizers(l2=0.0, latent_l2=1e-3, latent_clip=1.5)
    r = am.maximize(
        small_classifier,
        "logit",
        [1, 4],
        key=jax.random.key(6),
        starts=3,
        steps=25,
        lr=0.1,
        parameterization="generator",
        decoder=generator,
        regularizers=reg,
    )
    assert r.params.shape == (2, 3, 8) and float(jnp.abs(r.params).max()) <= 1.5
    assert float(r.images.min()) >= 0.0 and float(r.images.max()) <= 1.0
    np.testing.assert_allclose(r.images, jax.vmap(generator.generate)(r.params), atol=1e-6)
    assert np.all(np.asarray(r.final) > np.asarray(r.initial))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(objective="entropy"), "unknown objective"),
        (dict(targets=[10]), r"targets must lie in \[0, 9\]"),
        (dict(parameterization="generator"), "needs decoder"),
        (dict(objective="channel", layer="dense"), "needs a conv layer"),
        (dict(steps=0), "steps must be"),
        (dict(regularizers=am.Regularizers(tv=-1.0)), "tv must be"),
    ],
)
def test_bad_arguments_fail_before_compiling(small_classifier, kwargs, message):
    with pytest.raises(ValueError, match=message):
        am.maximize(small_classifier, key=jax.random.key(0), **kwargs)
