"""Expected Gradients / GradientSHAP (Erion et al. 2021; Lundberg & Lee 2017)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.util.errors import InputError
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    LogitsFn,
    plan,
    predict_one,
    over_examples,
)
from mnistxai.xai._inputs import as_images, float_array, real
from mnistxai.xai.methods.integrated_gradients import path_sum
from mnistxai.xai.registry import register


def _check(options: dict, batch: int, classifier) -> dict:
    if options["background"] is None:
        raise InputError(
            "expected_gradients needs background=(N, 28, 28[, 1]) images to draw "
            "baselines from (e.g. a few hundred training images)"
        )
    alphas = options["alphas"]
    if alphas is not None:
        if alphas.shape != (options["samples"],):
            raise InputError(f"alphas must have shape ({options['samples']},), got {alphas.shape}")
        if alphas.min() < 0 or alphas.max() > 1:
            raise InputError(
                f"alphas are positions on the path and must lie in [0, 1], got "
                f"{alphas.min():.3g}..{alphas.max():.3g}"
            )
    return options


@register(
    "expected_gradients",
    model="logits",
    family="path",
    paper="Erion et al. 2021, arXiv:1906.10670",
    checks={
        "background": lambda name, v: as_images(v, name),
        "noise": real(0.0, 1.0),
        "alphas": float_array,
    },
    check=_check,
    stochastic=True,
    background=True,
    passes=lambda o: (o["samples"], 1),
    quick={"samples": 16},
    smoke={"samples": 2},
)
def expected_gradients(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    background: Optional[jax.Array] = None,
    key: jax.Array,
    samples: int = 50,
    noise: float = 0.0,
    alphas: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Expected Gradients / GradientSHAP (Erion et al. 2021, arXiv:1906.10670; Lundberg & Lee 2017).

    attribution = mean_s (x~_s - b_s) * grad F(b_s + a_s (x~_s - b_s)), with b_s drawn uniformly
    from ``background`` (N, H, W, C; required: the pipelines draw ``background_size`` training
    images), a_s ~ U[0, 1] and x~_s = x + N(0, noise^2) (shap's ``local_smoothing``; Captum's
    ``stdevs``; default 0, at most 1). ``alphas`` (samples,) in [0, 1] fixes the path positions
    instead (a test hook: one background image and the left-Riemann grid give IG). ``samples``
    (50; shap's GradientExplainer defaults to 200, Captum's GradientShap to 5).
    """
    per_pass = plan(x.shape[0], chunk_size)[1]
    n_bg = background.shape[0]

    def one(xi, t, k):
        t = predict_one(logits_fn, xi, t)
        keys = lambda idx: jax.vmap(lambda i: jax.random.split(jax.random.fold_in(k, i), 3))(idx)
        pick = lambda idx: jax.vmap(lambda kk: jax.random.randint(kk[0], (), 0, n_bg))(keys(idx))
        if alphas is None:
            alpha_at = lambda idx: jax.vmap(lambda kk: jax.random.uniform(kk[1], (), xi.dtype))(
                keys(idx)
            )
        else:
            alpha_at = lambda idx: alphas[idx]

        def noisy_x(idx):
            if noise == 0:
                return xi[None]
            return xi + noise * jax.vmap(lambda kk: jax.random.normal(kk[2], xi.shape, xi.dtype))(
                keys(idx)
            )

        attr = path_sum(
            logits_fn,
            t,
            lambda idx: background[pick(idx)],
            noisy_x,
            alpha_at,
            lambda idx: jnp.full(idx.shape, 1.0 / samples, xi.dtype),
            samples,
            per_pass,
        )
        return attr.sum(-1), t, {}

    return over_examples(one, x, targets, key, chunk_size=chunk_size)
