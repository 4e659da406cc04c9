"""Latent walks: endpoints are the reconstructions, the flip bracket is tight and real, batching is
exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from generative_fixtures import mnist_test_images
from generative_fixtures import small_vae as trained_small_vae
from mnistxai.xai.synthesis import latent_walk as lw


@pytest.fixture(scope="module")
def images(mnist_dir):
    return mnist_test_images(str(mnist_dir))


@pytest.fixture(scope="module")
def small_vae(mnist_dir):
    return trained_small_vae(str(mnist_dir))


@struct.dataclass
class InkClassifier:
    """Class 1 when the mean intensity exceeds ``threshold``, else class 0: a known decision
    boundary."""

    threshold: jax.Array

    def logits(self, x):
        m = x.mean(axis=(1, 2, 3))
        return (
            jnp.stack([self.threshold - m, m - self.threshold] + [jnp.full_like(m, -1.0)] * 8, -1)
            * 100
        )


@pytest.fixture(scope="module")
def walk_setup(small_vae, images):
    """Pairs of test images and a classifier whose boundary lies between each pair's
    reconstructions."""
    x = images[0]
    ink = np.asarray(small_vae.reconstruct(jnp.asarray(x[:64]))).mean(axis=(1, 2, 3))
    order = np.argsort(ink)
    idx0, idx1 = order[:6], order[-6:][::-1]  # faintest vs boldest reconstructions
    classifier = InkClassifier(jnp.float32((ink[order[5]] + ink[order[-6]]) / 2))
    return x[idx0], x[idx1], classifier


@pytest.mark.parametrize("kind", ["linear", "spherical"])
def test_endpoints_are_the_reconstructions(small_vae, walk_setup, kind):
    x0, x1, classifier = walk_setup
    w = lw.walk(small_vae, classifier, x0, x1, steps=7, kind=kind)
    assert w.images.shape == (6, 7, 28, 28, 1) and w.cnn_probs.shape == w.latent_probs.shape == (
        6,
        7,
        10,
    )
    np.testing.assert_allclose(w.images[:, 0], small_vae.reconstruct(jnp.asarray(x0)), atol=1e-5)
    np.testing.assert_allclose(w.images[:, -1], small_vae.reconstruct(jnp.asarray(x1)), atol=1e-5)
    np.testing.assert_allclose(w.latent_probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind, tol", [("linear", 1e-3), ("spherical", 1e-4)])
def test_flip_bracket_is_within_tolerance_and_classes_differ(small_vae, walk_setup, kind, tol):
    x0, x1, classifier = walk_setup
    w = lw.walk(small_vae, classifier, x0, x1, steps=6, kind=kind, tol=tol)
    assert bool(w.flipped.all())
    assert np.all(np.asarray(w.t_hi - w.t_lo) <= tol) and np.all(
        np.asarray(w.t_lo) < np.asarray(w.t_hi)
    )
    lo = np.argmax(classifier.logits(w.image_lo), -1)
    hi = np.argmax(classifier.logits(w.image_hi), -1)
    assert np.all(lo == 0) and np.all(hi == 1) and np.all(np.asarray(w.class_hi) == 1)
    assert np.all(np.asarray(w.class_lo) == np.argmax(w.cnn_probs[:, 0], -1))
    ink = lambda a: np.asarray(a).mean(axis=(1, 2, 3))  # noqa: E731
    assert np.all(ink(w.contrast) > 0)  # crossing towards the bold digit adds ink


def test_batched_walks_equal_single_walks(small_vae, walk_setup):
    x0, x1, classifier = walk_setup
    batch = lw.walk(small_vae, classifier, x0, x1, steps=6, kind="spherical", by="latent")
    for i in range(len(x0)):
        one = lw.walk(small_vae, classifier, x0[i], x1[i], steps=6, kind="spherical", by="latent")
        for name in ("images", "cnn_probs", "latent_probs", "t_lo", "t_hi", "contrast", "class_hi"):
            np.testing.assert_allclose(
                getattr(one, name)[0], getattr(batch, name)[i], atol=1e-5, err_msg=name
            )


def test_interpolation_paths():
    z0, z1 = jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 3.0])
    for kind in lw.KINDS:
        np.testing.assert_allclose(lw.interpolate(z0, z1, 0.0, kind), z0, atol=1e-6)
        np.testing.assert_allclose(lw.interpolate(z0, z1, 1.0, kind), z1, atol=1e-6)
    mid = lw.interpolate(z0, z1, 0.5, "spherical")
    assert float(jnp.linalg.norm(mid)) == pytest.approx(
        3.0, rel=1e-5
    )  # the norm is kept, unlike linear
    np.testing.assert_allclose(
        lw.interpolate(z0, 2 * z0, 0.3, "spherical"), 1.3 * z0, rtol=1e-5
    )  # parallel
    np.testing.assert_allclose(
        lw.interpolate(z0, -z0, 0.25, "spherical"), 0.5 * z0, rtol=1e-5
    )  # antiparallel


def test_pairs_from_the_confusion_matrix():
    labels = np.array([4, 4, 4, 9, 9, 9, 7, 1, 1, 0, 7])
    preds = np.array([4, 9, 9, 9, 4, 9, 1, 1, 7, 0, 7])
    cm = lw.confusion_matrix(labels, preds)
    assert cm[4, 9] == 2 and cm[9, 4] == 1 and cm.sum() == 11
    pairs = lw.most_confused_classes(cm, 2)
    assert pairs == [(4, 9, 3), (1, 7, 2)]
    assert lw.most_confused_classes(cm, 10) == pairs  # only pairs with errors, never (a, a, 0)
    idx0, idx1 = lw.pairs_of_classes(labels, preds, pairs)
    assert idx0.tolist() == [0, 7] and idx1.tolist() == [3, 10]  # correctly classified members only
    with pytest.raises(ValueError, match="correctly classified"):
        lw.pairs_of_classes(labels, preds, [(0, 7)], per_pair=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="cubic"), "unknown kind"),
        (dict(steps=1), "steps must be"),
        (dict(tol=0.0), "tol must be"),
        (dict(by="svm"), "unknown by"),
    ],
)
def test_bad_walk_arguments(small_vae, walk_setup, kwargs, message):
    x0, x1, classifier = walk_setup
    with pytest.raises(ValueError, match=message):
        lw.walk(small_vae, classifier, x0, x1, **kwargs)
