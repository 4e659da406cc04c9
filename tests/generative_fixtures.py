"""Small trained models shared by the generative and synthesis tests (cached: trained once per
session).

Random networks make poor subjects for activation maximization and counterfactuals (their outputs
barely depend on the input), so these are trained briefly on real MNIST: a narrow CNN and a narrow
VAE, each in a few seconds.
"""

from functools import lru_cache

import jax
import jax.numpy as jnp
import optax

from mnistxai import data
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.models.vae import VAE, VAEModel, init_vae, negative_elbo

TINY_GAN = dict(
    limit_train=256, limit_test=100, epochs=2, batch_size=64, latent_dim=8
)  # 8 steps in all


@lru_cache(maxsize=None)
def mnist_test_images(data_dir: str, n: int = 1024):
    images, labels = data.load("mnist", "test", data_dir)
    return data.to_model_input(images[:n]), labels[:n]


def _fit(loss, params, batches, lr: float):
    tx = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, batch):
        grads = jax.grad(loss)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    for batch in batches:
        params, opt_state = step(params, opt_state, batch)
    return params


@lru_cache(maxsize=None)
def small_classifier(data_dir: str) -> Classifier:
    """A narrow CNN (widths 8-16-16) after 50 Adam steps on 1,024 test images."""
    model = CNN(widths=(8, 16, 16), hidden=32)
    variables = jax.jit(lambda k: init_cnn(model, k))(jax.random.key(0))
    x, y = mnist_test_images(data_dir)
    loss = lambda p, xb, yb: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        model.apply({"params": p, "batch_stats": variables["batch_stats"]}, xb), yb
    ).mean()
    batches = [
        (x[(i % 8) * 128 : (i % 8 + 1) * 128], y[(i % 8) * 128 : (i % 8 + 1) * 128])
        for i in range(50)
    ]
    params = _fit(loss, variables["params"], batches, 3e-3)
    return Classifier({"params": params, "batch_stats": variables["batch_stats"]}, model)


@lru_cache(maxsize=None)
def small_vae(data_dir: str) -> VAEModel:
    """A narrow VAE (latent 4) after 40 Adam steps: codes and decodes that differ between digits."""
    module = VAE(latent_dim=4, widths=(8, 16), hidden=64, classifier_hidden=16)
    params = jax.jit(lambda k: init_vae(module, k))(jax.random.key(0))["params"]
    x = jnp.asarray(mnist_test_images(data_dir)[0][:512])
    loss = lambda p, xb, key: negative_elbo(module, p, xb, key)[0].mean()  # noqa: E731
    batches = [(x[(i % 4) * 128 : (i % 4 + 1) * 128], jax.random.key(i)) for i in range(40)]
    return VAEModel(_fit(loss, params, batches, 3e-3), module)
