"""Counterfactuals by targeted PGD: inside the budget, in [0, 1], and the reported budget is the
smallest."""

import jax.numpy as jnp
import numpy as np
import pytest

from generative_fixtures import mnist_test_images, small_vae
from generative_fixtures import small_classifier as trained_small_classifier
from mnistxai.xai.synthesis import counterfactual as cf


@pytest.fixture(scope="module")
def small_classifier(mnist_dir):
    return trained_small_classifier(str(mnist_dir))


@pytest.fixture(scope="module")
def images(mnist_dir):
    return mnist_test_images(str(mnist_dir))[0][:4]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pixel_pgd_stays_inside_its_budget(small_classifier, images, norm):
    budgets = (0.01, 0.05, 0.3) if norm == "linf" else (0.1, 0.5, 3.0)
    out = cf.smallest_budget(
        small_classifier, images, targets=3, budgets=budgets, norm=norm, steps=15
    )
    adv, _, _ = cf._attack(
        small_classifier,
        None,
        jnp.asarray(images),
        out.targets,
        out.budgets,
        space="pixels",
        norm=norm,
        steps=15,
        step_size=0.1,
    )
    delta = np.asarray(adv) - images[:, None]
    size = (
        np.abs(delta).max(axis=(2, 3, 4))
        if norm == "linf"
        else np.sqrt((delta**2).sum(axis=(2, 3, 4)))
    )
    assert np.all(size <= np.asarray(budgets)[None] * (1 + 1e-5))
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert np.all(
        np.asarray(out.distance)
        <= np.where(np.isfinite(out.budget), out.budget, budgets[-1]) * (1 + 1e-5)
    )


def test_smallest_budget_is_the_first_success(small_classifier, images):
    out = cf.smallest_budget(
        small_classifier, images, targets=None, budgets=(0.001, 0.05, 0.2, 0.5), steps=20
    )
    success = np.asarray(out.success)
    assert bool(out.flipped.all()), (
        success
    )  # an L-inf budget of 0.5 flips any digit to its runner-up
    first = success.argmax(1)
    np.testing.assert_allclose(out.budget, np.asarray(out.budgets)[first])
    np.testing.assert_array_equal(np.argmax(small_classifier.logits(out.images), -1), out.targets)
    logits = np.asarray(small_classifier.logits(jnp.asarray(images)))
    np.testing.assert_array_equal(
        out.targets, np.argsort(logits, -1)[:, -2]
    )  # default: the runner-up class


def test_latent_pgd_stays_inside_its_budget(small_classifier, images, mnist_dir):
    vae = small_vae(str(mnist_dir))
    out = cf.smallest_budget(
        small_classifier,
        images,
        targets=[1, 2, 3, 4],
        budgets=(0.5, 2.0),
        space="latent",
        norm="l2",
        vae=vae,
        steps=10,
    )
    adv, dist, _ = cf._attack(
        small_classifier,
        vae,
        jnp.asarray(images),
        out.targets,
        out.budgets,
        space="latent",
        norm="l2",
        steps=10,
        step_size=0.1,
    )
    assert np.all(np.asarray(dist) <= np.array([0.5, 2.0])[None] * (1 + 1e-5))
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    one = cf.pgd(
        small_classifier, images[:1], 1, eps=0.5, space="latent", norm="l2", vae=vae, steps=10
    )
    np.testing.assert_allclose(one[0], adv[0, 0], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(norm="l1"), "unknown norm"),
        (dict(space="latent"), "needs vae"),
        (dict(budgets=(0.2, 0.1)), "increasing"),
        (dict(targets=11), "targets must lie"),
        (dict(steps=0), "steps must be"),
    ],
)
def test_bad_counterfactual_arguments(small_classifier, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cf.smallest_budget(small_classifier, images, **kwargs)
