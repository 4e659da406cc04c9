"""Path attributions: Integrated Gradients and Expected Gradients (GradientSHAP).

Both compute sum_s w_s (x~_s - b_s) * grad F(b_s + a_s (x~_s - b_s)), differing in where the
baselines b_s, path positions a_s and weights w_s come from, so they share one kernel.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import (DEFAULT_CHUNK, Explanation, LogitsFn, over_examples, plan,
                                predict_one, sample_sum, target_grads, target_or_argmax)

RULES = ("left", "right", "middle", "trapezoid", "gauss_legendre")
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
            raise ValueError("the trapezoid rule needs steps >= 2")
        a, w = i / (steps - 1), np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
    elif rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        a, w = (nodes + 1) / 2, weights / 2
    else:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    return a, w  # float64: callers cast to their inputs' dtype


def blur(x: jax.Array, sigma: float) -> jax.Array:
    """Gaussian blur of (..., H, W, C) images, renormalised at the border (no dark frame)."""
    def matrix(n):
        d = np.arange(n)[:, None] - np.arange(n)[None, :]
        m = np.exp(-0.5 * (d / sigma) ** 2)
        return jnp.asarray(m / m.sum(1, keepdims=True), x.dtype)
    return jnp.einsum("ij,...jkc,lk->...ilc", matrix(x.shape[-3]), x, matrix(x.shape[-2]))


def _path_sum(logits_fn, t, start_at, end_at, alpha_at, weight_at, num, per_pass):
    """sum_s w_s (x_s - b_s) * grad F(b_s + a_s (x_s - b_s)) for one example, by sample chunks.

    ``start_at``/``end_at(idx)`` -> b_s, x_s (k or 1, H, W, C); ``alpha_at``/``weight_at(idx)`` -> (k,).
    """
    def chunk(idx):
        b, a, w = start_at(idx), alpha_at(idx), weight_at(idx)
        path = end_at(idx) - b
        g, _, _ = target_grads(logits_fn, b + a[:, None, None, None] * path, t)
        return jnp.einsum("k,khwc->hwc", w, g * path)
    return sample_sum(chunk, num, per_pass)


def make_baseline(baseline: Union[str, jax.Array], x: jax.Array, key: Optional[jax.Array],
                  blur_sigma: float) -> jax.Array:
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
            raise ValueError("baseline='uniform' is random: pass key=jax.random.key(seed)")
        return jax.random.uniform(jax.random.fold_in(key, 1), x.shape, x.dtype)
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")


def integrated_gradients(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None,
                         *, baseline: Union[str, jax.Array] = "black", steps: int = 50,
                         rule: str = "gauss_legendre", blur_sigma: float = 4.0,
                         key: Optional[jax.Array] = None,
                         chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365), signed.

    Args:
      baseline: 'black' (zeros, default), 'white' (ones), 'blurred' (Gaussian blur of x with
        ``blur_sigma`` pixels, Sturmfels et al. 2020), 'uniform' (U[0, 1] noise, needs ``key``),
        or an array broadcastable to x.
      steps: quadrature points (50, Captum's default); rule: one of ``RULES``
        ('gauss_legendre' default, as Captum; PAIR saliency uses 25 equally weighted points
        linspace(0, 1, 25), both ends included).
    Extras: ``convergence_delta`` (B,) = sum(attributions) - (F(x) - F(b)), Captum's sign convention.
    """
    alphas, weights = (jnp.asarray(v, x.dtype) for v in path_rule(rule, steps))
    baselines = make_baseline(baseline, x, key, blur_sigma)
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi_bi, t, _):
        xi, bi = xi_bi
        ends = logits_fn(jnp.stack([xi, bi]))
        t = target_or_argmax(ends[0], t)
        attr = _path_sum(logits_fn, t, lambda idx: bi[None], lambda idx: xi[None],
                         lambda idx: alphas[idx],
                         lambda idx: weights[idx], steps, per_pass)
        delta = attr.sum() - (ends[0, t] - ends[1, t])
        return attr.sum(-1), t, {"convergence_delta": delta}
    return over_examples(one, (x, baselines), targets, chunk_size=chunk_size)


def expected_gradients(logits_fn: LogitsFn, x: jax.Array, targets: Optional[jax.Array] = None,
                       *, background: jax.Array, key: jax.Array, samples: int = 50,
                       noise: float = 0.0, alphas: Optional[jax.Array] = None,
                       chunk_size: int = DEFAULT_CHUNK) -> Explanation:
    """Expected Gradients / GradientSHAP (Erion et al. 2021, arXiv:1906.10670; Lundberg & Lee 2017).

    attribution = mean_s (x~_s - b_s) * grad F(b_s + a_s (x~_s - b_s)), with b_s drawn uniformly
    from ``background`` (N, H, W, C), a_s ~ U[0, 1] and x~_s = x + N(0, noise^2) (shap's
    ``local_smoothing``; Captum's ``stdevs``; default 0). ``alphas`` (samples,) fixes the path
    positions instead (a test hook: one background image and the left-Riemann grid give IG).
    ``samples`` (50; shap's GradientExplainer defaults to 200, Captum's GradientShap to 5).
    """
    per_pass = plan(x.shape[0], chunk_size)[1]
    n_bg = background.shape[0]

    def one(xi, t, k):
        t = predict_one(logits_fn, xi, t)
        keys = lambda idx: jax.vmap(lambda i: jax.random.split(jax.random.fold_in(k, i), 3))(idx)
        pick = lambda idx: jax.vmap(lambda kk: jax.random.randint(kk[0], (), 0, n_bg))(keys(idx))
        if alphas is None:
            alpha_at = lambda idx: jax.vmap(lambda kk: jax.random.uniform(kk[1], (), xi.dtype))(
                keys(idx))
        else:
            alpha_at = lambda idx: alphas[idx]

        def noisy_x(idx):
            if noise == 0:
                return xi[None]
            return xi + noise * jax.vmap(lambda kk: jax.random.normal(kk[2], xi.shape, xi.dtype))(
                keys(idx))
        attr = _path_sum(logits_fn, t, lambda idx: background[pick(idx)], noisy_x, alpha_at,
                         lambda idx: jnp.full(idx.shape, 1.0 / samples, xi.dtype), samples,
                         per_pass)
        return attr.sum(-1), t, {}
    return over_examples(one, x, targets, key, chunk_size=chunk_size)
