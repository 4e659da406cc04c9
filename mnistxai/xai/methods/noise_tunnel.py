"""A noise tunnel over any registered method (Captum's ``NoiseTunnel``): the method's maps of
noisy copies of each image, aggregated as SmoothGrad, SmoothGrad-Squared or VarGrad."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation
from mnistxai.xai._inputs import real
from mnistxai.xai.methods.smoothgrad import NOISE, NoiseKind
from mnistxai.xai.registry import METHODS, register

SAMPLES = 5  # Captum's nt_samples


def _method(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in METHODS or value == "noise_tunnel":
        raise InputError(
            f"{name} must name a registered method other than noise_tunnel, got {value!r}"
        )
    return value


def _method_options(name: str, value: Any) -> tuple:
    if isinstance(value, dict):
        value = tuple(value.items())
    try:
        pairs = tuple(sorted((str(k), v) for k, v in value))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a dict of the method's options, got {value!r}") from None
    for k, v in pairs:
        if isinstance(v, (np.ndarray, jax.Array, list)):
            raise InputError(
                f"{name}[{k!r}] is an array: noise_tunnel passes only plain values (numbers, "
                f"strings, flags) on to its method"
            )
    return pairs


def _check(options: dict, batch: int, classifier) -> dict:
    inner = METHODS[options["method"]]
    if inner.background or inner.needs_key(inner.defaults()):
        raise InputError(
            f"noise_tunnel needs a deterministic method without a background; "
            f"{inner.name} is {'given a background' if inner.background else 'stochastic'}"
        )
    given = dict(options["method_options"])
    if "chunk_size" in inner.options and "chunk_size" not in given:
        given["chunk_size"] = options["chunk_size"]
    parsed = inner.parse(
        given, batch * options["samples"], classifier, f"{inner.name} in noise_tunnel"
    )
    if inner.needs_key(parsed):
        raise InputError(f"noise_tunnel cannot run {inner.name} with random options {given}")
    return {**options, "method_options": tuple(sorted(parsed.items()))}


def _passes(options: dict) -> tuple[float, float]:
    inner = METHODS[options["method"]]
    gradients, forwards = inner.model_passes(dict(options["method_options"]))
    return options["samples"] * gradients, options["samples"] * forwards + 1


@register(
    "noise_tunnel",
    model="classifier",
    family="gradient",
    paper="Smilkov et al. 2017, arXiv:1706.03825; Adebayo et al. 2018, arXiv:1810.03307",
    checks={"method": _method, "method_options": _method_options, "noise": real(0.0, 1.0)},
    check=_check,
    stochastic=True,
    passes=_passes,
    quick={"samples": 4, "method_options": {"steps": 8}},
    smoke={"samples": 2, "method_options": {"steps": 2}},
)
def noise_tunnel(
    classifier,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    method: str = "integrated_gradients",
    kind: NoiseKind = "smoothgrad",
    samples: int = SAMPLES,
    noise: float = NOISE,
    method_options: Any = (),
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """A noise tunnel over ``method`` (Captum's ``NoiseTunnel``; Smilkov et al. 2017,
    arXiv:1706.03825): ``method``'s maps of ``samples`` noisy copies x + N(0, sigma^2) of each
    image, aggregated by ``kind``: "smoothgrad" (their mean), "smoothgrad_sq" (the mean of their
    squares, Hooker et al. 2019) or "vargrad" (their population variance, Adebayo et al. 2018).

    Options: ``method`` (a deterministic registered method without a background; default
    "integrated_gradients", as Captum's example), ``method_options`` (a dict of its options,
    plain values only; its ``chunk_size`` defaults to this one's), ``samples`` (5, Captum's
    ``nt_samples``), ``noise`` (0.15: sigma as a fraction of the image's value range, PAIR's
    ``stdev_spread`` convention like ``smoothgrad``; Captum takes an absolute ``stdevs``,
    default 1.0, which on [0, 1] images drowns the digit), ``key`` required. The targets are the
    clean images' (predicted when not given). Example i's sample s is drawn from
    ``fold_in(split(key, B)[i], s)``, exactly as ``smoothgrad``'s, so over ``saliency`` with
    ``signed=True`` the three kinds equal ``smoothgrad(signed=True)``, ``smoothgrad_sq`` and
    ``vargrad``. The noisy copies of the whole batch go through ``method`` as one batch (one
    program; ``chunk_size`` bounds what the model sees at once). Extras: the method's, averaged
    over the samples. x (B, H, W, C) -> (B, H, W).
    """
    inner = METHODS[method]
    options = dict(method_options)
    if targets is None:
        targets = jnp.argmax(classifier.logits(x), -1)
    targets = targets.astype(jnp.int32)
    b = x.shape[0]
    keys = jax.random.split(key, b)
    draws = jax.vmap(
        lambda k: jax.vmap(
            lambda s: jax.random.normal(jax.random.fold_in(k, s), x.shape[1:], x.dtype)
        )(jnp.arange(samples))
    )(keys)
    sigma = noise * (x.max((1, 2, 3)) - x.min((1, 2, 3)))
    noisy = x[:, None] + sigma[:, None, None, None, None] * draws
    out = inner.call(
        classifier,
        noisy.reshape((b * samples,) + x.shape[1:]),
        jnp.repeat(targets, samples),
        streams.fold(key, "noise_tunnel_method"),
        options,
    )
    maps = out.attributions.reshape((b, samples) + out.attributions.shape[1:])
    mean = maps.mean(1)
    if kind == "smoothgrad":
        agg = mean
    elif kind == "smoothgrad_sq":
        agg = (maps * maps).mean(1)
    else:  # E[a^2] - E[a]^2 can round a hair below 0
        agg = jnp.maximum((maps * maps).mean(1) - mean * mean, 0.0)
    extras = {
        name: v.reshape((b, samples) + v.shape[1:]).mean(1, dtype=x.dtype)
        for name, v in out.extras.items()
    }
    return Explanation(agg, targets, extras)
