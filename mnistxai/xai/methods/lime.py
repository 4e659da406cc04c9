"""LIME (Ribeiro et al. 2016) over feature groups, with Captum's ``Lime`` defaults."""

from __future__ import annotations

from typing import Literal, Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.xai import _coalitions as co
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai._inputs import real
from mnistxai.xai.registry import register

COSINE_EPS = 1e-8  # torch.nn.CosineSimilarity's eps, which Captum's default kernel uses


@register(
    "lime",
    model="forward",
    family="perturbation",
    paper="Ribeiro et al. 2016, arXiv:1602.04938",
    checks={**co.CHECKS, "alpha": real(0.0), "kernel_width": real(0.0, open_lo=True)},
    check=co.check(),
    stochastic=True,
    passes=lambda o: (0, 2 + o["samples"]),
    quick={"samples": 256},
    smoke={"samples": 16, "patch": 7, "alpha": 1e-5},
)
def lime(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = 1000,
    alpha: float = 0.01,
    kernel_width: float = 1.0,
    distance: Literal["cosine", "euclidean"] = "cosine",
    groups: Union[str, jax.Array] = "grid",
    patch: int = 4,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """LIME (Ribeiro et al. 2016, arXiv:1602.04938): a weighted linear surrogate's coefficients.

    The surrogate models the target logit on random coalitions of feature groups.

    As Captum's ``Lime`` with its defaults (captum faac087): each of ``samples`` coalitions
    keeps every group with probability 1/2 (the rest at the baseline); a coalition weighs
    exp(-d^2 / (2 kernel_width^2)), d the distance between the flattened x and the perturbed
    image ('cosine': 1 - cosine similarity, torch's eps 1e-8 on each norm, so a black image is at
    distance 1; 'euclidean': the L2 distance); the surrogate is sklearn's ``Lasso(alpha)`` with
    an intercept fitted with those sample weights, minimising sum w (y - b - z . beta)^2 /
    (2 sum w) + alpha |beta|_1 (coordinate descent to float precision, ``_coalitions.lasso``).
    Kernel width: 1.0 on the cosine distance, which lies in [0, 1] for images in [0, 1], so the
    weights lie in [0.61, 1]: a nearly flat kernel, Captum's default (the ``lime`` package's
    image explainer uses width 0.25 on the cosine distance between binary vectors).
    Departures: ``samples`` defaults to 1000 (the ``lime`` package's image default; Captum's is
    50 per its docs, 25 per its signature, too few for 49 groups); groups whose pixels all equal
    the baseline are left out of the surrogate with coefficient exactly 0 (their column would
    be noise: switching them changes no input).

    Args:
      samples: random coalitions per image (1000).
      alpha: the L1 penalty (0.01, Captum's; 0: weighted least squares, which recovers a model
        that is linear in the groups exactly).
      kernel_width: the similarity kernel's width (1.0); distance: 'cosine' or 'euclidean'.
      patch: the grid's patch side (default 4: a 7 x 7 grid of 49 players).
      {groups}
    Extras: ``group_values`` (B, n) (the coefficients), ``intercept`` (B,),
    ``efficiency_gap`` (LIME is not efficient: sum of coefficients - (F(x) - F(baseline))),
    ``active_players``, ``evaluated``, ``labels``. Random draws: example i uses the stream
    "lime" of ``split(key, B)[i]``.
    """
    game = co.prepare(
        logits_fn,
        x,
        targets,
        groups=groups,
        patch=patch,
        baseline=baseline,
        blur_sigma=blur_sigma,
        key=key,
        chunk_size=chunk_size,
    )
    n, b, dtype = game.n, x.shape[0], x.dtype
    keys = co.example_keys(key, "lime", b)

    def draw(k, slot):
        return jax.random.bernoulli(jax.random.fold_in(k, slot), 0.5, (n,))

    # every coalition once, (B, samples, n) bool, for the model loop and the fit
    z = jax.vmap(lambda k: jax.vmap(lambda s: draw(k, s))(jnp.arange(samples)))(keys)
    z = z & game.active[:, None, :]
    needed = jnp.ones((b, samples), bool)
    v = co.evaluate(logits_fn, game, lambda ex, slot: z[ex, slot], samples, needed, chunk_size)

    # distances from per-group sums: the perturbed image is base + z_group (x - base), z in {0, 1}
    onehot = jax.nn.one_hot(game.labels.reshape(b, -1), n, dtype=dtype)  # (B, HW, n)
    xf, bf = game.x.reshape(b, -1), game.base.reshape(b, -1)  # one channel per pixel
    d = xf - bf
    per_group = lambda q: jnp.einsum("bp,bpn->bn", q, onehot)

    def solve(args):
        zi, active, vi, x_sq, b_sq, xb, gain_dot, gain_sq, gap_sq = args
        zi = zi.astype(dtype)
        if distance == "cosine":
            dot = xb + zi @ gain_dot  # x . perturbed
            norm = jnp.sqrt(jnp.maximum(b_sq + zi @ gain_sq, 0))  # |perturbed|
            cos = dot / (jnp.maximum(jnp.sqrt(x_sq), COSINE_EPS) * jnp.maximum(norm, COSINE_EPS))
            dist = 1 - cos
        else:
            dist = jnp.sqrt(jnp.maximum((1 - zi) @ gap_sq, 0))
        w = jnp.exp(-(dist**2) / (2 * kernel_width**2))
        return co.lasso(zi, vi, w, active, alpha)

    stats = (
        z,
        game.active,
        v,
        (xf**2).sum(-1),
        (bf**2).sum(-1),
        (xf * bf).sum(-1),
        per_group(xf * d),
        per_group(2 * bf * d + d**2),
        per_group(d**2),
    )
    values, intercept = jax.lax.map(solve, stats, batch_size=min(b, 16))
    values = jnp.where(game.active, values, 0)
    extras = game.extras(values, jnp.full(b, samples), intercept=intercept)
    return Explanation(game.maps(values), game.t, extras)


lime.__doc__ = lime.__doc__.replace("{groups}", co.GROUPS_DOC)
