"""The DCGAN and the classifier-based scores: output range, exact resume, Inception Score, Frechet
distance."""

import jax
import numpy as np
import pytest

from mnistxai.training import checkpoint, generative_eval
from mnistxai.models.gan import Discriminator, Generator, GeneratorModel, init_gan
from mnistxai.training.loop import TrainingInterrupted
from mnistxai.training.generative import GANConfig, train_generator

from generative_fixtures import TINY_GAN


def test_generator_range_and_shapes():
    g, d = init_gan(Generator(latent_dim=8), Discriminator(), jax.random.key(0))
    gen = GeneratorModel(g, Generator(latent_dim=8))
    images = np.asarray(
        jax.jit(GeneratorModel.generate)(gen, 10 * jax.random.normal(jax.random.key(1), (5, 8)))
    )
    assert images.shape == (5, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
    assert Discriminator().apply({"params": d}, images).shape == (5,)


def test_generator_starts_as_the_vae_decoder_with_its_class_prior(tmp_path, mnist_dir):
    from mnistxai import data
    from mnistxai.training.generative import build_gan
    from mnistxai.models.vae import VAE, VAEModel, init_vae

    vae = VAEModel(init_vae(VAE(latent_dim=8), jax.random.key(3))["params"], VAE(latent_dim=8))
    checkpoint.save(
        tmp_path / "checkpoints" / "best",
        1,
        {"params": vae.params},
        {"model": "vae", "model_kwargs": {"latent_dim": 8}},
        {},
    )
    config = GANConfig(
        latent_dim=8, init_from=str(tmp_path), data_dir=str(mnist_dir), limit_train=500
    )
    task = build_gan(config, 10, (None, None))
    z = jax.random.normal(jax.random.key(4), (3, 8))
    np.testing.assert_allclose(
        GeneratorModel(task.state.g_ema, Generator(latent_dim=8)).generate(z),
        vae.decode(z),
        atol=1e-6,
    )
    images, labels = data.load("mnist", "train", str(mnist_dir))
    codes = np.asarray(vae.encode(data.to_model_input(images[:500]))[0])
    class_means = np.stack([codes[labels[:500] == k].mean(0) for k in range(10)])
    np.testing.assert_allclose(task.state.prior.means, class_means, atol=1e-5)
    normal = build_gan(
        GANConfig(latent_dim=8, init_from=str(tmp_path), prior="normal"), 10, (None, None)
    )
    np.testing.assert_array_equal(normal.state.prior.scale_tril, np.eye(8)[None])
    with pytest.raises(ValueError, match="latent_dim"):
        build_gan(GANConfig(latent_dim=4, init_from=str(tmp_path)), 10, (None, None))


def test_resume_matches_an_uninterrupted_run(tmp_path, mnist_dir, generator_run):
    config = GANConfig(data_dir=str(mnist_dir), **TINY_GAN)  # 4 steps per epoch, 8 in all
    whole_dir, whole = generator_run
    with pytest.raises(TrainingInterrupted, match="step 3"):
        train_generator(config, tmp_path / "split", max_steps=3, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train_generator(config, tmp_path / "split", progress=False)
    resumed = train_generator(config, tmp_path / "split", resume=True, progress=False)
    a, b = (
        whole["epochs"][-1],
        resumed["epochs"][-1],
    )  # epoch 1 of the resumed run averages steps 4..8 only
    assert a["train_d_loss"] == b["train_d_loss"] and a["train_g_loss"] == b["train_g_loss"]
    z = jax.random.normal(jax.random.key(2), (4, 8))
    loaded = checkpoint.load_generator(whole_dir, "latest")
    resumed_generator = checkpoint.load_generator(tmp_path / "split", "latest")
    np.testing.assert_array_equal(loaded.generate(z), resumed_generator.generate(z))
    np.testing.assert_array_equal(
        loaded.prior.means, np.zeros((1, 8))
    )  # the prior is saved: N(0, I) here
    assert (whole_dir / "samples.png").stat().st_size > 1000
    with pytest.raises(checkpoint.CheckpointError, match="not a 'vae'"):
        checkpoint.load_vae(whole_dir)


def test_inception_score_extremes():
    confident_even = np.eye(10)[np.arange(1000) % 10]
    assert generative_eval.inception_score(confident_even)[0] == pytest.approx(10.0, rel=1e-6)
    one_class = np.eye(10)[np.zeros(1000, int)]
    assert generative_eval.inception_score(one_class)[0] == pytest.approx(1.0, rel=1e-6)
    assert generative_eval.inception_score(np.full((1000, 10), 0.1))[0] == pytest.approx(
        1.0, rel=1e-6
    )


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert generative_eval.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    assert generative_eval.frechet_distance(mu, sigma, mu + 2.0, sigma) == pytest.approx(
        24.0, rel=1e-8
    )
    s1, s2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)  # diagonal: sum (sqrt s1 - sqrt s2)^2
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert generative_eval.frechet_distance(mu, np.diag(s1), mu, np.diag(s2)) == pytest.approx(
        expected, rel=1e-8
    )
    with pytest.raises(ValueError, match="mismatched"):
        generative_eval.frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def test_score_images_uses_the_classifier(random_classifier):
    images = np.asarray(jax.random.uniform(jax.random.key(0), (20, 28, 28, 1)))
    probs, feats = generative_eval.probabilities_and_features(
        random_classifier, images, batch_size=8
    )
    np.testing.assert_allclose(
        probs, jax.nn.softmax(random_classifier.logits(images)), rtol=1e-5, atol=1e-6
    )
    assert feats.shape == (20, 256)
    scores = generative_eval.score_images(
        random_classifier, images, generative_eval.feature_statistics(feats)
    )
    assert (
        scores["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
        and sum(scores["class_counts"]) == 20
    )
