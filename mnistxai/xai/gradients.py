"""Plain-gradient attributions: saliency, gradient x input, the SmoothGrad family, guided backprop.

All take ``logits_fn`` (B, H, W, C) -> (B, K) and explain the target *logit* (pre-softmax), as
Captum and PAIR saliency do when given a logits model. Inputs x are (B, H, W, C); maps (B, H, W).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (DEFAULT_CHUNK, Explanation, LogitsFn, over_examples, plan,
                                predict_one, reduce_channels, sample_sum, target_grads)


def saliency(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
             signed: bool = False, chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Vanilla gradient |dy_t/dx| (Simonyan et al. 2014, arXiv:1312.6034).

    ``signed=False`` (default) gives the max over channels of |gradient| (Simonyan et al.;
    Captum's ``Saliency``, abs=True, returns |gradient| per channel); ``signed=True`` gives the
    raw gradient summed over channels (PAIR's GradientSaliency returns it per channel). MNIST has
    one channel, so both equal the libraries' maps.
    The target logit's forward pass also yields the predicted class when ``targets`` is None.
    """
    def one(xi, t, _):
        g, _, t = target_grads(logits_fn, xi[None], t)
        return reduce_channels(g[0], signed), t, {}
    return over_examples(one, x, targets, chunk_size=chunk_size)


def grad_x_input(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
                 chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Gradient x input, signed, summed over channels (Shrikumar et al. 2016, arXiv:1605.01713;
    Captum ``InputXGradient``). Pixels that are 0 get 0, so black background is never credited."""
    def one(xi, t, _):
        g, _, t = target_grads(logits_fn, xi[None], t)
        return (g[0] * xi).sum(-1), t, {}
    return over_examples(one, x, targets, chunk_size=chunk_size)


def _noisy_moments(logits_fn, key, xi, t, samples, noise, per_pass):
    """Sum over noise samples of the gradient and of its square, sample s drawn from fold_in(key, s).

    The noise std is ``noise`` x (max - min) of the example, PAIR's ``stdev_spread`` convention.
    """
    sigma = noise * (xi.max() - xi.min())

    def chunk(idx):
        eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), xi.shape, xi.dtype))(idx)
        g, _, _ = target_grads(logits_fn, xi[None] + sigma * eps, t)
        return g.sum(0), (g * g).sum(0)
    return sample_sum(chunk, samples, per_pass)


NOISE_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def check_kinds(kinds) -> tuple[str, ...]:
    """``kinds`` as a tuple of distinct ``NOISE_KINDS``, or a ValueError naming the problem."""
    kinds = tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(NOISE_KINDS):
        raise ValueError(f"kinds must be distinct names among {', '.join(NOISE_KINDS)}, got {kinds!r}")
    return kinds


def noise_tunnel(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
                 key: jax.Array, kinds: tuple[str, ...] = NOISE_KINDS, samples: int = 50,
                 noise: float = 0.15, signed: bool = False,
                 chunk_size: int = DEFAULT_CHUNK) -> dict[str, Explanation]:
    """SmoothGrad, SmoothGrad-Squared and VarGrad (those in ``kinds``) from one set of noisy
    gradients, as Captum's ``NoiseTunnel`` types: {kind: Explanation}. Each map equals its own
    method's for the same key and options, at the cost of one of them."""
    kinds = check_kinds(kinds)
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi, t, k):
        t = predict_one(logits_fn, xi, t)
        s1, s2 = _noisy_moments(logits_fn, k, xi, t, samples, noise, per_pass)
        mean, mean_sq = s1 / samples, s2 / samples
        maps = {"smoothgrad": lambda: reduce_channels(mean, signed),
                "smoothgrad_sq": lambda: mean_sq.sum(-1),
                # E[g^2] - E[g]^2 can round a hair below 0
                "vargrad": lambda: jnp.maximum(mean_sq - mean * mean, 0.0).sum(-1)}
        return tuple(maps[kind]() for kind in kinds), t, {}
    out = over_examples(one, x, targets, key, chunk_size=chunk_size)
    return {kind: Explanation(out.attributions[i], out.targets, {}) for i, kind in enumerate(kinds)}


def _smooth(kind: str):
    def method(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None, *,
               key: jax.Array, samples: int = 50, noise: float = 0.15, signed: bool = False,
               chunk_size: int = DEFAULT_CHUNK) -> Explanation:
        return noise_tunnel(logits_fn, x, targets, key=key, kinds=(kind,), samples=samples,
                            noise=noise, signed=signed, chunk_size=chunk_size)[kind]
    return method


smoothgrad = _smooth("smoothgrad")
smoothgrad.__name__ = "smoothgrad"
smoothgrad.__doc__ = """SmoothGrad: the gradient averaged over noisy copies of x (Smilkov et al. 2017,
arXiv:1706.03825).

Options: ``samples`` (50), ``noise`` std as a fraction of the example's value range (0.15, PAIR's
``stdev_spread``; Captum takes an absolute ``stdevs``), ``signed`` (False: |mean gradient| like the
paper's figures; Captum's NoiseTunnel over ``Saliency`` averages |g| instead, and PAIR's default
``magnitude=True`` averages g^2, i.e. SmoothGrad-Squared), ``key`` required.
Example i uses ``split(key, B)[i]`` and its sample s ``fold_in(that, s)``: results do not depend
on ``chunk_size``. With noise=0 it equals ``saliency``.
"""

smoothgrad_sq = _smooth("smoothgrad_sq")
smoothgrad_sq.__name__ = "smoothgrad_sq"
smoothgrad_sq.__doc__ = """SmoothGrad-Squared: mean of squared gradients over noisy copies (Hooker et
al. 2019, arXiv:1806.10758; Captum NoiseTunnel 'smoothgrad_sq'). Non-negative. Options as smoothgrad
(``signed`` is ignored)."""

vargrad = _smooth("vargrad")
vargrad.__name__ = "vargrad"
vargrad.__doc__ = """VarGrad: variance of the gradient over noisy copies (Adebayo et al. 2018,
arXiv:1810.03307; Captum NoiseTunnel 'vargrad'). Non-negative, population variance (divides by n
like Captum) of the signed gradient; Captum's NoiseTunnel over ``Saliency`` (abs=True) gives the
variance of |g| instead. Options as smoothgrad (``signed`` is ignored)."""


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive gradients at positive inputs (guided backprop)."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, 0.0),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_backprop(guided_logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None,
                    *, chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Guided backpropagation (Springenberg et al. 2015, arXiv:1412.6806), signed like Captum's.

    ``guided_logits_fn`` must use ``guided_relu`` for its ReLUs (for a Classifier:
    ``classifier.with_activation(guided_relu).logits``); the result is its signed input gradient.
    """
    return saliency(guided_logits_fn, x, targets, signed=True, chunk_size=chunk_size)
