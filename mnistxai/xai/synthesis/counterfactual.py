"""Counterfactuals: the smallest change that makes the CNN say a chosen class, in pixels or in a
VAE's code.

Targeted projected gradient descent (Madry et al. 2018) on the cross-entropy to the target class:

* pixel space, L-infinity budget eps: x <- clip(x + a sign(g)), projected onto |x' - x|_inf <= eps
and [0, 1];
* pixel space, L2 budget eps: x <- x + a g / |g|_2, projected onto |x' - x|_2 <= eps, then [0, 1]
  (clipping to [0, 1] only moves coordinates towards x, so the budget still holds);
* VAE latent space, L2 budget eps on the code: z = mean of q(z | x), dz <- dz + a g / |g|_2
projected onto
  |dz|_2 <= eps, counterfactual = decode(z + dz) - a plausible digit rather than adversarial noise.

``smallest_budget`` runs PGD for a grid of budgets at once (``vmap`` over budgets and examples) and
reports, per example, the smallest budget whose result the CNN classifies as the target.

    cf = smallest_budget(classifier, images, targets=None, space="pixels", norm="linf")
    cf.budget (B,), cf.images (B, 28, 28, 1), cf.flipped (B,)
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnistxai.util.jit import jit
from mnistxai.models.classifier import Classifier
from mnistxai.xai._inputs import as_images, as_targets
from mnistxai.util.errors import InputError

SPACES = ("pixels", "latent")
NORMS = ("linf", "l2")
DEFAULT_BUDGETS = {
    "linf": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    "l2": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "latent": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
}


@struct.dataclass
class Counterfactual:
    """What ``smallest_budget`` returns for B examples and K budgets.

    Attributes:
      images: (B, 28, 28, 1) the counterfactual at the smallest flipping budget (the last budget's
        result where none flips).
      budget: (B,) that budget (inf where no budget flips).
      flipped: (B,) bool. targets: (B,) int32.
      distance: (B,) the size of the change actually made, in the budget's norm (pixels: of x' - x;
        latent: of dz).
      probabilities: (B, 10) the CNN's softmax on ``images``.
      success: (B, K) bool, which budgets flip each example. budgets: (K,) the grid.
    """

    images: jax.Array
    budget: jax.Array
    flipped: jax.Array
    targets: jax.Array
    distance: jax.Array
    probabilities: jax.Array
    success: jax.Array
    budgets: jax.Array


def _l2(v):
    return jnp.sqrt(jnp.sum(v**2))


def _unit(g):
    return g / jnp.maximum(_l2(g), 1e-12)


def _target_log_prob(classifier: Classifier, image, target):
    return jax.nn.log_softmax(classifier.logits(image[None])[0])[target]


def _pgd_pixels_one(classifier, x, target, eps, *, norm, steps, step_size):
    """One image (28, 28, 1): the PGD result after ``steps`` steps of ``step_size * eps``."""
    alpha = step_size * eps

    def step(x_adv, _):
        g = jax.grad(_target_log_prob, argnums=1)(classifier, x_adv, target)
        if norm == "linf":
            x_adv = x + jnp.clip(x_adv + alpha * jnp.sign(g) - x, -eps, eps)
        else:
            delta = x_adv + alpha * _unit(g) - x
            x_adv = x + delta * jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), 1e-12))
        return jnp.clip(x_adv, 0.0, 1.0), None

    return jax.lax.scan(step, x, None, length=steps)[0]


def _pgd_latent_one(vae, classifier, x, target, eps, *, steps, step_size):
    """One image: (decode(z + dz), dz) after ``steps`` L2-projected steps on the code."""
    z = vae.encode(x[None])[0][0]
    alpha = step_size * eps
    log_prob = lambda dz: _target_log_prob(classifier, vae.decode((z + dz)[None])[0], target)  # noqa: E731

    def step(dz, _):
        dz = dz + alpha * _unit(jax.grad(log_prob)(dz))
        return dz * jnp.minimum(1.0, eps / jnp.maximum(_l2(dz), 1e-12)), None

    dz = jax.lax.scan(step, jnp.zeros_like(z), None, length=steps)[0]
    return vae.decode((z + dz)[None])[0], dz


@partial(jit, static_argnames=("space", "norm", "steps", "step_size"))
def _attack(classifier, vae, x, targets, budgets, *, space, norm, steps, step_size):
    """(images (B, K, 28, 28, 1), distances (B, K), probabilities (B, K, 10)) for every example x
    budget."""

    def one(xi, ti, eps):
        if space == "pixels":
            adv = _pgd_pixels_one(
                classifier, xi, ti, eps, norm=norm, steps=steps, step_size=step_size
            )
            d = adv - xi
            dist = jnp.abs(d).max() if norm == "linf" else _l2(d)
        else:
            adv, dz = _pgd_latent_one(
                vae, classifier, xi, ti, eps, steps=steps, step_size=step_size
            )
            dist = _l2(dz)
        return adv, dist, jax.nn.softmax(classifier.logits(adv[None])[0])

    over_budgets = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(over_budgets, in_axes=(0, 0, None))(x, targets, budgets)


@jax.jit
def _runner_up(classifier: Classifier, x):
    return jnp.argsort(classifier.logits(x), -1)[:, -2].astype(jnp.int32)


def _check(classifier, images, targets, space, norm, vae, steps, step_size):
    if space not in SPACES:
        raise InputError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if space == "latent" and (vae is None or not hasattr(vae, "decode")):
        raise InputError(
            "space='latent' needs vae= (a trained VAEModel: mnistxai.training.checkpoint.load_vae)"
        )
    if space == "latent" and norm != "l2":
        raise InputError("the latent space takes an L2 budget only (norm='l2')")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if not (np.isfinite(step_size) and step_size > 0):
        raise InputError(f"step_size must be a positive number, got {step_size}")
    x = as_images(images)
    if targets is None:  # the runner-up class of each image
        t = np.asarray(_runner_up(classifier, jnp.asarray(x)))
    else:
        t = as_targets(targets, len(x), 10)
    return jnp.asarray(x), jnp.asarray(t)


def pgd(
    classifier: Classifier,
    images,
    targets=None,
    *,
    eps: float,
    space: str = "pixels",
    norm: str = "linf",
    vae=None,
    steps: int = 40,
    step_size: float = 0.1,
) -> jax.Array:
    """Targeted PGD with one budget: counterfactual images (B, 28, 28, 1) in [0, 1].

    Args:
      classifier: the CNN. images: (B, 28, 28[, 1]) uint8 or float in [0, 1].
      targets: int or (B,) target classes (default: each image's runner-up class).
      eps: the budget (L-inf or L2 in pixel units; L2 in code units for the latent space).
      space: ``"pixels"`` (default) or ``"latent"`` (needs ``vae``). norm: ``"linf"`` (default) or
      ``"l2"``.
      steps: PGD steps (40). step_size: step length as a fraction of eps (0.1; Madry et al. use 2.5
      eps / steps).
    """
    cf = smallest_budget(
        classifier,
        images,
        targets,
        budgets=(eps,),
        space=space,
        norm=norm,
        vae=vae,
        steps=steps,
        step_size=step_size,
    )
    return cf.images


def smallest_budget(
    classifier: Classifier,
    images,
    targets=None,
    *,
    budgets: Optional[tuple] = None,
    space: str = "pixels",
    norm: str = "linf",
    vae=None,
    steps: int = 40,
    step_size: float = 0.1,
) -> Counterfactual:
    """The smallest budget of a grid that flips each example to its target class, and its
    counterfactual.

    Args:
      budgets: increasing positive budgets (default ``DEFAULT_BUDGETS[norm]``, or ``["latent"]``).
      Others: as in ``pgd``.
    """
    x, t = _check(classifier, images, targets, space, norm, vae, steps, step_size)
    grid = np.asarray(
        budgets
        if budgets is not None
        else DEFAULT_BUDGETS["latent" if space == "latent" else norm],
        np.float32,
    )
    if (
        grid.ndim != 1
        or len(grid) == 0
        or not np.all(np.isfinite(grid))
        or grid.min() <= 0
        or np.any(np.diff(grid) <= 0)
    ):
        raise InputError(
            f"budgets must be a non-empty increasing sequence of positive numbers, got {budgets!r}"
        )
    adv, dist, probs = _attack(
        classifier,
        vae if space == "latent" else None,
        x,
        t,
        jnp.asarray(grid),
        space=space,
        norm=norm,
        steps=int(steps),
        step_size=float(step_size),
    )
    success = jnp.argmax(probs, -1) == t[:, None]
    flipped = success.any(1)
    first = jnp.where(flipped, jnp.argmax(success, 1), len(grid) - 1)
    pick = lambda a: jnp.take_along_axis(a, first.reshape((-1,) + (1,) * (a.ndim - 1)), 1)[:, 0]  # noqa: E731
    return Counterfactual(
        images=pick(adv),
        budget=jnp.where(flipped, jnp.asarray(grid)[first], jnp.inf),
        flipped=flipped,
        targets=t,
        distance=pick(dist),
        probabilities=pick(probs),
        success=success,
        budgets=jnp.asarray(grid),
    )
