"""DeepLIFT (Shrikumar et al. 2017) with the Rescale rule, and DeepLIFT-SHAP over a background.

Both run the network on the input and on a reference (baseline) side by side and propagate the
target's difference from reference back through *multipliers*: each ReLU's Delta-out / Delta-in
and each max-pool's routed difference / Delta-in replace the local gradients (``jax.custom_vjp``
on the folded layers of the model's specification; convs, BatchNorm folded into them, dense
layers and global average pooling are linear and keep their gradients). The attribution is
(x - x0) times the input multiplier, and it sums to F(x) - F(x0) ("summation to delta"), whose
error is returned per example as ``convergence_delta``, like IG's.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.models.cnn import max_pool_2x2
from mnistxai.models.spec import Folded
from mnistxai.util.errors import InputError
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    at_targets,
    over_examples,
    plan,
    sample_sum,
    target_or_argmax,
)
from mnistxai.xai._fast import affine_step, route_to_maxima
from mnistxai.xai._inputs import as_images, real
from mnistxai.xai.methods.integrated_gradients import (
    baseline_option,
    check_baseline,
    make_baseline,
)
from mnistxai.xai.registry import register

# Captum's threshold below which |Delta-in| counts as zero and the plain gradient is used
EPS = 1e-10


def _rescaled(multiplier, delta_in, gradient):
    small = jnp.abs(delta_in) < EPS
    return jnp.where(small, gradient, multiplier / jnp.where(small, 1.0, delta_in))


@jax.custom_vjp
def rescale_relu(z: jax.Array, z0: jax.Array) -> jax.Array:
    """ReLU of ``z`` whose backward pass multiplies by (ReLU(z) - ReLU(z0)) / (z - z0), the
    Rescale rule against the reference pre-activation ``z0`` (the gradient where |z - z0| <
    1e-10, as Captum). ``z0`` gets no cotangent."""
    return jnp.maximum(z, 0)


def _rescale_relu_fwd(z, z0):
    return jnp.maximum(z, 0), (z, z0)


def _rescale_relu_bwd(res, g):
    z, z0 = res
    dz = z - z0
    multiplier = g * (jnp.maximum(z, 0) - jnp.maximum(z0, 0))
    return _rescaled(multiplier, dz, g * (z > 0)), jnp.zeros_like(z0)


rescale_relu.defvjp(_rescale_relu_fwd, _rescale_relu_bwd)


@jax.custom_vjp
def rescale_pool(z: jax.Array, z0: jax.Array) -> jax.Array:
    """2x2 max-pool of ``z`` with Captum's DeepLIFT rule for max-pooling against the reference
    ``z0``: with y, y0 the two pooled maps and m = max(y, y0), the difference m - y0 goes to the
    window maxima of ``z`` and y - m to those of ``z0``; their sum over Delta-in is the
    multiplier (the plain gradient where |Delta-in| < 1e-10). Each window then passes on exactly
    y - y0."""
    return max_pool_2x2(z)


def _rescale_pool_fwd(z, z0):
    return max_pool_2x2(z), (z, z0)


def _rescale_pool_bwd(res, g):
    z, z0 = res
    y, y0 = max_pool_2x2(z), max_pool_2x2(z0)
    top = jnp.maximum(y, y0)
    routed = route_to_maxima(z, y, g * (top - y0)) + route_to_maxima(z0, y0, g * (y - top))
    return _rescaled(routed, z - z0, route_to_maxima(z, y, g)), jnp.zeros_like(z0)


rescale_pool.defvjp(_rescale_pool_fwd, _rescale_pool_bwd)


def pair_logits(layers: list[Folded]):
    """``fn(x, x0) -> (logits, reference logits)`` of the folded ``layers`` whose gradient with
    respect to ``x`` is the DeepLIFT (Rescale) multiplier; ``x0`` is not differentiated. An
    unknown layer kind is an ``InputError``."""
    steps = []
    for layer in layers:
        if layer.kind in ("conv", "dense", "gap"):
            steps.append(("affine", affine_step(layer)))
        elif layer.kind in ("relu", "maxpool"):
            steps.append((layer.kind, None))
        else:
            raise InputError(f"DeepLIFT has no rule for layer kind {layer.kind!r}")

    def fn(x, x0):
        x0 = jax.lax.stop_gradient(x0)
        for kind, step in steps:
            if kind == "affine":
                x, x0 = step(x), step(x0)
            elif kind == "relu":
                x, x0 = rescale_relu(x, x0), jnp.maximum(x0, 0)
            else:
                x, x0 = rescale_pool(x, x0), max_pool_2x2(x0)
        return x, x0

    return fn


def multiplier_sum(pair, xi, refs, t):
    """sum over references r of (xi - r) * multiplier(xi, r) for one example's target ``t`` (or
    its prediction on the input when None); refs (k, H, W, C). Returns (sum (H, W, C), sum of
    F(xi) - F(r) over refs, target)."""
    xs = jnp.broadcast_to(xi, refs.shape)
    (logits, ref_logits), vjp = jax.vjp(lambda v: pair(v, refs), xs)
    t = target_or_argmax(logits[0], t)
    cotangent = jax.nn.one_hot(jnp.full(refs.shape[0], t), logits.shape[-1], dtype=logits.dtype)
    (m,) = vjp((cotangent, jnp.zeros_like(ref_logits)))
    gap = at_targets(logits - ref_logits, jnp.full(refs.shape[0], t)).sum()
    return ((xs - refs) * m).sum(0), gap, t


@register(
    "deeplift",
    model="folded",
    family="propagation",
    paper="Shrikumar et al. 2017, arXiv:1704.02685",
    checks={"baseline": baseline_option, "blur_sigma": real(0.0, open_lo=True)},
    check=check_baseline,
    stochastic=lambda o: isinstance(o["baseline"], str) and o["baseline"] == "uniform",
    passes=lambda o: (1, 1),
)
def deeplift(
    layers: list[Folded],
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """DeepLIFT, Rescale rule (Shrikumar et al. 2017, arXiv:1704.02685), signed, as Captum's
    ``DeepLift`` (multiply_by_inputs=True).

    ``layers``: the folded layers of the model (``mnistxai.xai.classifier_layers``); the
    baseline options are IG's: 'black' (default), 'white', 'blurred' (``blur_sigma``),
    'uniform' (needs ``key``) or images (1 or B). ReLUs use Delta-out / Delta-in and max-pools
    Captum's rule (``rescale_pool``), in one forward pass of input and reference and one
    modified backward. Departures from Captum: a window's tied maxima share its difference
    evenly (Captum's max-unpool sends it to the first), and BatchNorm is folded into the conv
    before it, which changes nothing since both are linear at inference. Extras:
    ``convergence_delta`` (B,) = sum(attributions) - (F(x) - F(x0)), Captum's sign; zero up to
    rounding, since every rule passes its layer's difference on exactly.
    """
    pair = pair_logits(layers)
    baselines = make_baseline(baseline, x, key, blur_sigma)

    def one(xi_bi, t, _):
        xi, bi = xi_bi
        attr, gap, t = multiplier_sum(pair, xi, bi[None], t)
        return attr.sum(-1), t, {"convergence_delta": attr.sum() - gap}

    return over_examples(one, (x, baselines), targets, chunk_size=chunk_size)


def _check_shap(options: dict, batch: int, classifier) -> dict:
    if options["background"] is None:
        raise InputError(
            "deeplift_shap needs background=(N, 28, 28[, 1]) reference images (e.g. 100 "
            "training images)"
        )
    return options


@register(
    "deeplift_shap",
    model="folded",
    family="propagation",
    paper="Lundberg & Lee 2017, arXiv:1705.07874 (DeepLIFT over a background)",
    checks={"background": lambda name, v: as_images(v, name)},
    check=_check_shap,
    background=True,
    passes=lambda o: (100 if o["background"] is None else len(o["background"]), 1),
)
def deeplift_shap(
    layers: list[Folded],
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    background: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """DeepLIFT-SHAP (Lundberg & Lee 2017, arXiv:1705.07874): DeepLIFT averaged over every
    reference in ``background`` (N, H, W, C; the pipelines supply 100 training images), as
    Captum's ``DeepLiftShap`` and shap's ``DeepExplainer`` do. Deterministic: every reference is
    used, none drawn. The target is the prediction on x unless given. Extras:
    ``convergence_delta`` (B,) = sum(attributions) - mean over references of (F(x) - F(x0)).
    References go through the model ``chunk_size // examples`` at a time.
    """
    pair = pair_logits(layers)
    n_refs = background.shape[0]
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi, t, _):
        t = target_or_argmax(pair(xi[None], background[:1])[0][0], t)

        def chunk(idx):
            attr, gap, _ = multiplier_sum(pair, xi, background[idx], t)
            return attr, gap

        attr, gap = sample_sum(chunk, n_refs, per_pass)
        attr, gap = attr / n_refs, gap / n_refs
        return attr.sum(-1), t, {"convergence_delta": attr.sum() - gap}

    return over_examples(one, x, targets, chunk_size=chunk_size)
