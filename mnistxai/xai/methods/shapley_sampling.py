"""Shapley value sampling (Castro et al. 2009) over feature groups, as Captum's
``ShapleyValueSampling``."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.xai import _coalitions as co
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai.registry import register


@register(
    "shapley_sampling",
    model="forward",
    family="perturbation",
    paper="Castro et al. 2009, Computers & Operations Research 36(5), 1726-1730",
    checks=co.CHECKS,
    check=co.check(),
    stochastic=True,
    passes=lambda o: (0, 2 + o["samples"] * max(co.players(o) - 1, 0)),
    quick={"samples": 4},
    smoke={"samples": 2, "patch": 7},
)
def shapley_sampling(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = 25,
    antithetic: bool = False,
    groups: Union[str, jax.Array] = "grid",
    patch: int = 4,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Shapley value sampling (Castro et al. 2009) of the target logit over feature groups.

    For each of ``samples`` random permutations the groups are added to the baseline one at a
    time in that order, and each group is credited the change of the target logit when it is
    added; the values are the mean credits. Each permutation's credits sum to F(x) -
    F(baseline), so the estimate is efficient exactly (up to rounding), and unbiased for the
    Shapley values with variance falling as 1 / samples. As Captum's ``ShapleyValueSampling``
    (captum faac087; ``n_samples`` = 25 permutations, its default), except: groups whose pixels
    all equal the baseline add nothing in any order and get exactly 0 without being run, so a
    permutation costs m - 1 evaluations for m active groups (Captum runs n per permutation);
    ``antithetic=True`` pairs permutation 2k + 1 with the reverse of permutation 2k (Mitchell
    et al. 2022, JMLR 23(43), antithetic sampling), which Captum does not offer.

    Args:
      samples: permutations per image (25); antithetic: reverse every other permutation (False).
      patch: the grid's patch side (default 4: a 7 x 7 grid of 49 players).
      {groups}
    Extras: ``group_values`` (B, n), ``efficiency_gap`` (rounding only), ``active_players``,
    ``evaluated`` (coalitions run: samples (m - 1)), ``labels``. ``passes`` counts
    samples (n - 1) + 2. Random draws: example i uses the stream "shapley_sampling" of
    ``split(key, B)[i]``.
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
    n, b = game.n, x.shape[0]
    per = max(n - 1, 1)  # coalitions per permutation: its proper non-empty prefixes
    m = game.active.sum(-1).astype(jnp.int32)
    keys = co.example_keys(key, "shapley_sampling", b)

    def ranks(k, active, m, perm):
        """int32 (n,): each player's place in permutation ``perm`` (active ones 0..m-1)."""
        r = co.random_ranks(jax.random.fold_in(k, perm // 2 if antithetic else perm), active)
        flip = antithetic & (perm % 2 == 1)
        return jnp.where(active & flip, m - 1 - r, r)

    # every permutation once, as each player's place (B, samples, n), for the loop and the credits
    r = jax.vmap(lambda k, a, mi: jax.vmap(lambda p: ranks(k, a, mi, p))(jnp.arange(samples)))(
        keys, game.active, m
    )

    def batch_coalitions(ex, slot):
        return game.active[ex] & (r[ex, slot // per] < (slot % per + 1)[:, None])

    prefix = jnp.arange(samples * per) % per + 1
    needed = prefix[None, :] < m[:, None]
    v = co.evaluate(logits_fn, game, batch_coalitions, samples * per, needed, chunk_size)

    # the value after each prefix: v({}), the evaluated ones, then v(all) from prefix m on
    v = v.reshape(b, samples, per)[..., : n - 1]
    after = jnp.concatenate(
        [
            jnp.broadcast_to(game.empty[:, None, None], (b, samples, 1)),
            v,
            jnp.broadcast_to(game.full[:, None, None], (b, samples, 1)),
        ],
        -1,
    )  # (B, samples, n + 1)
    k_all = jnp.arange(n + 1)
    after = jnp.where(k_all[None, None, :] >= m[:, None, None], game.full[:, None, None], after)
    credit = jnp.take_along_axis(after, r + 1, -1) - jnp.take_along_axis(after, r, -1)
    values = jnp.where(game.active, credit.mean(1), 0)
    extras = game.extras(values, samples * jnp.maximum(m - 1, 0))
    return Explanation(game.maps(values), game.t, extras)


shapley_sampling.__doc__ = shapley_sampling.__doc__.replace("{groups}", co.GROUPS_DOC)
