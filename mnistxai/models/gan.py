"""A small DCGAN for MNIST: generator and discriminator (Radford, Metz & Chintala 2016).

Architecture (defaults: ``latent_dim`` 16, widths (32, 64))::

    generator      z (B, 16) -> dense 256 -> dense 7*7*64 -> deconv 32 4x4/2 -> deconv 1 4x4/2 ->
    sigmoid
    discriminator  x (B,28,28,1) -> conv 64 4x4/2, LReLU -> conv 128 4x4/2, LReLU -> dense 1 (a
    logit)

DCGAN's recipe, scaled down to train on a 2-core CPU in minutes: strided (de)convolutions instead of
pooling, ReLU in the generator and LeakyReLU(0.2) in the discriminator, Adam(2e-4, b1=0.5). The
generator's body is the VAE's ``Decoder`` (``mnistxai.models.vae``), so it can start from a trained
VAE
decoder and be sharpened adversarially - the generator of DGN-AM (Nguyen et al. 2016) was likewise
a decoder trained with an adversarial loss (Dosovitskiy & Brox 2016). It ends in a sigmoid, so its
images lie in [0, 1] like the classifier's inputs (DCGAN used tanh on [-1, 1]). Neither net uses
BatchNorm: every sample depends on its own code only, in training as in use.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from mnistxai.models.latent_prior import GaussianMixture
from mnistxai.models.vae import Decoder


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, 28, 28, 1) in [0, 1]."""

    latent_dim: int = 16
    widths: Sequence[int] = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        return nn.sigmoid(Decoder(self.widths, self.hidden, name="decoder")(z))


class Discriminator(nn.Module):
    """Images (B, 28, 28, 1) in [0, 1] -> real-vs-generated logits (B,)."""

    widths: Sequence[int] = (64, 128)

    @nn.compact
    def __call__(self, x):
        h = 2 * x - 1
        for i, w in enumerate(self.widths):
            h = nn.leaky_relu(
                nn.Conv(w, (4, 4), (2, 2), padding="SAME", name=f"conv{i + 1}")(h), 0.2
            )
        return nn.Dense(1, name="out")(h.reshape(h.shape[0], -1))[:, 0]


def init_gan(
    generator: Generator, discriminator: Discriminator, key: jax.Array
) -> tuple[dict, dict]:
    """Fresh parameters ``(generator params, discriminator params)``."""
    g_key, d_key = jax.random.split(key)
    g = generator.init(g_key, jnp.zeros((1, generator.latent_dim), jnp.float32))["params"]
    d = discriminator.init(d_key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    return g, d


@struct.dataclass
class GeneratorModel:
    """A trained generator as a pure function, with the prior its codes are drawn from.

    Attributes:
      params: the generator's parameters.
      module: the ``Generator``.
      prior: a ``GaussianMixture`` over codes (``mnistxai.models.latent_prior``: the per-class
      Gaussians
        the generator was trained with); None means N(0, I).
    """

    params: dict
    module: Generator = struct.field(pytree_node=False, default_factory=Generator)
    prior: Optional[GaussianMixture] = None

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    def generate(self, z: jax.Array) -> jax.Array:
        """Images (B, 28, 28, 1) in [0, 1] from codes z (B, latent_dim)."""
        return self.module.apply({"params": self.params}, z)

    def sample_codes(self, key: jax.Array, n: int) -> jax.Array:
        """n codes (n, latent_dim) from the prior."""
        if self.prior is None:
            return jax.random.normal(key, (n, self.latent_dim))
        return self.prior.sample(key, n)[0]

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n images from codes drawn from the prior."""
        return self.generate(self.sample_codes(key, n))
