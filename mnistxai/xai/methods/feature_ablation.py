"""Feature ablation (Captum's ``FeatureAblation``): each feature group switched to the baseline in
turn."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.xai import _coalitions as co
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai.registry import register


@register(
    "feature_ablation",
    model="forward",
    family="perturbation",
    paper="Captum FeatureAblation (Kokhlikyan et al. 2020, arXiv:2009.07896)",
    checks=co.CHECKS,
    check=co.check(),
    stochastic=co.uses_key,
    passes=lambda o: (0, 2 + co.players(o)),
    smoke={"patch": 7},
)
def feature_ablation(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    groups: Union[str, jax.Array] = "grid",
    patch: int = 4,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Feature ablation: value_i = F(x) - F(x with group i at the baseline), of the target logit.

    As Captum's ``FeatureAblation`` with a ``feature_mask`` (one group ablated at a time, the
    drop credited to every pixel of the group). On an additive model it is each group's own
    contribution; in general it is not efficient (``efficiency_gap`` reports by how much the
    values miss F(x) - F(baseline)).

    Args:
      patch: the grid's patch side (default 4: a 7 x 7 grid of 49 players).
      {groups}
    Exact shortcut: a group whose pixels all equal the baseline changes nothing when ablated,
    so it is not run and gets 0 (extras ``evaluated``: the ablations run; ``passes`` counts
    n + 2: every group, F(x) and F(baseline)). Extras: ``group_values`` (B, n),
    ``efficiency_gap``, ``active_players``, ``evaluated``, ``labels``.
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
    drop_one = lambda ex, slot: jnp.arange(n)[None, :] != slot[:, None]
    v = co.evaluate(logits_fn, game, drop_one, n, game.active, chunk_size)
    values = jnp.where(game.active, game.full[:, None] - v, 0)
    return Explanation(game.maps(values), game.t, game.extras(values, game.active.sum(-1)))


feature_ablation.__doc__ = feature_ablation.__doc__.replace("{groups}", co.GROUPS_DOC)
