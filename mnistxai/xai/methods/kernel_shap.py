"""KernelSHAP (Lundberg & Lee 2017) over feature groups, with shap's coalition plan."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from mnistxai.xai import _coalitions as co
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.registry import register


def _slots(options: dict) -> int:
    return co.kernel_plan(co.players(options), options["samples"]).slots


@register(
    "kernel_shap",
    model="forward",
    family="perturbation",
    paper="Lundberg & Lee 2017, arXiv:1705.07874",
    checks={**co.CHECKS, "samples": positive_int(0), "ridge": real(0.0)},
    check=co.check(),
    stochastic=True,
    passes=lambda o: (0, 2 + _slots(o)),
    quick={"samples": 512},
    smoke={"samples": 24, "patch": 7},
)
def kernel_shap(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    key: jax.Array,
    samples: int = 0,
    ridge: float = 0.0,
    groups: Union[str, jax.Array] = "grid",
    patch: int = 4,
    baseline: Union[str, jax.Array] = "black",
    blur_sigma: float = 4.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """KernelSHAP (Lundberg & Lee 2017, arXiv:1705.07874) of the target logit over feature groups.

    The Shapley values are the weighted least-squares fit phi of v(S) - v({}) ~ sum_{i in S}
    phi_i over sampled coalitions S with the Shapley kernel (M - 1) / (C(M, |S|) |S| (M - |S|)),
    under the efficiency constraint sum phi = F(x) - F(baseline), enforced exactly (the fit is
    solved on the constraint's affine subspace), as shap's ``KernelExplainer``.

    Coalitions follow shap's ``KernelExplainer.explain`` (shap df974a1): M is the number of
    active players (shap's "varying" groups: those with a pixel that differs from the baseline;
    the others get exactly 0); subset sizes s and M - s whose every coalition the budget affords
    are enumerated in full, in order s = 1, 2, ...; the rest of the budget is drawn at random,
    a size from the kernel's remaining mass, a uniform subset of it and its complement; each
    random coalition weighs the remaining kernel mass over their number. Departures: shap keeps
    drawing until it has ``samples`` distinct coalitions and merges repeats into weights; here a
    repeat is kept as another row of the fit (the same fit as merged weights), so the budget is
    exactly ``samples`` evaluations; shap draws the middle size of an even M singly, here with
    its complement (the same law); shap's default ``l1_reg='num_features(10)'`` (LARS keeps 10
    groups) is not applied, the fit uses every active group, as ``l1_reg=False`` (Captum's
    ``KernelShap`` uses all features too, but draws sizes i.i.d., approximates the constraint
    with weight 1e6 on the two end coalitions and defaults to 25 samples).

    Args:
      samples: coalitions per image, the empty and full ones aside (0, default: shap's 'auto',
        2 M + 2048; at most 2^M - 2, then every coalition is enumerated and the values are
        exact).
      ridge: an L2 penalty ridge |phi|^2 added to the fit, whose kernel weights sum to 1 (0:
        plain least squares; the constraint still holds exactly).
      patch: the grid's patch side (default 4: a 7 x 7 grid of 49 players).
      {groups}
    Extras: ``group_values`` (B, n), ``efficiency_gap`` (rounding only), ``active_players``,
    ``evaluated`` (coalitions run), ``labels``. Random draws: example i uses the stream
    "kernel_shap" of ``split(key, B)[i]``.
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
    plan = co.kernel_plan(n, samples)
    slots = plan.slots
    table = jnp.asarray(co.binomials(n))
    budget, classes = jnp.asarray(plan.budget, jnp.int32), jnp.asarray(plan.classes, jnp.int32)
    start = jnp.asarray(plan.start, jnp.int32)
    paired = jnp.asarray(plan.paired)
    weight, random_weight = jnp.asarray(plan.weight, dtype), jnp.asarray(plan.random_weight, dtype)
    log_draw = jnp.log(jnp.asarray(plan.draw, dtype))
    m = game.active.sum(-1).astype(jnp.int32)  # (B,)
    keys = co.example_keys(key, "kernel_shap", b)
    rank = co.ranks_among_active(game.active)  # (B, n)

    def coalition(m, active, rank, key, slot):
        """(bool (n,) players, weight) of one slot of one example."""
        enumerated = start[m, classes[m]]
        cls = jnp.sum(start[m, 1:] <= slot).astype(jnp.int32)
        cls = jnp.minimum(cls, paired.shape[1] - 1)
        local = slot - start[m, cls]
        pair = paired[m, cls]
        pos = co.unrank(jnp.where(pair, local // 2, local), cls + 1, m, n, table)
        flip_enum = pair & (local % 2 == 1)

        q = slot - enumerated
        k_size, k_subset = jax.random.split(jax.random.fold_in(key, q // 2))
        size = jax.random.categorical(k_size, log_draw[m]) + 1
        order = co.random_ranks(k_subset, active)  # ranks of players
        chosen = (order < size) & active
        is_enum = slot < enumerated
        on_pos = pos[rank]  # players at their positions among the active ones
        members = jnp.where(is_enum, on_pos, chosen) & active
        flip = jnp.where(is_enum, flip_enum, q % 2 == 1)
        members = jnp.where(flip, active & ~members, members)
        w = jnp.where(is_enum, weight[m, cls], random_weight[m])
        return members, jnp.where(slot < budget[m], w, 0)

    # every coalition once, (B, slots, n) bool: the model loop gathers its rows and the fit
    # reads them, so the sampling code is compiled once
    z, w = jax.vmap(
        lambda *a: jax.vmap(coalition, in_axes=(None, None, None, None, 0))(*a, jnp.arange(slots))
    )(m, game.active, rank, keys)
    needed = jnp.arange(slots)[None, :] < budget[m][:, None]
    v = co.evaluate(logits_fn, game, lambda ex, slot: z[ex, slot], slots, needed, chunk_size)

    def solve(args):
        zi, wi, mi, active, vi, empty, delta = args
        gram, corr = co.weighted_gram(zi.astype(dtype), wi, vi - empty)
        a = active.astype(dtype)
        gram = gram + ridge * jnp.diag(a)
        # phi = phi0 + u with phi0 = delta / m on the active players and u in their sum-zero
        # subspace: the constrained fit is an unconstrained one in u
        mf = jnp.maximum(mi, 1).astype(dtype)
        phi0 = a * delta / mf
        proj = jnp.diag(a) - jnp.outer(a, a) / mf
        scale = jnp.maximum(jnp.trace(gram), jnp.finfo(dtype).tiny) / mf
        lhs = proj @ gram @ proj + scale * (jnp.outer(a, a) / mf + jnp.diag(1 - a))
        u = co.psd_solve(lhs, proj @ (corr - gram @ phi0))
        return jnp.where(active, phi0 + proj @ u, 0)

    values = jax.lax.map(
        solve, (z, w, m, game.active, v, game.empty, game.delta), batch_size=min(b, 16)
    )
    extras = game.extras(values, jnp.minimum(budget[m], slots))
    return Explanation(game.maps(values), game.t, extras)


kernel_shap.__doc__ = kernel_shap.__doc__.replace("{groups}", co.GROUPS_DOC)
