"""Activation maximization: the input that excites a class or a neuron most, in pixels or a
generator's code.

Lucid's three orthogonal pieces (Olah, Mordvintsev & Schubert 2017, "Feature Visualization"), and
one
``maximize`` loop combining them:

* **objective** - what to maximize (``OBJECTIVES``): ``"logit"`` of a class, ``"probability"`` of a
  class (softmax), ``"channel"``: the spatial mean of one channel of a conv layer (``layer``:
  conv1..conv6 or block1..3), ``"unit"``: one unit of the penultimate ``dense`` layer (post-ReLU).
* **parameterization** - what is optimized (``PARAMETERIZATIONS``): ``"pixels"`` (Erhan et al. 2009;
  Simonyan et al. 2014's "simple AM with L2 regularization"), ``"generator"``: the code z of a
  trained
  ``GeneratorModel`` (DGN-AM, Nguyen et al. 2016), or ``"vae"``: the code z of a ``VAEModel``'s
  decoder.
* **regularizers** (``Regularizers``): L2 penalty on the image, total variation, random jitter,
  Gaussian blur every k steps, clipping to [0, 1] (pixels); a Gaussian-prior penalty and clipping on
  the code (latent parameterizations).

Every (target, start) pair is optimized at once: ``vmap`` over targets (ten classes, or many units)
and over random starts. Start s uses ``jax.random.split(key, starts)[s]`` for its initial value and
its jitter, whatever the targets: a run with ``targets=[k]`` reproduces row k of a run over all.

    result = maximize(classifier, "logit", key=jax.random.key(0))                     # (10, 4)
    images
    result = maximize(classifier, "probability", key=key, parameterization="generator",
                      decoder=load_generator("runs/generator"))                        # DGN-AM
    success_rate(result)   # fraction of images the CNN classifies as their target class
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mnistxai.util.jit import jit
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CONV_LAYERS, resolve_layer
from mnistxai.util.errors import InputError

OBJECTIVES = ("logit", "probability", "channel", "unit")
PARAMETERIZATIONS = ("pixels", "generator", "vae")


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """Transforms and penalties (a zero weight, 0 steps or None turns one off exactly).

    ``l2``, ``tv``, ``blur_*`` and ``clip`` act on the pixel parameterization, ``latent_*`` on
    codes;
    ``jitter`` on the image the classifier sees, in every parameterization.

    Attributes:
      l2: weight of the penalty ``l2 * sum(x^2)`` on the image (Simonyan et al. 2014) (1e-2).
      tv: weight of the total variation ``sum of squared neighbour differences`` of the image (0).
      jitter: each step evaluates the objective on the image rolled by a random (dy, dx) in
        [-jitter, jitter] pixels (Mordvintsev et al. 2015) (1).
      blur_every: every k steps, blur the pixel parameter with a Gaussian of ``blur_sigma`` pixels
        (Yosinski et al. 2015); 0 disables (4). blur_sigma: (0.5).
      clip: clip pixels to [0, 1] after every step (True).
      latent_l2: weight of the Gaussian prior penalty ``latent_l2 * sum(z^2)`` on the code (1e-2).
      latent_clip: clip every code coordinate to [-latent_clip, latent_clip] after every step,
        keeping z where the prior has mass (DGN-AM clips its codes likewise); None disables (3.0).
    """

    l2: float = 1e-2
    tv: float = 0.0
    jitter: int = 1
    blur_every: int = 4
    blur_sigma: float = 0.5
    clip: bool = True
    latent_l2: float = 1e-2
    latent_clip: Optional[float] = 3.0

    def validate(self) -> "Regularizers":
        for name in ("l2", "tv", "latent_l2", "blur_sigma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"regularizer {name} must be a finite number >= 0, got {value}")
        if not 0 <= self.jitter <= 8 or not 0 <= self.blur_every:
            raise InputError(
                f"jitter must be in 0..8 pixels and blur_every >= 0, got {self.jitter}, "
                f"{self.blur_every}"
            )
        if self.blur_every and self.blur_sigma <= 0:
            raise InputError("blur_every > 0 needs blur_sigma > 0")
        if self.latent_clip is not None and not self.latent_clip > 0:
            raise InputError(f"latent_clip must be > 0 or None, got {self.latent_clip}")
        return self


NO_REGULARIZERS = Regularizers(
    l2=0.0, tv=0.0, jitter=0, blur_every=0, clip=False, latent_l2=0.0, latent_clip=None
)


@struct.dataclass
class AMResult:
    """What ``maximize`` returns, for T targets x S starts.

    Attributes:
      images: (T, S, 28, 28, 1) in [0, 1] (pixels with ``clip``; a generator's or decoder's range).
      trajectory: (T, S, steps) the objective at every step, as optimized (on the jittered image).
      initial, final: (T, S) the objective on the initial and the final (un-jittered) image.
      predictions: (T, S) the CNN's class for each final image.
      params: (T, S, ...) the optimized pixels or codes.
      targets: (T,) the class, channel or unit index of each row.
    """

    images: jax.Array
    trajectory: jax.Array
    initial: jax.Array
    final: jax.Array
    predictions: jax.Array
    params: jax.Array
    targets: jax.Array


# ---- objectives: (classifier, images (N,28,28,1), index) -> (N,) ------------------------------


def objective_value(
    classifier: Classifier, objective: str, layer: str, x: jax.Array, index
) -> jax.Array:
    """The objective for each image of x (N, 28, 28, 1): one value (N,) per image."""
    if objective == "logit":
        return classifier.logits(x)[:, index]
    if objective == "probability":
        return jax.nn.softmax(classifier.logits(x))[:, index]
    if objective == "channel":
        return classifier.features(x, layer)[..., index].mean(axis=(1, 2))
    return classifier.features(x, "dense")[:, index]


def num_targets(classifier: Classifier, objective: str, layer: str) -> int:
    """How many indices the objective has: classes, channels of ``layer``, or dense units."""
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    if objective in ("logit", "probability"):
        return jax.eval_shape(classifier.logits, x).shape[-1]
    return jax.eval_shape(lambda a: classifier.features(a, layer), x).shape[-1]


# ---- transforms ----------------------------------------------------------------------------------


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of one image (H, W, C), zero padding, radius ceil(2 sigma)."""
    radius = max(1, math.ceil(2 * sigma))
    t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[-1]
    kernel = (k[:, None] * k[None, :])[:, :, None, None] * jnp.eye(c, dtype=x.dtype)[None, None]
    return jax.lax.conv_general_dilated(
        x[None], kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def total_variation(x: jax.Array) -> jax.Array:
    """Sum of squared differences between vertical and horizontal neighbours of (H, W, C)."""
    return jnp.sum((x[1:] - x[:-1]) ** 2) + jnp.sum((x[:, 1:] - x[:, :-1]) ** 2)


def jitter_image(x: jax.Array, key: jax.Array, pixels: int) -> jax.Array:
    """Roll (H, W, C) by a random (dy, dx) in [-pixels, pixels]."""
    shift = jax.random.randint(key, (2,), -pixels, pixels + 1)
    return jnp.roll(x, (shift[0], shift[1]), axis=(0, 1))


# ---- parameterizations ---------------------------------------------------------------------------


def _to_image(parameterization: str, decoder, param: jax.Array) -> jax.Array:
    if parameterization == "pixels":
        return param
    decode = decoder.generate if parameterization == "generator" else decoder.decode
    return decode(param[None])[0]


def _init_param(parameterization: str, decoder, key: jax.Array) -> jax.Array:
    if parameterization == "pixels":  # faint noise on the black MNIST background
        return 0.1 * jax.random.uniform(key, (28, 28, 1))
    sample_codes = getattr(decoder, "sample_codes", None)  # a GeneratorModel's own prior
    if sample_codes is not None:
        return sample_codes(key, 1)[0]
    return jax.random.normal(key, (decoder.latent_dim,))  # a sample of N(0, I)


def _project(parameterization: str, reg: Regularizers, param: jax.Array, step) -> jax.Array:
    if parameterization == "pixels":
        if reg.blur_every:
            param = jax.lax.cond(
                (step + 1) % reg.blur_every == 0,
                lambda p: gaussian_blur(p, reg.blur_sigma),
                lambda p: p,
                param,
            )
        return jnp.clip(param, 0.0, 1.0) if reg.clip else param
    return param if reg.latent_clip is None else jnp.clip(param, -reg.latent_clip, reg.latent_clip)


def _render_one(
    classifier,
    decoder,
    index,
    key,
    *,
    objective,
    layer,
    parameterization,
    steps,
    lr,
    reg: Regularizers,
):
    """Optimize one (target, start): returns (param, trajectory (steps,), initial, final)."""
    tx = optax.adam(lr)
    value_of = lambda img: objective_value(classifier, objective, layer, img[None], index)[0]  # noqa: E731
    init_key, jitter_key = jax.random.split(key)
    param = _init_param(parameterization, decoder, init_key)

    def loss(p, step):
        image = _to_image(parameterization, decoder, p)
        seen = (
            jitter_image(image, jax.random.fold_in(jitter_key, step), reg.jitter)
            if reg.jitter
            else image
        )
        value = value_of(seen)
        penalty = 0.0
        if reg.l2 and parameterization == "pixels":
            penalty += reg.l2 * jnp.sum(image**2)
        if reg.tv and parameterization == "pixels":
            penalty += reg.tv * total_variation(image)
        if reg.latent_l2 and parameterization != "pixels":
            penalty += reg.latent_l2 * jnp.sum(p**2)
        return penalty - value, value

    def step_fn(carry, step):
        p, opt_state = carry
        (_, value), grad = jax.value_and_grad(loss, has_aux=True)(p, step)
        updates, opt_state = tx.update(grad, opt_state, p)
        p = _project(parameterization, reg, optax.apply_updates(p, updates), step)
        return (p, opt_state), value

    initial = value_of(_to_image(parameterization, decoder, param))
    (param, _), trajectory = jax.lax.scan(step_fn, (param, tx.init(param)), jnp.arange(steps))
    image = _to_image(parameterization, decoder, param)
    prediction = jnp.argmax(classifier.logits(image[None])[0])
    return image, trajectory, initial, value_of(image), prediction, param


@partial(
    jit, static_argnames=("objective", "layer", "parameterization", "steps", "starts", "lr", "reg")
)
def _render(
    classifier, decoder, targets, key, *, objective, layer, parameterization, steps, starts, lr, reg
):
    one = partial(
        _render_one,
        classifier,
        decoder,
        objective=objective,
        layer=layer,
        parameterization=parameterization,
        steps=steps,
        lr=lr,
        reg=reg,
    )
    keys = jax.random.split(key, starts)
    per_target = jax.vmap(one, in_axes=(None, 0))  # over starts
    return jax.vmap(per_target, in_axes=(0, None))(targets, keys)  # over targets


def maximize(
    classifier: Classifier,
    objective: str = "logit",
    targets: Optional[Sequence[int]] = None,
    *,
    key: jax.Array,
    layer: str = "block3",
    starts: int = 4,
    steps: int = 200,
    lr: float = 0.05,
    parameterization: str = "pixels",
    decoder: Any = None,
    regularizers: Regularizers = Regularizers(),
) -> AMResult:
    """Activation maximization by gradient ascent (Adam), all targets x starts at once.

    Args:
      classifier: the CNN whose units are maximized.
      objective: one of ``OBJECTIVES`` (default ``"logit"``).
      targets: class / channel / unit indices (default: all ten classes, or every channel/unit).
      key: ``jax.random.key``; start s of every target uses ``split(key, starts)[s]``.
      layer: the conv layer of the ``"channel"`` objective (conv1..conv6, block1..3; default
      block3).
      starts: random starts per target (4). steps: optimization steps (200).
      lr: Adam learning rate (0.05; pixels live in [0, 1], codes are ~N(0, 1)).
      parameterization: ``"pixels"`` (default), ``"generator"`` (DGN-AM) or ``"vae"`` (decoder
      code).
      decoder: the ``GeneratorModel`` / ``VAEModel`` of a latent parameterization.
      regularizers: see ``Regularizers``; ``NO_REGULARIZERS`` turns all off.

    Returns:
      ``AMResult`` with images (T, S, 28, 28, 1) and the objective's trajectory (T, S, steps).
    """
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if parameterization not in PARAMETERIZATIONS:
        raise InputError(
            f"unknown parameterization {parameterization!r}; choose one of "
            f"{', '.join(PARAMETERIZATIONS)}"
        )
    if parameterization != "pixels" and decoder is None:
        raise InputError(
            f"parameterization {parameterization!r} needs decoder= (a trained "
            f"{'GeneratorModel' if parameterization == 'generator' else 'VAEModel'})"
        )
    method = "generate" if parameterization == "generator" else "decode"
    if parameterization != "pixels" and not hasattr(decoder, method):
        raise InputError(
            f"parameterization {parameterization!r} needs a decoder with .{method}(z), "
            f"got {type(decoder).__name__}"
        )
    layer = resolve_layer(layer) if objective == "channel" else "dense"
    if objective == "channel" and layer not in CONV_LAYERS:
        raise InputError(
            f"the channel objective needs a conv layer ({', '.join(CONV_LAYERS)}), got {layer!r}"
        )
    for name, value in (("starts", starts), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr}")
    regularizers.validate()
    n = num_targets(classifier, objective, layer)
    targets = np.arange(n) if targets is None else np.asarray(targets)
    if targets.ndim != 1 or len(targets) == 0 or not np.issubdtype(targets.dtype, np.integer):
        raise InputError(f"targets must be a non-empty 1-D sequence of ints, got {targets!r}")
    if targets.min() < 0 or targets.max() >= n:
        raise InputError(
            f"targets must lie in [0, {n - 1}] for objective {objective!r}, got "
            f"{targets.min()}..{targets.max()}"
        )
    images, trajectory, initial, final, predictions, params = _render(
        classifier,
        decoder if parameterization != "pixels" else None,
        jnp.asarray(targets, jnp.int32),
        key,
        objective=objective,
        layer=layer,
        parameterization=parameterization,
        steps=int(steps),
        starts=int(starts),
        lr=float(lr),
        reg=regularizers,
    )
    return AMResult(
        images, trajectory, initial, final, predictions, params, jnp.asarray(targets, jnp.int32)
    )


def success_rate(result: AMResult) -> float:
    """Fraction of (target, start) images the CNN classifies as their target (class objectives)."""
    return float(jnp.mean(result.predictions == result.targets[:, None]))
