"""The generator's code prior: fitting per-class Gaussians, sampling them, and using them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.models.gan import Discriminator, Generator, GeneratorModel, init_gan
from mnistxai.models.latent_prior import GaussianMixture, fit_class_gaussians, standard_normal
from mnistxai.training.generative import GANConfig


def _known_mixture(rng, k=3, d=4):
    means = rng.normal(scale=5, size=(k, d))
    tril = np.tril(rng.normal(size=(k, d, d)), -1) + np.eye(d) * rng.uniform(0.5, 1.5, (k, 1, d))
    return means, tril


def test_fit_recovers_each_class_mean_and_covariance():
    rng = np.random.default_rng(0)
    means, tril = _known_mixture(rng)
    labels = np.repeat(np.arange(3), 20_000)
    codes = means[labels] + np.einsum("nij,nj->ni", tril[labels], rng.normal(size=(len(labels), 4)))
    fit = fit_class_gaussians(codes, labels, 3, ridge=0.0)
    np.testing.assert_allclose(fit.means, means, atol=0.05)
    cov = np.einsum("kij,klj->kil", tril, tril)
    tril_fit = np.asarray(fit.scale_tril, np.float64)
    fitted = np.einsum("kij,klj->kil", tril_fit, tril_fit)
    np.testing.assert_allclose(fitted, cov, atol=0.1 * np.abs(cov).max())


def test_samples_follow_the_component_they_are_drawn_from():
    rng = np.random.default_rng(1)
    means, tril = _known_mixture(rng)
    prior = GaussianMixture(jnp.asarray(means, jnp.float32), jnp.asarray(tril, jnp.float32))
    z, comp = prior.sample(jax.random.key(0), 30_000, components=np.full(30_000, 2))
    assert (np.asarray(comp) == 2).all()
    np.testing.assert_allclose(np.mean(z, 0), means[2], atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(z), rowvar=False), tril[2] @ tril[2].T, atol=0.1)
    _, comp = prior.sample(jax.random.key(1), 30_000)  # uniform over components
    np.testing.assert_allclose(np.bincount(np.asarray(comp)) / 30_000, [1 / 3] * 3, atol=0.02)
    z, _ = standard_normal(4).sample(jax.random.key(2), 30_000)
    np.testing.assert_allclose(np.cov(np.asarray(z), rowvar=False), np.eye(4), atol=0.05)


def test_fit_rejects_bad_codes():
    codes, labels = np.zeros((40, 4)), np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match="more than 4 codes"):
        fit_class_gaussians(codes, labels, 3)  # class 2 has none
    with pytest.raises(ValueError, match="NaN"):
        fit_class_gaussians(np.full((40, 4), np.nan), labels, 2)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        fit_class_gaussians(codes, labels[:10], 2)


def test_generator_samples_from_its_prior():
    module = Generator(latent_dim=8)
    params = init_gan(module, Discriminator(), jax.random.key(0))[0]
    prior = GaussianMixture(jnp.full((1, 8), 4.0), 1e-3 * jnp.eye(8)[None])
    gen = GeneratorModel(params, module, prior)
    key = jax.random.key(3)
    codes = gen.sample_codes(key, 5)
    np.testing.assert_allclose(codes, 4.0, atol=0.02)
    np.testing.assert_allclose(gen.sample(key, 5), gen.generate(codes), atol=1e-6)
    plain = GeneratorModel(params, module)  # no prior: N(0, I)
    np.testing.assert_array_equal(plain.sample_codes(key, 5), jax.random.normal(key, (5, 8)))


def test_gan_config_prior_choices():
    assert (
        GANConfig().prior_kind == "normal" and GANConfig(init_from="runs/vae").prior_kind == "class"
    )
    assert GANConfig(init_from="runs/vae", prior="normal").prior_kind == "normal"
    with pytest.raises(ValueError, match="needs init_from"):
        GANConfig(prior="class").validate()
    with pytest.raises(ValueError, match="prior must be"):
        GANConfig(prior="uniform").validate()
