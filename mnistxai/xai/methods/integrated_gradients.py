"""Integrated Gradients (Sundararajan et al. 2017), and the path kernel Expected Gradients shares.

Both compute sum_s w_s (x~_s - b_s) * grad F(b_s + a_s (x~_s - b_s)), differing in where the
baselines b_s, path positions a_s and weights w_s come from (``path_sum``).
"""

from __future__ import annotations

import typing
from typing import Literal, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    LogitsFn,
    blur,
    over_examples,
    plan,
    sample_sum,
    target_grads,
    target_or_argmax,
)
from mnistxai.xai._inputs import as_images, choice, real
from mnistxai.xai.registry import register

Rule = Literal["gauss_legendre", "left", "right", "middle", "trapezoid"]
RULES: tuple[str, ...] = typing.get_args(Rule)
BASELINES = ("black", "white", "blurred", "uniform")


def path_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions a_s in [0, 1] and weights w_s (summing to 1) of a quadrature rule of ``steps``
    points, as float64 NumPy arrays.

    Riemann left/right/middle match Captum's ``riemann_*``; trapezoid uses Captum's nodes
    linspace(0, 1, n) with weights 1/(n-1), halved at the ends (summing to 1; Captum's are 1/n,
    summing to (n-1)/n); ``gauss_legendre`` maps the Legendre nodes from [-1, 1] to [0, 1] as
    Captum does and is exact for polynomials of degree 2*steps-1.
    """
    i = np.arange(steps, dtype=np.float64)
    if rule == "left":
        a, w = i / steps, np.full(steps, 1.0 / steps)
    elif rule == "right":
        a, w = (i + 1) / steps, np.full(steps, 1.0 / steps)
    elif rule == "middle":
        a, w = (i + 0.5) / steps, np.full(steps, 1.0 / steps)
    elif rule == "trapezoid":
        if steps < 2:
            raise InputError("the trapezoid rule needs steps >= 2")
        a, w = i / (steps - 1), np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
    elif rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        a, w = (nodes + 1) / 2, weights / 2
    else:
        raise InputError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    return a, w  # float64: callers cast to their inputs' dtype


def path_sum(logits_fn, t, start_at, end_at, alpha_at, weight_at, num, per_pass):
    """sum_s w_s (x_s - b_s) * grad F(b_s + a_s (x_s - b_s)) for one example, by sample chunks.

    ``start_at``/``end_at(idx)`` -> b_s, x_s (k or 1, H, W, C); ``alpha_at``/``weight_at(idx)`` ->
    (k,).
    """

    def chunk(idx):
        b, a, w = start_at(idx), alpha_at(idx), weight_at(idx)
        path = end_at(idx) - b
        g, _, _ = target_grads(logits_fn, b + a[:, None, None, None] * path, t)
        return jnp.einsum("k,khwc->hwc", w, g * path)

    return sample_sum(chunk, num, per_pass)


def make_baseline(
    baseline: Union[str, jax.Array], x: jax.Array, key: Optional[jax.Array], blur_sigma: float
) -> jax.Array:
    """The (B, H, W, C) baselines for ``x`` named by ``baseline`` (or given as an array)."""
    if not isinstance(baseline, str):
        return jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    if baseline == "black":
        return jnp.zeros_like(x)
    if baseline == "white":
        return jnp.ones_like(x)
    if baseline == "blurred":
        return blur(x, blur_sigma)
    if baseline == "uniform":
        if key is None:
            raise InputError("baseline='uniform' is random: pass key=jax.random.key(seed)")
        return jax.random.uniform(streams.fold(key, "baseline"), x.shape, x.dtype)
    raise InputError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")


def baseline_option(name: str, value) -> Union[str, np.ndarray]:
    """A named baseline, or images (N, 28, 28[, 1]) in [0, 1] (checked against the batch later)."""
    if isinstance(value, str):
        return choice(BASELINES)(name, value)
    return as_images(value, name)


def images_for_batch(name: str, images: np.ndarray, batch: int) -> np.ndarray:
    if images.shape[0] not in (1, batch):
        raise InputError(f"{name} must hold 1 or {batch} images, got {images.shape[0]}")
    return images


def check_baseline(options: dict, batch: int, classifier) -> dict:
    """Cross-option check of a ``baseline`` given as images: 1 or ``batch`` of them."""
    if not isinstance(options["baseline"], str):
        images_for_batch("baseline", options["baseline"], batch)
    return options


def _check(options: dict, batch: int, classifier) -> dict:
    options = check_baseline(options, batch, classifier)
    if options["rule"] == "trapezoid" and options["steps"] < 2:
        raise InputError("the trapezoid rule needs steps >= 2")
    return options


def completeness(arrays: dict) -> tuple[dict, str]:
    """IG completeness over a run's stored arrays: |delta| and |delta| / |F(x) - F(b)| statistics,
    and the line the leaderboard prints."""
    delta = arrays["extra_convergence_delta"].astype(np.float64)
    gap = arrays["attribution_sum"].astype(np.float64) - delta  # F(x) - F(baseline)
    rel = np.abs(delta) / np.maximum(np.abs(gap), 1e-12)
    stats = {
        "images": int(len(delta)),
        "mean_abs_delta": float(np.abs(delta).mean()),
        "median_abs_delta": float(np.median(np.abs(delta))),
        "p95_abs_delta": float(np.percentile(np.abs(delta), 95)),
        "median_relative_delta": float(np.median(rel)),
        "share_relative_delta_below_1pct": float((rel < 0.01).mean()),
    }
    text = (
        f"IG completeness ({stats['images']} images): mean |δ| {stats['mean_abs_delta']:.4g}, "
        f"median |δ| {stats['median_abs_delta']:.4g}, 95th percentile "
        f"{stats['p95_abs_delta']:.4g}; median |δ|/|F(x)−F(b)| "
        f"{stats['median_relative_delta']:.3%}, {stats['share_relative_delta_below_1pct']:.1%} of "
        f"images below 1%."
    )
    return stats, text


@register(
    "integrated_gradients",
    model="logits",
    family="path",
    paper="Sundararajan et al. 2017, arXiv:1703.01365",
    checks={"baseline": baseline_option, "blur_sigma": real(0.0, open_lo=True)},
    check=_check,
    stochastic=lambda o: isinstance(o["baseline"], str) and o["baseline"] == "uniform",
    run_summary=completeness,
    passes=lambda o: (o["steps"], 2),
    quick={"steps": 16},
    smoke={"steps": 4},
)
def integrated_gradients(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    baseline: Union[str, jax.Array] = "black",
    steps: int = 50,
    rule: Rule = "gauss_legendre",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365), signed.

    Args:
      baseline: 'black' (zeros, default), 'white' (ones), 'blurred' (Gaussian blur of x with
        ``blur_sigma`` pixels, Sturmfels et al. 2020), 'uniform' (U[0, 1] noise, needs ``key``),
        or images (1 or B of them, as ``explain`` takes images).
      steps: quadrature points (50, Captum's default); rule: one of ``RULES``
        ('gauss_legendre' default, as Captum; PAIR saliency uses 25 equally weighted points
        linspace(0, 1, 25), both ends included).
    Extras: ``convergence_delta`` (B,) = sum(attributions) - (F(x) - F(b)), Captum's sign
    convention.
    """
    alphas, weights = (jnp.asarray(v, x.dtype) for v in path_rule(rule, steps))
    baselines = make_baseline(baseline, x, key, blur_sigma)
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi_bi, t, _):
        xi, bi = xi_bi
        ends = logits_fn(jnp.stack([xi, bi]))
        t = target_or_argmax(ends[0], t)
        attr = path_sum(
            logits_fn,
            t,
            lambda idx: bi[None],
            lambda idx: xi[None],
            lambda idx: alphas[idx],
            lambda idx: weights[idx],
            steps,
            per_pass,
        )
        delta = attr.sum() - (ends[0, t] - ends[1, t])
        return attr.sum(-1), t, {"convergence_delta": delta}

    return over_examples(one, (x, baselines), targets, chunk_size=chunk_size)
