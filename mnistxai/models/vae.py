"""A convolutional variational autoencoder with a classifier on its latent mean (Kingma & Welling
2014).

Architecture (``latent_dim`` = 16 by default, ~1.7M parameters)::

    encoder  x (B,28,28,1) -> conv 32 4x4/2 -> conv 64 4x4/2 -> dense 256 -> (mean, logvar) (B,
    latent_dim)
    decoder  z (B, latent_dim) -> dense 256 -> dense 7*7*64 -> deconv 32 4x4/2 -> deconv 1 4x4/2 ->
    logits (B,28,28,1)
    latent classifier  mean (B, latent_dim) -> dense 128 -> logits (B, 10)

The likelihood is Bernoulli on grey values in [0, 1], so ``decode`` returns ``sigmoid(logits)``,
always inside [0, 1], and the reconstruction term is the pixel-summed binary cross-entropy in nats.
The latent classifier reads the posterior *mean* (the contrastive feature visualization seed's
"classifier on the latent code"); trained jointly, its cross-entropy also shapes the encoder.

``VAEModel`` bundles a module with its parameters as a pytree, like
``mnistxai.models.classifier.Classifier``,
so jitted functions take it as an argument and are not recompiled for new weights.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class Decoder(nn.Module):
    """Codes z (B, latent_dim) -> Bernoulli logits (B, 28, 28, 1): dense, dense to 7x7, two stride-2
    deconvs.

    Also the DCGAN generator's body (``mnistxai.models.gan.Generator``), so a VAE decoder can
    initialize it.
    """

    widths: Sequence[int] = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        w1, w2 = self.widths
        h = nn.relu(nn.Dense(self.hidden, name="dense")(z))
        h = nn.relu(nn.Dense(7 * 7 * w2, name="grid")(h)).reshape(z.shape[0], 7, 7, w2)
        h = nn.relu(nn.ConvTranspose(w1, (4, 4), (2, 2), padding="SAME", name="deconv1")(h))
        return nn.ConvTranspose(1, (4, 4), (2, 2), padding="SAME", name="deconv2")(h)


class VAE(nn.Module):
    """Conv VAE + latent-mean classifier. Inputs float32 (B, 28, 28, 1) in [0, 1].

    Attributes:
      latent_dim: size of the latent code z (16).
      widths: channels of the two stride-2 convolutions (32, 64); the decoder mirrors them.
      hidden: units of the dense layer on either side of the code (256).
      classifier_hidden: units of the latent classifier's hidden layer (128).
      num_classes: classes of the latent classifier (10).
    """

    latent_dim: int = 16
    widths: Sequence[int] = (32, 64)
    hidden: int = 256
    classifier_hidden: int = 128
    num_classes: int = 10

    def setup(self):
        w1, w2 = self.widths
        self.enc_convs = [
            nn.Conv(w1, (4, 4), (2, 2), padding="SAME", name="enc_conv1"),
            nn.Conv(w2, (4, 4), (2, 2), padding="SAME", name="enc_conv2"),
        ]
        self.enc_dense = nn.Dense(self.hidden, name="enc_dense")
        self.enc_out = nn.Dense(2 * self.latent_dim, name="enc_out")
        self.decoder = Decoder(self.widths, self.hidden, name="decoder")
        self.clf_hidden = nn.Dense(self.classifier_hidden, name="clf_hidden")
        self.clf_out = nn.Dense(self.num_classes, name="clf_out")

    def encode(self, x):
        """(mean, logvar), each (B, latent_dim), of the Gaussian posterior q(z | x)."""
        h = x
        for conv in self.enc_convs:
            h = nn.relu(conv(h))
        h = nn.relu(self.enc_dense(h.reshape(h.shape[0], -1)))
        mean, logvar = jnp.split(self.enc_out(h), 2, axis=-1)
        return mean, logvar

    def decode_logits(self, z):
        """Bernoulli logits (B, 28, 28, 1) of p(x | z)."""
        return self.decoder(z)

    def decode(self, z):
        """Images (B, 28, 28, 1) in [0, 1]: the mean of p(x | z)."""
        return nn.sigmoid(self.decode_logits(z))

    def classify_latent(self, z):
        """Class logits (B, num_classes) from latent codes (B, latent_dim)."""
        return self.clf_out(nn.relu(self.clf_hidden(z)))

    def __call__(self, x, eps):
        """(reconstruction logits, mean, logvar, class logits) for images x and noise eps ~ N(0,
        I)."""
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, eps)
        return self.decode_logits(z), mean, logvar, self.classify_latent(mean)


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps: a sample of N(mean, exp(logvar)) differentiable in both."""
    return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) in nats, summed over the last axis."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
    """-log p(x | logits) in nats per image, summed over (H, W, C); x in [0, 1]."""
    return optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=(1, 2, 3))


def init_vae(model: VAE, key: jax.Array) -> dict:
    """Fresh variables ``{'params'}`` for ``model``."""
    x = jnp.zeros((1, 28, 28, 1), jnp.float32)
    return dict(model.init(key, x, jnp.zeros((1, model.latent_dim), jnp.float32)))


@struct.dataclass
class VAEModel:
    """A trained VAE as pure functions. Images float32 (B, 28, 28, 1) in [0, 1]; codes (B,
    latent_dim)."""

    params: dict
    module: VAE = struct.field(pytree_node=False, default_factory=VAE)

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    def _apply(self, method, *args):
        return self.module.apply({"params": self.params}, *args, method=method)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, logvar) of q(z | x), each (B, latent_dim)."""
        return self._apply(VAE.encode, x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Images (B, 28, 28, 1) in [0, 1] from codes (B, latent_dim)."""
        return self._apply(VAE.decode, z)

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """decode(encode(x).mean): the deterministic reconstruction, (B, 28, 28, 1) in [0, 1]."""
        return self.decode(self.encode(x)[0])

    def classify_latent(self, z: jax.Array) -> jax.Array:
        """Latent classifier logits (B, 10) for codes (B, latent_dim) (trained on posterior
        means)."""
        return self._apply(VAE.classify_latent, z)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n images decoded from z ~ N(0, I)."""
        return self.decode(jax.random.normal(key, (n, self.latent_dim)))

    def negative_elbo(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """One-sample estimate of -ELBO(x) in nats, (B,)."""
        return negative_elbo(self.module, self.params, x, key)[0]


def negative_elbo(module: VAE, params, x: jax.Array, key: jax.Array):
    """(-ELBO (B,), reconstruction NLL (B,), KL (B,), mean (B, d), class logits (B, 10)) in nats.

    -ELBO(x) = E_q[-log p(x | z)] + KL(q(z | x) || p(z)), the expectation estimated with one
    reparameterized sample per image drawn from ``key``.
    """
    eps = jax.random.normal(key, (x.shape[0], module.latent_dim), x.dtype)
    logits, mean, logvar, class_logits = module.apply({"params": params}, x, eps)
    nll, kl = bernoulli_nll(logits, x), gaussian_kl(mean, logvar)
    return nll + kl, nll, kl, mean, class_logits
