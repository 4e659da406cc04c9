"""The SmoothGrad family: SmoothGrad, SmoothGrad-Squared and VarGrad, from one set of noisy
gradients (``noisy_gradients``), registered as a group so explanation runs compute them together."""

from __future__ import annotations

import typing
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from mnistxai.util.errors import InputError
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    LogitsFn,
    over_examples,
    plan,
    predict_one,
    reduce_channels,
    sample_sum,
    target_grads,
)
from mnistxai.xai._inputs import real
from mnistxai.xai.registry import Group, register

NoiseKind = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
NOISE_KINDS: tuple[str, ...] = typing.get_args(NoiseKind)
SAMPLES, NOISE = 50, 0.15  # the defaults of all three
CHECKS = {"noise": real(0.0, 1.0)}  # a std beyond the value range only blurs the map away


def _noisy_moments(logits_fn, key, xi, t, samples, noise, per_pass):
    """Sum over noise samples of the gradient and of its square, sample s drawn from fold_in(key,
    s).

    The noise std is ``noise`` x (max - min) of the example, PAIR's ``stdev_spread`` convention.
    """
    sigma = noise * (xi.max() - xi.min())

    def chunk(idx):
        eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), xi.shape, xi.dtype))(
            idx
        )
        g, _, _ = target_grads(logits_fn, xi[None] + sigma * eps, t)
        return g.sum(0), (g * g).sum(0)

    return sample_sum(chunk, samples, per_pass)


def check_kinds(kinds) -> tuple[str, ...]:
    """``kinds`` as a tuple of distinct ``NOISE_KINDS``, or an InputError naming the problem."""
    kinds = tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(NOISE_KINDS):
        raise InputError(
            f"kinds must be distinct names among {', '.join(NOISE_KINDS)}, got {kinds!r}"
        )
    return kinds


def noisy_gradients(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    kinds: tuple[str, ...] = NOISE_KINDS,
    samples: int = SAMPLES,
    noise: float = NOISE,
    signed: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Explanation]:
    """SmoothGrad, SmoothGrad-Squared and VarGrad (those in ``kinds``) from one set of noisy
    gradients, as Captum's ``NoiseTunnel`` types: {kind: Explanation}. Each map equals its own
    method's for the same key and options, at the cost of one of them. ``signed`` is
    smoothgrad's option."""
    kinds = check_kinds(kinds)
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi, t, k):
        t = predict_one(logits_fn, xi, t)
        s1, s2 = _noisy_moments(logits_fn, k, xi, t, samples, noise, per_pass)
        mean, mean_sq = s1 / samples, s2 / samples
        maps = {
            "smoothgrad": lambda: reduce_channels(mean, signed),
            "smoothgrad_sq": lambda: mean_sq.sum(-1),
            # E[g^2] - E[g]^2 can round a hair below 0
            "vargrad": lambda: jnp.maximum(mean_sq - mean * mean, 0.0).sum(-1),
        }
        return tuple(maps[kind]() for kind in kinds), t, {}

    out = over_examples(one, x, targets, key, chunk_size=chunk_size)
    return {kind: Explanation(out.attributions[i], out.targets, {}) for i, kind in enumerate(kinds)}


# explanation runs compute members with equal options together, all with smoothgrad's key
NOISE_TUNNEL = Group("smoothgrad", noisy_gradients, private=("signed",))
FACTS = dict(
    model="logits",
    family="gradient",
    checks=CHECKS,
    stochastic=True,
    group=NOISE_TUNNEL,
    passes=lambda o: (o["samples"], 1),
    quick={"samples": 16},
    smoke={"samples": 2},
)


@register("smoothgrad", paper="Smilkov et al. 2017, arXiv:1706.03825", **FACTS)
def smoothgrad(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = SAMPLES,
    noise: float = NOISE,
    signed: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """SmoothGrad: the gradient averaged over noisy copies of x (Smilkov et al. 2017,
    arXiv:1706.03825).

    Options: ``samples`` (50), ``noise`` std as a fraction of the example's value range, in
    [0, 1] (0.15, PAIR's ``stdev_spread``; Captum takes an absolute ``stdevs``), ``signed``
    (False: |mean gradient| like the paper's figures; Captum's NoiseTunnel over ``Saliency``
    averages |g| instead, and PAIR's default ``magnitude=True`` averages g^2, i.e.
    SmoothGrad-Squared), ``key`` required. Example i uses ``split(key, B)[i]`` and its sample s
    ``fold_in(that, s)``: results do not depend on ``chunk_size``. With noise=0 it equals
    ``saliency``.
    """
    return noisy_gradients(
        logits_fn,
        x,
        targets,
        key=key,
        kinds=("smoothgrad",),
        samples=samples,
        noise=noise,
        signed=signed,
        chunk_size=chunk_size,
    )["smoothgrad"]


@register("smoothgrad_sq", paper="Hooker et al. 2019, arXiv:1806.10758", **FACTS)
def smoothgrad_sq(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = SAMPLES,
    noise: float = NOISE,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """SmoothGrad-Squared: the mean of squared gradients over noisy copies (Hooker et al. 2019,
    arXiv:1806.10758; Captum NoiseTunnel 'smoothgrad_sq'). Non-negative. Options ``samples``
    and ``noise`` as smoothgrad's (no ``signed``)."""
    return noisy_gradients(
        logits_fn,
        x,
        targets,
        key=key,
        kinds=("smoothgrad_sq",),
        samples=samples,
        noise=noise,
        chunk_size=chunk_size,
    )["smoothgrad_sq"]


@register("vargrad", paper="Adebayo et al. 2018, arXiv:1810.03307", **FACTS)
def vargrad(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = SAMPLES,
    noise: float = NOISE,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """VarGrad: the variance of the gradient over noisy copies (Adebayo et al. 2018,
    arXiv:1810.03307; Captum NoiseTunnel 'vargrad'). Non-negative, population variance (divides
    by n like Captum) of the signed gradient; Captum's NoiseTunnel over ``Saliency`` (abs=True)
    gives the variance of |g| instead. Options ``samples`` and ``noise`` as smoothgrad's (no
    ``signed``)."""
    return noisy_gradients(
        logits_fn,
        x,
        targets,
        key=key,
        kinds=("vargrad",),
        samples=samples,
        noise=noise,
        chunk_size=chunk_size,
    )["vargrad"]


def explain_noise_tunnel(kinds, classifier, images, targets=None, *, key=None, **options):
    """``mnistxai.xai.explain_together`` for the SmoothGrad family: several of smoothgrad,
    smoothgrad_sq and vargrad (``kinds``) from one set of noisy gradients, {kind: Explanation}."""
    from mnistxai.xai.api import explain_together

    return explain_together(check_kinds(kinds), classifier, images, targets, key=key, **options)
