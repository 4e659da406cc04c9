"""Training the generative models: the VAE (with its latent classifier) and the DCGAN generator.

Same machinery as the CNN (``mnistxai.training.cnn``): a config dataclass with defaults in one place
and
``validate()``, one jitted, state-donating ``train_step(state, images, labels) -> (state, metrics)``
whose randomness is ``fold_in(key, step)`` (so a resumed run repeats an uninterrupted one exactly),
the epoch order from ``epoch_permutation``, checkpoints ``latest`` and ``best`` through
``mnistxai.training.checkpoint`` every epoch, ``history.json`` + ``training_curves.png``, and
picture grids.

    train_vae(VAEConfig(), "runs/vae")              # best = lowest test -ELBO
    train_generator(GANConfig(classifier="runs/cnn"), "runs/generator")   # best = lowest Frechet
    distance

Defaults train each model on a 2-core CPU in a few minutes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mnistxai import data
from mnistxai.training import checkpoint
from mnistxai.util import streams
from mnistxai.util.jit import jit
from mnistxai.models.gan import Discriminator, Generator, GeneratorModel, init_gan
from mnistxai.models.latent_prior import GaussianMixture, fit_class_gaussians, standard_normal
from mnistxai.models.cnn import count_params
from mnistxai.training.loop import Task, fit, load_split, validate_common
from mnistxai.models.vae import VAE, VAEModel, init_vae, negative_elbo
from mnistxai.util.errors import InputError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data settings every config shares, as in ``mnistxai.training.cnn.TrainConfig``."""

    dataset: str = "mnist"
    data_dir: str | None = None
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    eval_batch_size: int = 1000


@dataclasses.dataclass(frozen=True)
class VAEConfig(DataConfig):
    """VAE training settings and defaults.

    Attributes:
      dataset, data_dir, seed, limit_train, limit_test, eval_batch_size: as in ``TrainConfig``.
      epochs: passes over the training set (5).
      batch_size: images per step (128).
      lr: peak Adam learning rate of a warmup-cosine schedule (2e-3).
      latent_dim: size of the code z (16).
      beta: weight of the KL term during training (1.0: the true ELBO; reported -ELBO always uses
      1).
      classifier_weight: weight of the latent classifier's cross-entropy, which also trains the
        encoder (joint training, 50: it makes the posterior means class-separable at a cost of
        ~1 nat of ELBO); 0 trains the classifier alone on detached means (weight 1).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    latent_dim: int = 16
    beta: float = 1.0
    classifier_weight: float = 50.0

    def validate(self) -> "VAEConfig":
        validate_common(self)
        if self.latent_dim < 1:
            raise InputError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.beta > 0 or self.classifier_weight < 0:
            raise InputError("beta must be > 0 and classifier_weight >= 0")
        return self


@dataclasses.dataclass(frozen=True)
class GANConfig(DataConfig):
    """DCGAN training settings and defaults (Radford et al. 2016, scaled down for a CPU).

    From random weights this small DCGAN learns slowly on a CPU budget (CNN Inception Score ~5.7
    after 5 epochs); started from a trained VAE decoder (``init_from``) it is ~6.7 after one epoch
    with N(0, I) codes, and ~9.2 with the class prior.

    Attributes:
      dataset, data_dir, seed, limit_train, limit_test, eval_batch_size: as in ``TrainConfig``.
      epochs: passes over the training set (3).
      batch_size: real images per step (64).
      lr, beta1: Adam settings of both nets (2e-4, 0.5: DCGAN's).
      latent_dim: size of the code z (16, as the VAE's).
      init_from: a VAE work dir whose decoder initializes the generator (same architecture and
        latent_dim); None starts from random weights.
      prior: where codes come from in training and sampling: ``"class"``, one Gaussian per
        class fitted to the ``init_from`` VAE's posterior means of the training images
        (``mnistxai.models.latent_prior``; CNN Inception Score 9.4 instead of 7.2 with N(0, I)), or
        ``"normal"``, N(0, I). None (default): "class" with ``init_from``, else "normal".
      ema: decay of the exponential moving average of the generator's weights that is sampled,
        scored and saved for use (0.99; 0 uses the raw weights) (Yazici et al. 2019).
      classifier: a CNN work dir; when given, each epoch scores ``eval_samples`` samples with the
        classifier-based Inception Score and the Frechet distance, and ``best`` keeps the lowest
        distance. Without it ``best`` is the latest epoch.
      eval_samples: samples scored per epoch (2,000).
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    latent_dim: int = 16
    init_from: str | None = None
    prior: str | None = None
    ema: float = 0.99
    classifier: str | None = None
    eval_samples: int = 2000

    def validate(self) -> "GANConfig":
        validate_common(self)
        for name in ("latent_dim", "eval_samples"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.ema < 1:
            raise InputError(f"beta1 and ema must be in [0, 1), got {self.beta1}, {self.ema}")
        if self.prior not in (None, "class", "normal"):
            raise InputError(f"prior must be 'class' or 'normal', got {self.prior!r}")
        if self.prior == "class" and not self.init_from:
            raise InputError(
                "prior 'class' is fitted to a VAE's codes: it needs init_from (a VAE run)"
            )
        return self

    @property
    def prior_kind(self) -> str:
        return self.prior or ("class" if self.init_from else "normal")


def _warmup_cosine(config, steps_per_epoch: int):
    total = max(config.epochs * steps_per_epoch, 2)
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, max(1, total // 20), total, config.lr / 50
    )


# ---- VAE ---------------------------------------------------------------------------------------


@struct.dataclass
class VAEState:
    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array  # raw uint32 key data


def make_vae_step(module: VAE, tx: optax.GradientTransformation, config: VAEConfig) -> Callable:
    """Jitted, donating ``(state, uint8 images, labels) -> (state, summed metrics)``.

    Loss per batch: mean(reconstruction NLL + beta * KL) + classifier_weight * mean(CE of the
    latent classifier on the posterior means), all in nats.
    """

    def train_step(state: VAEState, images, labels):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        x = data.to_model_input(images)

        def loss_fn(params):
            neg_elbo, nll, kl, _, class_logits = negative_elbo(module, params, x, key)
            if config.classifier_weight == 0:  # the classifier alone, on fixed codes
                mean = jax.lax.stop_gradient(
                    module.apply({"params": params}, x, method=VAE.encode)[0]
                )
                class_logits = module.apply({"params": params}, mean, method=VAE.classify_latent)
            ce = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
            loss = jnp.mean(nll + config.beta * kl) + (config.classifier_weight or 1.0) * ce.mean()
            return loss, (neg_elbo, nll, kl, ce, class_logits)

        (_, (neg_elbo, nll, kl, ce, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        return state, {
            "loss": neg_elbo.sum(),
            "accuracy": jnp.sum(jnp.argmax(logits, -1) == labels),
            "reconstruction": nll.sum(),
            "kl": kl.sum(),
            "classifier_ce": ce.sum(),
        }

    return jit(train_step, donate_argnums=0)


def vae_test_metrics(
    model: VAEModel, images: np.ndarray, labels: np.ndarray, key: jax.Array, batch_size: int = 1000
) -> dict:
    """Test -ELBO (nats/image, one reparameterized sample each), its two terms, latent-classifier
    accuracy."""
    totals = np.zeros(4)
    for b, start in enumerate(range(0, len(images), batch_size)):
        totals += np.asarray(
            _vae_eval_step(
                model,
                images[start : start + batch_size],
                labels[start : start + batch_size],
                jax.random.fold_in(key, b),
            )
        )
    loss, nll, kl, correct = totals / len(images)
    return {"test_loss": loss, "test_reconstruction": nll, "test_kl": kl, "test_accuracy": correct}


@jit
def _vae_eval_step(model: VAEModel, images, labels, key):
    neg_elbo, nll, kl, _, class_logits = negative_elbo(
        model.module, model.params, data.to_model_input(images), key
    )
    correct = jnp.sum(jnp.argmax(class_logits, -1) == labels)
    return jnp.stack([neg_elbo.sum(), nll.sum(), kl.sum(), correct.astype(jnp.float32)])


def build_vae(config: VAEConfig, steps_per_epoch: int, test: tuple) -> Task:
    module = VAE(latent_dim=config.latent_dim)
    tx = optax.adam(_warmup_cosine(config, steps_per_epoch))
    init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    params = init_vae(module, init_key)["params"]
    state = VAEState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        key=jax.random.key_data(train_key),
    )
    test_images, test_labels = test
    as_model = lambda s: VAEModel(s.params, module)  # noqa: E731

    def write_figures(workdir: Path, s: VAEState):
        from mnistxai.report import viz

        model, x = as_model(s), data.to_model_input(test_images[:10])
        rows = np.stack([np.asarray(x)[..., 0], np.asarray(model.reconstruct(x))[..., 0]])
        viz.save_figure(
            viz.plot_image_grid(
                rows,
                ["test image", "reconstruction"],
                list(test_labels[:10]),
                "VAE reconstructions (decoded posterior means)",
            ),
            workdir / "reconstructions.png",
        )
        samples = np.asarray(model.sample(streams.key(config.seed, "sample_grid"), 100))[
            ..., 0
        ].reshape(10, 10, 28, 28)
        viz.save_figure(
            viz.plot_image_grid(samples, title="VAE samples, z ~ N(0, I)"), workdir / "samples.png"
        )

    def plot(epochs):
        from mnistxai.report.viz import plot_metric_curves

        return plot_metric_curves(
            epochs,
            {
                "negative ELBO (nats/image)": ["train_loss", "test_loss"],
                "latent classifier accuracy": ["train_accuracy", "test_accuracy"],
            },
            title="VAE training",
        )

    return Task(
        state=state,
        train_step=make_vae_step(module, tx, config),
        evaluate=lambda s: vae_test_metrics(
            as_model(s), test_images, test_labels, eval_key, config.eval_batch_size
        ),
        score=lambda m: -m["test_loss"],
        model_kwargs={"latent_dim": config.latent_dim},
        write_figures=write_figures,
        plot=plot,
        summary=f"VAE with {count_params(params):,} parameters (latent_dim {config.latent_dim})",
        describe=lambda m: (
            f"test -ELBO {m['test_loss']:.2f} nats (reconstruction {m['test_reconstruction']:.2f} "
            f"+ KL {m['test_kl']:.2f}), latent classifier accuracy {m['test_accuracy']:.4f}"
        ),
        bar_keys=("loss", "kl", "accuracy"),
    )


def train_vae(
    config: VAEConfig,
    workdir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """Train the VAE and its latent classifier; best checkpoint = lowest test -ELBO. See ``fit``."""
    return fit("vae", config, build_vae, workdir, resume, max_steps, progress)


# ---- DCGAN -------------------------------------------------------------------------------------


@struct.dataclass
class GANState:
    step: jax.Array
    g_params: Any
    g_ema: Any  # the moving average of g_params: what is sampled, scored and used
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    key: jax.Array  # raw uint32 key data
    prior: GaussianMixture  # where z comes from (fixed during training)


def _bce(logits, target: float):
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target))


def make_gan_step(
    generator: Generator,
    discriminator: Discriminator,
    tx: optax.GradientTransformation,
    ema: float = 0.0,
) -> Callable:
    """Jitted, donating ``(state, uint8 images, labels) -> (state, summed metrics)``; labels unused.

    One discriminator update on real + generated images (codes z from ``state.prior``), then one
    generator update with the non-saturating loss -log D(G(z)) (Goodfellow et al. 2014), both from
    the same codes z; then ``g_ema <- ema * g_ema + (1 - ema) * g_params``.
    """

    def train_step(state: GANState, images, labels):
        del labels
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        x = data.to_model_input(images)
        z = state.prior.sample(key, x.shape[0])[0]
        generate = lambda params: generator.apply({"params": params}, z)  # noqa: E731
        fake = generate(state.g_params)

        def d_loss_fn(d_params):
            real, gen = jnp.split(
                discriminator.apply({"params": d_params}, jnp.concatenate([x, fake])), 2
            )
            return _bce(real, 1.0).mean() + _bce(gen, 0.0).mean(), (real, gen)

        (d_loss, (real, gen)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
        d_updates, d_opt_state = tx.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)
        g_loss_fn = lambda p: _bce(
            discriminator.apply({"params": d_params}, generate(p)), 1.0
        ).mean()  # noqa: E731
        g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
        g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema = jax.tree_util.tree_map(lambda e, p: ema * e + (1 - ema) * p, state.g_ema, g_params)
        state = state.replace(
            step=state.step + 1,
            g_params=g_params,
            g_ema=g_ema,
            d_params=d_params,
            g_opt_state=g_opt_state,
            d_opt_state=d_opt_state,
        )
        n = x.shape[0]
        return state, {
            "d_loss": d_loss * n,
            "g_loss": g_loss * n,
            "d_real": jax.nn.sigmoid(real).sum(),
            "d_fake": jax.nn.sigmoid(gen).sum(),
        }

    return jit(train_step, donate_argnums=0)


@jit
def _posterior_means(vae: VAEModel, images):
    return vae.encode(data.to_model_input(images))[0]


def class_prior(
    vae: VAEModel, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000
) -> GaussianMixture:
    """Per-class Gaussians fitted to ``vae``'s posterior means of uint8 ``images`` (N, 28, 28)."""
    codes = np.concatenate(
        [
            np.asarray(_posterior_means(vae, images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
    )
    return fit_class_gaussians(codes, labels, vae.module.num_classes)


def build_gan(config: GANConfig, steps_per_epoch: int, test: tuple) -> Task:
    from mnistxai.training import generative_eval

    generator = Generator(latent_dim=config.latent_dim)
    discriminator = Discriminator()
    tx = optax.adam(config.lr, b1=config.beta1)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    g, d = init_gan(generator, discriminator, init_key)
    prior = standard_normal(config.latent_dim)
    if (
        config.init_from
    ):  # start from a trained VAE decoder (same architecture), sharpen adversarially
        vae = checkpoint.load_vae(config.init_from)
        if vae.latent_dim != config.latent_dim:
            raise InputError(
                f"init_from {config.init_from} has latent_dim {vae.latent_dim}, "
                f"the generator {config.latent_dim}"
            )
        g = {"decoder": vae.params["decoder"]}
        if config.prior_kind == "class":
            prior = class_prior(vae, *load_split(config, "train"), config.eval_batch_size)
    state = GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g,
        g_ema=jax.tree_util.tree_map(jnp.copy, g),
        d_params=d,
        g_opt_state=tx.init(g),
        d_opt_state=tx.init(d),
        key=jax.random.key_data(train_key),
        prior=prior,
    )
    as_model = lambda s: GeneratorModel(s.g_ema, generator, s.prior)  # noqa: E731
    judge = reference = None
    if config.classifier:
        judge = checkpoint.load_classifier(config.classifier)
        feats = generative_eval.probabilities_and_features(
            judge, data.to_model_input(test[0]), config.eval_batch_size
        )[1]
        reference = generative_eval.feature_statistics(feats)

    def evaluate(s: GANState) -> dict:
        if judge is None:
            return {}
        images = generative_eval.sample_images(
            as_model(s),
            streams.key(config.seed, "quality_samples"),
            config.eval_samples,
            config.eval_batch_size,
        )
        scores = generative_eval.score_images(judge, images, reference, config.eval_batch_size)
        return {
            "inception_score": scores["inception_score"],
            "frechet_distance": scores["frechet_distance"],
        }

    def write_figures(workdir: Path, s: GANState):
        from mnistxai.report import viz

        samples = np.asarray(as_model(s).sample(streams.key(config.seed, "sample_grid"), 100))[
            ..., 0
        ]
        title = f"DCGAN samples, z from the {config.prior_kind} prior"
        viz.save_figure(
            viz.plot_image_grid(samples.reshape(10, 10, 28, 28), title=title),
            workdir / "samples.png",
        )

    def plot(epochs):
        from mnistxai.report.viz import plot_metric_curves

        panels = {
            "loss": ["train_d_loss", "train_g_loss"],
            "mean D(x)": ["train_d_real", "train_d_fake"],
        }
        if judge is not None:
            panels.update(
                {
                    "Inception Score (CNN)": ["inception_score"],
                    "Frechet distance (CNN)": ["frechet_distance"],
                }
            )
        return plot_metric_curves(epochs, panels, title="DCGAN training")

    def describe(m: dict) -> str:
        text = f"D loss {m['train_d_loss']:.3f}, G loss {m['train_g_loss']:.3f}"
        if "frechet_distance" in m:
            text += (
                f", {config.eval_samples} samples: IS {m['inception_score']:.3f}, "
                f"Frechet distance {m['frechet_distance']:.3f}"
            )
        return text

    return Task(
        state=state,
        train_step=make_gan_step(generator, discriminator, tx, config.ema),
        evaluate=evaluate,
        score=lambda m: -m.get("frechet_distance", -m["epoch"]),
        model_kwargs={"latent_dim": config.latent_dim},
        summary=(
            f"DCGAN: generator {count_params(g):,}, discriminator {count_params(d):,} parameters"
            + (f", generator initialized from {config.init_from}" if config.init_from else "")
            + f", codes from the {config.prior_kind} prior"
        ),
        write_figures=write_figures,
        plot=plot,
        describe=describe,
        bar_keys=("d_loss", "g_loss", "d_fake"),
    )


def train_generator(
    config: GANConfig,
    workdir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """Train the DCGAN; best checkpoint = lowest Frechet distance (with ``config.classifier``) or
    latest."""
    return fit("generator", config, build_gan, workdir, resume, max_steps, progress)
