"""The model-parameter randomization sanity check (Adebayo et al. 2018, arXiv:1810.03292).

Layers are re-initialized cascading from the output towards the input; after each step the maps
are recomputed and compared with the trained model's by Spearman rank correlation and SSIM. A
method whose maps barely change while the model is destroyed does not explain the model.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.jit import jit
from mnistxai.models.cnn import init_cnn
from mnistxai.models.spec import CNN_SPEC
from mnistxai.util.errors import InputError
from mnistxai.xai.metrics._common import check_inputs, example_keys, minmax, spearman
from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.xai.metrics.robustness import ExplainFn

# the default CNN's stages from the top: each re-initializes one more layer (a conv with its
# BatchNorm); a classifier's own stages come from its specification
CASCADE = tuple(stage for stage, _ in CNN_SPEC.cascade)


def ssim(a: jax.Array, b: jax.Array, *, data_range: float = 1.0, win: int = 7) -> jax.Array:
    """Structural similarity (Wang et al. 2004) of two (H, W) images, as
    ``skimage.metrics.structural_similarity`` computes it by default (Quantus's ``ssim``):
    a ``win`` x ``win`` uniform window, K1 = 0.01, K2 = 0.03, sample covariances, the mean over
    the pixels whose window lies inside the image."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    window = jnp.full((win, win), 1.0 / win**2, jnp.float32)
    filt = functools.partial(jax.scipy.signal.convolve2d, in2=window, mode="valid")
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    ua, ub = filt(a), filt(b)
    cov = win**2 / (win**2 - 1)
    va, vb = cov * (filt(a * a) - ua * ua), cov * (filt(b * b) - ub * ub)
    vab = cov * (filt(a * b) - ua * ub)
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return s.mean()


def cascading_randomization(
    classifier, key: jax.Array, stages: Optional[Sequence[str]] = None
) -> list:
    """``[(stage, classifier)]``: ``classifier`` with the layers of ``stages`` (default: every
    stage of its specification's ``cascade``, from the output down) re-initialized cumulatively
    from the top (stage k re-initializes stages[0..k]).

    Fresh values come from the CNN's own initializers with ``key`` (Adebayo et al. re-initialize
    from the training initialization). A conv stage also resets its BatchNorm (scale 1, bias 0,
    running mean 0, variance 1), as Quantus's per-module ``reset_parameters`` does in two steps.
    """
    spec = getattr(getattr(classifier, "model", None), "spec", CNN_SPEC)
    scopes = dict(spec.cascade)
    stages = tuple(scopes) if stages is None else tuple(stages)
    unknown = [s for s in stages if s not in scopes]
    if unknown:
        raise InputError(f"unknown layer(s) {unknown}; the cascade is {', '.join(scopes)}")
    fresh = init_cnn(classifier.model, key)
    params = dict(classifier.variables["params"])
    stats = dict(classifier.variables["batch_stats"])
    out = []
    for stage in stages:
        for scope in scopes[stage]:
            params[scope] = fresh["params"][scope]
            if scope in fresh["batch_stats"]:
                stats[scope] = fresh["batch_stats"][scope]
        out.append(
            (
                stage,
                classifier.replace(variables={"params": dict(params), "batch_stats": dict(stats)}),
            )
        )
    return out


def _similarities(reference, maps, absolute):
    if absolute:
        reference, maps = jnp.abs(reference), jnp.abs(maps)
    rho = jax.vmap(spearman)(reference, maps)
    s = jax.vmap(ssim)(minmax(reference), minmax(maps))
    return rho, s


@functools.partial(jit, static_argnames=("explain_fn",))
def _explain(explain_fn, model, x, targets, keys):
    return explain_fn(model, x, targets, keys).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("absolute",))
def _compare(reference, maps, *, absolute):
    return _similarities(reference, maps, absolute)


def model_parameter_randomization(
    explain_fn: ExplainFn, model, randomized: Sequence, x, targets, *, key, absolute: bool = True
) -> dict:
    """Rank correlation and SSIM between the maps of ``model`` and of each randomized model.

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)`` (see ``robustness``); it is called
        with the same keys for every model, so a stochastic method's noise is held fixed.
      model: the trained model; randomized: ``[(name, model)]``, e.g. ``cascading_randomization``.
      x: (B, H, W, C); targets: int (B,), kept fixed (Adebayo et al.: the original prediction).
      key: one key or (B,) keys. absolute: compare |maps| (default; Adebayo et al. report both;
        Quantus 0.6's ``MPRT`` also compares |maps|, after ``normalise_by_max``, with Spearman,
        top-down).
    Returns:
      ``{name: {"spearman": (B,), "ssim": (B,)}}`` in the order of ``randomized``; SSIM is on
      maps min-max scaled to [0, 1] each (data range 1), as Adebayo et al. normalise them.
    Caveat: maps that vanish wherever the input does (grad x input, IG from a black baseline)
    keep a high rank correlation from MNIST's shared black background alone, whatever the model
    (Binder et al. 2022, arXiv:2211.12486); read SSIM and the whole cascade alongside it.
    """
    check_inputs(x, None, targets)
    keys = example_keys(key, np.shape(x)[0])
    reference = _explain(explain_fn, model, x, targets, keys)
    out = {}
    for name, m in randomized:
        rho, s = _compare(reference, _explain(explain_fn, m, x, targets, keys), absolute=absolute)
        out[name] = {"spearman": rho, "ssim": s}
    return out


@register_metric(
    "randomization",
    category="sanity",
    reexplains=True,
    setup=lambda classifier, key: cascading_randomization(classifier, key),
    columns={
        "randomization_spearman": ("lower", "Spearman rho, all layers randomized (Adebayo 2018)"),
        "randomization_ssim": ("lower", "SSIM, all layers randomized (Adebayo 2018)"),
    },
)
def _score_randomization(batch: Batch) -> dict:
    sims = model_parameter_randomization(
        batch.explain_fn, batch.classifier, batch.state, batch.x, batch.targets, key=batch.keys
    )
    out = {f"cascade_{m}_{stage}": s[m] for stage, s in sims.items() for m in ("spearman", "ssim")}
    last = sims[batch.state[-1][0]]
    return {"randomization_spearman": last["spearman"], "randomization_ssim": last["ssim"], **out}
