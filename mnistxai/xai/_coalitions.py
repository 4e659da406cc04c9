"""The core the game-theoretic methods share: the game v(S) = F(x with the players in S present,
the rest at the baseline) on feature groups (``mnistxai.xai.groups``), evaluated on flat batches.

A method describes its coalitions as a function of (example, slot) indices; ``evaluate`` packs
the (example, slot) pairs the method needs across the whole batch and sends them to the model
``chunk_size`` images at a time (``over_active``), so pairs a method can skip exactly (coalitions
that differ only in null players, unused slots) cost nothing, and results do not depend on the
chunking. Null players (``groups.active_players``) are the players whose pixels all equal the
baseline: switching them changes no input, so every method gives them exactly 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai._core import at_targets, over_active, over_groups
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.groups import (
    active_players,
    check_groups,
    count_players,
    groups_option,
    labels_for,
    spread,
)
from mnistxai.xai.methods.integrated_gradients import baseline_option, check_baseline, make_baseline

# the option checks every method of the family shares
CHECKS = {
    "groups": groups_option,
    "patch": positive_int(1, 28),
    "baseline": baseline_option,
    "blur_sigma": real(0.0, open_lo=True),
}

GROUPS_DOC = """groups: 'grid' (``patch`` x ``patch`` patches, the last row and column cropped when
        ``patch`` does not divide 28), 'superpixels' (SLIC of each digit seeded on that grid,
        ``mnistxai.xai.groups``) or an integer mask (28, 28) / (B, 28, 28) of labels 0..n-1 (a
        label an image lacks is an empty player, value 0).
      baseline: the value of absent pixels: 'black' (default), 'white', 'blurred' (Gaussian blur
        of x, ``blur_sigma`` pixels), 'uniform' (U[0, 1] noise, needs ``key``) or images (1 or
        B), as Integrated Gradients takes."""


def check(max_players: Optional[int] = None) -> Callable:
    """The family's cross-option check (``register(check=...)``): baseline images and masks
    hold 1 or B entries, and at most ``max_players`` players."""

    def run(options: dict, batch: int, classifier) -> dict:
        check_baseline(options, batch, classifier)
        check_groups(options, batch, max_players or 10**9)
        return options

    return run


def players(options: dict) -> int:
    """The number of players of (raw or parsed) options: the cost models' n."""
    return count_players(options["groups"], options["patch"])


def uses_key(options: dict) -> bool:
    return isinstance(options["baseline"], str) and options["baseline"] == "uniform"


def example_keys(key: jax.Array, name: str, batch: int) -> jax.Array:
    """(B,) keys: example i draws from the stream ``name`` of ``split(key, B)[i]``."""
    return streams.fold(jax.random.split(key, batch), name)


@dataclasses.dataclass(frozen=True)
class Game:
    """The game of each example. x, base: (B, H, W, C) images and baselines; labels: int32
    (B, H, W) players; n: the number of players (static); active: bool (B, n), the non-null
    players; t: int32 (B,) targets; full, empty: (B,) v(all players) = F(x)_t and v({}) =
    F(baseline)_t."""

    x: jax.Array
    base: jax.Array
    labels: jax.Array
    n: int
    active: jax.Array
    t: jax.Array
    full: jax.Array
    empty: jax.Array

    @property
    def delta(self) -> jax.Array:
        return self.full - self.empty

    def extras(self, values: jax.Array, evaluated: jax.Array, **more) -> dict:
        """The extras every method returns: group_values (B, n), efficiency_gap (B,) =
        sum(values) - (F(x) - F(baseline)), active_players and evaluated (int32 (B,): the
        model evaluations of coalitions, F(x) and F(baseline) aside), labels (B, H, W)."""
        return {
            "group_values": values,
            "efficiency_gap": values.sum(-1) - self.delta,
            "active_players": self.active.sum(-1).astype(jnp.int32),
            "evaluated": evaluated.astype(jnp.int32),
            "labels": self.labels,
            **more,
        }

    def maps(self, values: jax.Array) -> jax.Array:
        return spread(values, self.labels)


def prepare(
    logits_fn,
    x: jax.Array,
    targets: Optional[jax.Array],
    *,
    groups,
    patch: int,
    baseline: Union[str, jax.Array],
    blur_sigma: float,
    key: Optional[jax.Array],
    chunk_size: int,
) -> Game:
    """The game of each example of ``x``: baselines, players, targets (None: the predicted
    class), F(x) and F(baseline) in one flat pass (chunks of ``chunk_size``)."""
    b = x.shape[0]
    base = make_baseline(baseline, x, key, blur_sigma)
    labels, n = labels_for(groups, patch, x)
    active = active_players(labels, x, base, n)
    logits = over_groups(logits_fn, jnp.concatenate([x, base]), chunk_size)
    t = jnp.argmax(logits[:b], -1) if targets is None else targets
    t = t.astype(jnp.int32)
    full, empty = at_targets(logits[:b], t), at_targets(logits[b:], t)
    return Game(x, base, labels, n, active, t, full, empty)


def evaluate(
    logits_fn,
    game: Game,
    coalitions: Callable[[jax.Array, jax.Array], jax.Array],
    slots: int,
    needed: jax.Array,
    chunk_size: int,
) -> jax.Array:
    """v(S) (B, slots) of the coalitions ``coalitions(ex, slot) -> bool (k, n)`` for (k,) example
    and slot indices; only the pairs where bool (B, slots) ``needed`` holds are run (the rest
    are 0), ``chunk_size`` images per model pass."""
    b, h, w, c = game.x.shape
    xf, bf = game.x.reshape(b, h * w, c), game.base.reshape(b, h * w, c)
    lab = game.labels.reshape(b, h * w)

    def run(idx):
        ex, slot = idx // slots, idx % slots
        on = jnp.take_along_axis(coalitions(ex, slot), lab[ex], axis=1)  # (k, HW)
        images = jnp.where(on[..., None], xf[ex], bf[ex]).reshape(idx.shape[0], h, w, c)
        return at_targets(logits_fn(images), game.t[ex])

    return over_active(run, needed.reshape(-1), chunk_size).reshape(b, slots)


def ranks_among_active(active: jax.Array) -> jax.Array:
    """int32 (..., n): the position of each active player among the active ones (in index
    order), and of each null player among the null ones after them."""
    order = jnp.argsort(~active, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1).astype(jnp.int32)


def random_ranks(key: jax.Array, active: jax.Array) -> jax.Array:
    """int32 (n,): a uniformly random order of the active players (ranks 0..m-1), the null
    players after them."""
    u = jax.random.uniform(key, active.shape)
    return jnp.argsort(jnp.argsort(jnp.where(active, u, 2.0))).astype(jnp.int32)


def psd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """The minimum-norm least-squares solution of a x = b for symmetric positive semi-definite
    (..., n, n) ``a``: eigenvalues below n * eps * the largest are dropped (a singular system,
    such as fewer coalitions than players, still gets a finite answer)."""
    lam, vec = jnp.linalg.eigh(a)
    cut = lam[..., -1:] * a.shape[-1] * jnp.finfo(a.dtype).eps
    inv = jnp.where(lam > cut, 1.0 / jnp.where(lam > cut, lam, 1.0), 0.0)
    return jnp.einsum("...ij,...j,...kj,...k->...i", vec, inv, vec, b)


def weighted_gram(z: jax.Array, w: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Z^T W Z (n, n), Z^T W y (n,)) of coalitions ``z`` (K, n), weights ``w`` and values
    ``y`` (K,)."""
    zw = z * w[:, None]
    return zw.T @ z, zw.T @ y


# ---- exact Shapley -------------------------------------------------------------------------


def shapley_weights(n: int) -> np.ndarray:
    """float64 (n,): w(s) = s! (n - 1 - s)! / n!, the weight of a marginal contribution to a
    coalition of s players."""
    return np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])


def coalition_bits(idx: jax.Array, n: int) -> jax.Array:
    """bool (k, n): player i is in coalition number idx when bit i of idx is set."""
    return ((idx[:, None] >> jnp.arange(n, dtype=idx.dtype)) & 1).astype(bool)


# ---- KernelSHAP's coalition plan -----------------------------------------------------------

INT_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """shap's KernelExplainer coalition plan for every possible number m = 0..n of active
    players (NumPy tables indexed by m, so the plan is chosen per image inside the program).

    budget[m]: coalitions evaluated (min(requested, 2^m - 2)); classes[m]: the size classes
    enumerated in full (sizes 1..classes and their complements); start[m, c]: the first slot of
    size class c (size c + 1), start[m, classes] the number enumerated; paired[m, c]: the class
    is listed with complements (size < m / 2); weight[m, c]: the kernel weight of each of its
    coalitions; draw[m, c]: the probability that a random draw has size c + 1; random_weight[m]:
    the weight of each random coalition. All weights of an m sum to 1.
    """

    budget: np.ndarray
    classes: np.ndarray
    start: np.ndarray
    paired: np.ndarray
    weight: np.ndarray
    draw: np.ndarray
    random_weight: np.ndarray
    slots: int


def kernel_plan(n: int, samples: int) -> KernelPlan:
    """The plan of ``samples`` coalitions (0: shap's 'auto', 2 m + 2048) for up to n players,
    following shap's ``KernelExplainer.explain`` (see ``kernel_shap``)."""
    width = max(1, -(-(n - 1) // 2))
    budget = np.zeros(n + 1, np.int64)
    classes = np.zeros(n + 1, np.int64)
    start = np.zeros((n + 1, width + 1), np.int64)
    paired = np.zeros((n + 1, width), bool)
    weight = np.zeros((n + 1, width))
    draw = np.zeros((n + 1, width))
    random_weight = np.zeros(n + 1)
    for m in range(2, n + 1):
        wanted = samples or 2 * m + 2048
        total = min(wanted, 2**m - 2) if m <= 30 else wanted
        sizes, n_paired = -(-(m - 1) // 2), (m - 1) // 2
        vector = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, sizes + 1)])
        vector[:n_paired] *= 2
        vector /= vector.sum()
        left, remaining, full = total, vector.copy(), 0
        for s in range(1, sizes + 1):
            count = math.comb(m, s) * (2 if s <= n_paired else 1)
            enough = left * remaining[s - 1] / count >= 1.0 - 1e-8
            if not (enough or total == 2**m - 2):  # everything fits: enumerate it all
                break
            full, left = full + 1, left - count
            paired[m, s - 1] = s <= n_paired
            weight[m, s - 1] = vector[s - 1] / math.comb(m, s) / (2 if s <= n_paired else 1)
            start[m, s] = start[m, s - 1] + count
            if remaining[s - 1] < 1.0:
                remaining /= 1.0 - remaining[s - 1]
        start[m, full + 1 :] = start[m, full]
        budget[m], classes[m] = total, full
        if full < sizes and total > start[m, full]:
            # every draw is a coalition and its complement (shap pairs all but the middle size,
            # which it draws singly; a pair of two middle-size coalitions has the same law)
            draw[m, full:sizes] = vector[full:] / vector[full:].sum()
            random_weight[m] = vector[full:].sum() / (total - start[m, full])
    return KernelPlan(
        budget, classes, start, paired, weight, draw, random_weight, int(budget.max(initial=1))
    )


def binomials(n: int) -> np.ndarray:
    """int32 (n + 1, n + 1): C(a, b) by Pascal's rule, clipped to int32's maximum (only ever
    compared with ranks below the sample count, which the clip leaves right)."""
    c = np.zeros((n + 1, n + 1), np.int64)
    c[:, 0] = 1
    for a in range(1, n + 1):
        c[a, 1:] = np.minimum(c[a - 1, 1:] + c[a - 1, :-1], INT_MAX)
    return c.astype(np.int32)


def unrank(rank: jax.Array, size: jax.Array, m: jax.Array, n: int, table: jax.Array) -> jax.Array:
    """bool (n,): the ``rank``-th (lexicographic, as ``itertools.combinations``) subset of
    ``size`` of the positions 0..m-1."""

    def step(i, state):
        r, left, chosen = state
        c = table[jnp.maximum(m - 1 - i, 0), jnp.maximum(left - 1, 0)]
        live = (left > 0) & (i < m)
        take = live & (r < c)
        skip = live & ~take
        return r - jnp.where(skip, c, 0), left - take, chosen.at[i].set(take)

    init = (rank.astype(jnp.int32), size.astype(jnp.int32), jnp.zeros(n, bool))
    return jax.lax.fori_loop(0, n, step, init)[2]


def lasso(
    z: jax.Array, y: jax.Array, w: jax.Array, active: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array]:
    """Weighted Lasso with an intercept, as ``sklearn.linear_model.Lasso(alpha)`` fitted with
    ``sample_weight=w`` (weights rescaled to sum to the sample count): minimises
    sum_k w_k (y_k - b - z_k . beta)^2 / (2 sum_k w_k) + alpha |beta|_1 over the ``active``
    columns of z (K, n) (the others get 0). alpha = 0: weighted least squares (``psd_solve``).
    Coordinate descent on the Gram matrix until no coefficient moves by more than 16 eps of the
    largest, at most 2,000 sweeps. Returns (beta (n,), intercept)."""
    n = z.shape[1]
    sw = w / jnp.maximum(w.sum(), jnp.finfo(w.dtype).tiny)
    zc = jnp.where(active, z - sw @ z, 0)
    ybar = sw @ y
    gram, corr = weighted_gram(zc, sw, y - ybar)
    if alpha == 0:
        beta = psd_solve(gram + jnp.diag(jnp.where(active, 0, 1).astype(z.dtype)), corr)
    else:
        diag = jnp.diagonal(gram)
        usable = active & (diag > 0)
        eps = 16 * jnp.finfo(z.dtype).eps

        def sweep(beta):
            def coordinate(j, b):
                rho = corr[j] - gram[j] @ b + diag[j] * b[j]
                new = jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - alpha, 0)
                return b.at[j].set(jnp.where(usable[j], new / jnp.where(usable[j], diag[j], 1), 0))

            return jax.lax.fori_loop(0, n, coordinate, beta)

        def cond(state):
            beta, moved, i = state
            return (moved > eps * jnp.abs(beta).max()) & (i < 2000)

        def body(state):
            beta, _, i = state
            new = sweep(beta)
            return new, jnp.abs(new - beta).max(), i + 1

        init = jnp.zeros(n, z.dtype)
        beta = jax.lax.while_loop(cond, body, (init, jnp.asarray(np.inf, z.dtype), 0))[0]
    beta = jnp.where(active, beta, 0)
    return beta, ybar - (sw @ z) @ beta


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)
