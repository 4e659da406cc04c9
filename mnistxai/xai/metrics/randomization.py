"""The model-parameter randomization sanity check (Adebayo et al. 2018, arXiv:1810.03292).

Layers are re-initialized cascading from the output towards the input; after each step the maps
are recomputed and compared with the trained model's by Spearman rank correlation and SSIM. A
method whose maps barely change while the model is destroyed does not explain the model.

Two repairs of Hedström et al. 2023 ("Sanity Checks Revisited: An Exploration to Repair the Model
Parameter Randomisation Test", arXiv:2401.06465): smooth MPRT (``smooth_samples``: each map is the
average over noisy copies of the input before the comparison) and efficient MPRT
(``efficient_mprt``: the relative rise in the map's histogram entropy from the trained to the
fully randomized model, no pairwise similarity).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.jit import jit
from mnistxai.models.cnn import init_cnn
from mnistxai.models.spec import CNN_SPEC
from mnistxai.util.errors import InputError
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.metrics._common import (
    average_ranks,
    check_inputs,
    check_positive,
    example_keys,
    minmax,
    pearson,
    structural_similarity,
)
from mnistxai.xai.metrics.registry import Batch, register_metric
from mnistxai.xai.metrics.robustness import ExplainFn

# the default CNN's stages from the top: each re-initializes one more layer (a conv with its
# BatchNorm); a classifier's own stages come from its specification
CASCADE = tuple(stage for stage, _ in CNN_SPEC.cascade)


def ssim(a: jax.Array, b: jax.Array, *, data_range: float = 1.0, win: int = 7) -> jax.Array:
    """Structural similarity (Wang et al. 2004) of two (H, W) images, as
    ``skimage.metrics.structural_similarity`` computes it by default (Quantus's ``ssim``):
    a ``win`` x ``win`` uniform window, K1 = 0.01, K2 = 0.03, sample covariances, the mean over
    the pixels whose window lies inside the image; computed in float32."""
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return structural_similarity(a, b, data_range, win)


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


def _as_compared(maps, absolute):
    """(ranks, min-max scaled maps) of (B, H, W) maps: what Spearman's rho and SSIM read."""
    maps = jnp.abs(maps) if absolute else maps
    ranks = jax.vmap(lambda m: average_ranks(m.ravel()))(maps)
    return ranks, minmax(maps)


def _similarities(reference, maps, absolute):
    """Spearman's rho and SSIM of each map with ``reference`` = ``_as_compared`` of the trained
    model's maps (computed once for the whole cascade)."""
    ref_ranks, ref_scaled = reference
    ranks, scaled = _as_compared(maps, absolute)
    rho = jax.vmap(pearson)(ref_ranks, ranks)
    s = jax.vmap(ssim)(ref_scaled, scaled)
    return rho, s


def _maps(explain_fn, model, x, targets, keys):
    return explain_fn(model, x, targets, keys).astype(jnp.float32)


def _smooth_maps(explain_fn, model, x, targets, keys, magnitude, *, samples):
    """The mean of ``samples`` maps of noisy copies of ``x`` (the last copy noise-free), one
    batch of maps in memory at a time."""
    axes = tuple(range(1, x.ndim))
    std = magnitude * (x.max(axes, keepdims=True) - x.min(axes, keepdims=True))
    noise_keys = streams.fold(keys, "smooth_noise")

    def step(total, i):
        draw = lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:], x.dtype)
        noise = jnp.where(i == samples - 1, 0.0, jax.vmap(draw)(noise_keys)) * std
        method_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        maps = explain_fn(model, x + noise.astype(x.dtype), targets, method_keys)
        return total + maps.astype(jnp.float32), None

    total, _ = jax.lax.scan(step, jnp.zeros(x.shape[:3], jnp.float32), jnp.arange(samples))
    return total / samples


_explain = functools.partial(jit, static_argnames=("explain_fn",))(_maps)
_smooth_explain = functools.partial(jit, static_argnames=("explain_fn", "samples"))(_smooth_maps)


@functools.partial(jit, static_argnames=("absolute",))
def _reference(maps, *, absolute):
    return _as_compared(maps, absolute)


@functools.partial(jit, static_argnames=("explain_fn", "absolute"))
def _explain_and_compare(explain_fn, model, x, targets, keys, reference, *, absolute):
    return _similarities(reference, _maps(explain_fn, model, x, targets, keys), absolute)


@functools.partial(jit, static_argnames=("explain_fn", "samples", "absolute"))
def _smooth_explain_and_compare(
    explain_fn, model, x, targets, keys, magnitude, reference, *, samples, absolute
):
    maps = _smooth_maps(explain_fn, model, x, targets, keys, magnitude, samples=samples)
    return _similarities(reference, maps, absolute)


def model_parameter_randomization(
    explain_fn: ExplainFn,
    model,
    randomized: Sequence,
    x,
    targets,
    *,
    key,
    absolute: bool = True,
    smooth_samples: int = 0,
    noise_magnitude: float = 0.1,
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
      smooth_samples: 0 (default): Adebayo's test, one map per model. N >= 1: smooth MPRT
        (Hedström et al. 2023, arXiv:2401.06465): every map, of the trained and of each
        randomized model, is the mean of the maps of N copies of the input, N - 1 of them with
        Gaussian noise of std ``noise_magnitude`` x (max - min of the image) and the last one
        noise-free, as Quantus 0.6's ``SmoothMPRT`` (its defaults: N = 50, magnitude 0.1). Costs
        N explanations per model instead of one. Departures from ``SmoothMPRT``: the top-down
        cascade here (Quantus's default ``layer_order`` there is ``"bottom_up"``); the same noise
        draws (from ``key``, per example) for every model, where Quantus draws fresh global
        NumPy noise for each; its ``normalise_by_average_second_moment_estimate`` is left out,
        as a positive rescaling changes neither Spearman's rho nor SSIM of min-max scaled maps.
    Returns:
      ``{name: {"spearman": (B,), "ssim": (B,)}}`` in the order of ``randomized``; SSIM is on
      maps min-max scaled to [0, 1] each (data range 1), as Adebayo et al. normalise them.
    Caveat: maps that vanish wherever the input does (grad x input, IG from a black baseline)
    keep a high rank correlation from MNIST's shared black background alone, whatever the model
    (Binder et al. 2022, arXiv:2211.12486); read SSIM and the whole cascade alongside it.
    """
    check_inputs(x, None, targets)
    _check_smoothing(smooth_samples, noise_magnitude)
    keys = example_keys(key, np.shape(x)[0])
    # one compiled call per model: its maps and their comparison with the trained model's
    if smooth_samples:
        smooth = dict(samples=smooth_samples)
        reference = _smooth_explain(explain_fn, model, x, targets, keys, noise_magnitude, **smooth)
        compare = lambda m, ref: _smooth_explain_and_compare(
            explain_fn, m, x, targets, keys, noise_magnitude, ref, absolute=absolute, **smooth
        )
    else:
        reference = _explain(explain_fn, model, x, targets, keys)
        compare = lambda m, ref: _explain_and_compare(
            explain_fn, m, x, targets, keys, ref, absolute=absolute
        )
    reference = _reference(reference, absolute=absolute)
    out = {}
    for name, m in randomized:
        rho, s = compare(m, reference)
        out[name] = {"spearman": rho, "ssim": s}
    return out


def _check_smoothing(samples, magnitude) -> None:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 0:
        raise InputError(f"smooth_samples must be an integer >= 0, got {samples!r}")
    if isinstance(magnitude, bool) or not np.isfinite(magnitude) or magnitude < 0:
        raise InputError(f"noise_magnitude must be a finite number >= 0, got {magnitude!r}")


@functools.partial(jax.jit, static_argnames=("n_bins",))
def _discrete_entropy(maps, *, n_bins):
    def one(a):
        a = a.ravel()
        lo, hi = a.min(), a.max()
        # np.histogram's equal-width bins: an empty range widened by 0.5 each way, the last bin
        # closed, and the computed index corrected by comparison with the edges (float rounding)
        lo, hi = jnp.where(lo == hi, lo - 0.5, lo), jnp.where(lo == hi, hi + 0.5, hi)
        edges = jnp.linspace(lo, hi, n_bins + 1).astype(a.dtype)
        idx = jnp.clip(((a - lo) / (hi - lo) * n_bins).astype(jnp.int32), 0, n_bins - 1)
        idx = idx - (a < edges[idx])
        idx = idx + ((a >= edges[idx + 1]) & (idx != n_bins - 1))
        dtype = jnp.result_type(a.dtype, jnp.float32)
        p = jnp.zeros(n_bins, dtype).at[idx].add(1.0) / a.shape[0]
        return -jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0).sum()

    return jax.vmap(one)(maps)


def discrete_entropy(maps, *, n_bins: int = 100) -> jax.Array:
    """Shannon entropy (nats) of the histogram of each (H, W) map's values in ``n_bins``
    equal-width bins spanning that map's [min, max]: Quantus 0.6's ``discrete_entropy``
    (``scipy.stats.entropy(np.histogram(a, bins=n_bins)[0])``). In [0, log n_bins]; a constant map
    gives 0. (B, H, W) -> (B,)."""
    if np.ndim(maps) != 3:
        raise InputError(f"maps must have shape (B, H, W), got {np.shape(maps)}")
    if not np.isfinite(np.asarray(maps, np.float32)).all():
        raise InputError("maps contains NaN or inf")
    check_positive(n_bins=n_bins)
    if n_bins < 2:
        raise InputError(f"n_bins must be >= 2, got {n_bins}")
    return _discrete_entropy(jnp.asarray(maps), n_bins=n_bins)


def efficient_mprt(
    explain_fn: ExplainFn,
    model,
    randomized_model,
    x,
    targets,
    *,
    key,
    attributions=None,
    n_bins: int = 100,
) -> dict:
    """Efficient MPRT (eMPRT; Hedström et al. 2023, "Sanity Checks Revisited", arXiv:2401.06465).
    Higher is better.

    The relative rise in complexity of the map from the trained model to the fully randomized
    one: (H(e_random) - H(e)) / H(e), H the ``discrete_entropy`` of the map's values (100 bins).
    A map that explains the model turns to noise, a flatter histogram, when the model is
    destroyed: the rise is positive; near 0 the method ignores the weights. In [-1, inf); NaN
    where the trained model's map is constant (H(e) = 0).

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``, called once, for
        ``randomized_model``, with the same (B,) keys as the trained model's maps would use.
      model: the trained model (explained only when ``attributions`` is None);
      randomized_model: every layer re-initialized, e.g.
        ``cascading_randomization(classifier, key)[-1][1]``.
      x: (B, H, W, C); targets: int (B,), kept fixed; key: one key or (B,) keys.
      attributions: the trained model's maps (B, H, W), or None to compute them.
    Returns ``{"rise": (B,), "entropy": (B,), "entropy_randomized": (B,)}``.
    As Quantus 0.6's ``EfficientMPRT`` (``discrete_entropy`` of the raw signed maps, no ``abs``,
    no normalisation; 100 bins, its default when no bin rule is named; only the original and
    the fully randomized model, ``skip_layers=True``; score (b - a) / a), except: the model is
    fully randomized by this module's cascade (the end state of any order, so Quantus's
    ``"bottom_up"`` default reaches the same kind of model), and a constant trained map gives
    NaN where Quantus divides by zero.
    """
    check_inputs(x, attributions, targets)
    check_positive(n_bins=n_bins)
    if n_bins < 2:
        raise InputError(f"n_bins must be >= 2, got {n_bins}")
    keys = example_keys(key, np.shape(x)[0])
    if attributions is None:
        attributions = _explain(explain_fn, model, x, targets, keys)
    return _efficient_mprt(
        explain_fn, randomized_model, x, targets, keys, attributions, n_bins=n_bins
    )


@functools.partial(jit, static_argnames=("explain_fn", "n_bins"))
def _efficient_mprt(explain_fn, randomized_model, x, targets, keys, attributions, *, n_bins):
    h0 = _discrete_entropy(attributions, n_bins=n_bins)
    h1 = _discrete_entropy(explain_fn(randomized_model, x, targets, keys), n_bins=n_bins)
    rise = jnp.where(h0 > 0, (h1 - h0) / jnp.where(h0 > 0, h0, 1.0), jnp.nan)
    return {"rise": rise, "entropy": h0, "entropy_randomized": h1}


def _cascade(classifier, key):
    return cascading_randomization(classifier, key)


@register_metric(
    "randomization",
    category="sanity",
    reexplains=True,
    setup=_cascade,
    options_of=model_parameter_randomization,
    options=("smooth_samples", "noise_magnitude"),
    checks={"smooth_samples": positive_int(0), "noise_magnitude": real(0.0)},
    columns={
        "randomization_spearman": ("lower", "Spearman rho, all layers randomized (Adebayo 2018)"),
        "randomization_ssim": ("lower", "SSIM, all layers randomized (Adebayo 2018)"),
    },
)
def _score_randomization(batch: Batch, **options) -> dict:
    sims = model_parameter_randomization(
        batch.explain_fn,
        batch.classifier,
        batch.state,
        batch.x,
        batch.targets,
        key=batch.keys,
        **options,
    )
    out = {f"cascade_{m}_{stage}": s[m] for stage, s in sims.items() for m in ("spearman", "ssim")}
    last = sims[batch.state[-1][0]]
    return {"randomization_spearman": last["spearman"], "randomization_ssim": last["ssim"], **out}


@register_metric(
    "efficient_mprt",
    category="sanity",
    reexplains=True,
    setup=_cascade,
    options_of=efficient_mprt,
    options=("n_bins",),
    checks={"n_bins": positive_int(2)},
    columns={
        "efficient_mprt": (
            "higher",
            "Rise in map histogram entropy, trained to randomized model (Hedström 2023)",
        )
    },
)
def _score_efficient_mprt(batch: Batch, **options) -> dict:
    r = efficient_mprt(
        batch.explain_fn,
        batch.classifier,
        batch.state[-1][1],
        batch.x,
        batch.targets,
        key=batch.keys,
        attributions=batch.maps,
        **options,
    )
    return {
        "efficient_mprt": r["rise"],
        "efficient_mprt_entropy": r["entropy"],
        "efficient_mprt_entropy_randomized": r["entropy_randomized"],
    }
