"""The VAE: training improves the ELBO, the reparameterization gradient is right, outputs stay in
[0, 1]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.training import checkpoint
from mnistxai.training.generative import VAEConfig
from mnistxai.models.vae import VAE, VAEModel, gaussian_kl, init_vae, reparameterize


def test_elbo_improves_and_outputs_are_written(vae_run):
    workdir, history = vae_run
    losses = [e["test_loss"] for e in history["epochs"]]
    assert losses[-1] < losses[0] - 20, losses  # nats per image, on held-out images
    assert losses[-1] == pytest.approx(
        history["epochs"][-1]["test_reconstruction"] + history["epochs"][-1]["test_kl"]
    )
    for name in ("history.json", "training_curves.png", "reconstructions.png", "samples.png"):
        assert (workdir / name).stat().st_size > 1000


def test_loaded_vae_reproduces_the_test_elbo(vae_run, mnist_dir):
    from mnistxai import data
    from mnistxai.training.generative import vae_test_metrics

    workdir, history = vae_run
    vae = checkpoint.load_vae(workdir)
    assert isinstance(vae, VAEModel) and vae.latent_dim == 16
    images, labels = data.load("mnist", "test", mnist_dir)
    config = VAEConfig(**history["config"])
    eval_key = jax.random.split(jax.random.key(config.seed), 3)[2]
    metrics = vae_test_metrics(vae, images[:128], labels[:128], eval_key, config.eval_batch_size)
    best = min(history["epochs"], key=lambda e: e["test_loss"])
    assert metrics["test_loss"] == pytest.approx(best["test_loss"], rel=1e-5)
    with pytest.raises(checkpoint.CheckpointError, match="not a 'generator'"):
        checkpoint.load_generator(workdir)


def test_reparameterization_gradient_matches_finite_differences():
    """d/d(mean, logvar) of E[sum(z^2)] = sum(mean^2 + exp(logvar)): pathwise Monte Carlo vs central
    differences."""
    mean, logvar = jnp.array([0.3, -1.2, 0.7]), jnp.array([-0.5, 0.2, 0.9])
    eps = jax.random.normal(jax.random.key(0), (200_000, 3))
    mc = lambda m, lv: jnp.mean(jnp.sum(reparameterize(m, lv, eps) ** 2, -1))  # noqa: E731
    g_mean, g_logvar = jax.grad(mc, argnums=(0, 1))(mean, logvar)
    exact = lambda m, lv: np.sum(m**2 + np.exp(lv))  # noqa: E731
    h = 1e-4
    m64, lv64 = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    fd_mean = [(exact(m64 + h * e, lv64) - exact(m64 - h * e, lv64)) / (2 * h) for e in np.eye(3)]
    fd_logvar = [(exact(m64, lv64 + h * e) - exact(m64, lv64 - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(g_mean, fd_mean, rtol=0.03, atol=0.01)
    np.testing.assert_allclose(g_logvar, fd_logvar, rtol=0.03)


def test_decoder_outputs_stay_in_unit_interval_and_kl_is_zero_at_the_prior():
    module = VAE(latent_dim=4, widths=(4, 8), hidden=16)
    vae = VAEModel(jax.jit(lambda k: init_vae(module, k))(jax.random.key(0))["params"], module)
    z = 100.0 * jax.random.normal(jax.random.key(1), (8, 4))
    images = np.asarray(jax.jit(VAEModel.decode)(vae, z))
    assert images.shape == (8, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
    mean, logvar = jax.jit(VAEModel.encode)(vae, jnp.ones((2, 28, 28, 1)))
    assert mean.shape == logvar.shape == (2, 4)
    np.testing.assert_allclose(gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4))), [0.0])


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(latent_dim=0), "latent_dim"),
        (dict(beta=0.0), "beta"),
        (dict(epochs=0), "epochs"),
    ],
)
def test_bad_vae_config(bad, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig(**bad).validate()


def test_train_script_rejects_flags_of_other_models(tmp_path):
    from test_scripts import run_script

    result = run_script(
        "train_mnist.py", "--model", "vae", "--workdir", str(tmp_path), "--augment-shift", "1"
    )
    assert (
        result.returncode == 2 and "--augment-shift: not a setting of --model vae" in result.stderr
    )
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
