"""Exact Shapley values of feature groups (Shapley 1953): every one of the 2^n coalitions, the
ground truth the sampling estimators (KernelSHAP, Shapley value sampling) are measured against."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.xai import _coalitions as co
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai.registry import register

MAX_PLAYERS = 16  # 65,536 coalitions, ~20 s of forward passes per image on 2 CPU cores


@register(
    "exact_shapley",
    model="forward",
    family="perturbation",
    paper="Shapley 1953, Contributions to the Theory of Games II, 307-317",
    checks=co.CHECKS,
    check=co.check(MAX_PLAYERS),
    stochastic=co.uses_key,
    passes=lambda o: (0, 2 + 2 ** co.players(o)),
    quick={"patch": 14},
    default_set=False,  # 2^16 evaluations per image at the defaults: the others' ground truth
    smoke={"patch": 14},
)
def exact_shapley(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    groups: Union[str, jax.Array] = "grid",
    patch: int = 7,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Exact Shapley values (Shapley 1953) of the target logit over n <= 16 feature groups.

    phi_i = sum over coalitions S without i of |S|! (n - |S| - 1)! / n! (v(S + i) - v(S)), with
    v(S) the target logit of x with the groups outside S set to the baseline. Every coalition is
    evaluated once and the values are combined in one matrix product, so the result sums to
    v(all) - v({}) = F(x) - F(baseline) up to rounding (efficiency). Captum's ``ShapleyValues``
    computes the same values by enumerating all n! permutations.

    Args:
      patch: the grid's patch side (default 7: a 4 x 4 grid of 16 players, 65,536 coalitions);
        more than 16 players is refused (an ``InputError``: 2^n model evaluations per image).
      {groups}
    Exact shortcut: v(S) only depends on S's active players (those with a pixel that differs
    from the baseline; a blank corner of a digit is none), so only the 2^m coalitions of the m
    active players are run: ``passes`` counts 2^n, extras ``evaluated`` the 2^m actually run.
    Extras: ``group_values`` (B, n), ``efficiency_gap``, ``active_players``, ``evaluated``,
    ``labels`` (the player of every pixel). Maps (B, 28, 28): each pixel carries its group's
    value (not divided by the group's size). The target logit is explained, as everywhere here.
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
    n = game.n
    if n > MAX_PLAYERS:  # the registry refuses it before tracing; this guards direct calls
        co.require(False, f"exact_shapley takes at most {MAX_PLAYERS} players, got {n}")
    slots = 2**n
    bits = jnp.sum(game.active.astype(jnp.int32) << jnp.arange(n, dtype=jnp.int32), -1)  # (B,)
    idx = jnp.arange(slots, dtype=jnp.int32)
    needed = (idx[None, :] & ~bits[:, None]) == 0  # coalitions of active players only

    v = co.evaluate(
        logits_fn, game, lambda ex, s: co.coalition_bits(s, n), slots, needed, chunk_size
    )
    v = jnp.take_along_axis(v, idx[None, :] & bits[:, None], axis=1)  # v(S) = v(S & active)

    member = co.coalition_bits(idx, n)
    size = member.sum(-1, keepdims=True)
    w = jnp.asarray(co.shapley_weights(n), x.dtype)
    w = jnp.concatenate([w, jnp.zeros(1, x.dtype)])  # w(n) never weighs a term
    coef = jnp.where(member, w[jnp.maximum(size - 1, 0)], -w[size])  # (2^n, n)
    values = v @ coef
    values = jnp.where(game.active, values, 0)
    extras = game.extras(values, needed.sum(-1))
    return Explanation(game.maps(values), game.t, extras)


exact_shapley.__doc__ = exact_shapley.__doc__.replace("{groups}", co.GROUPS_DOC)
