"""MST-C (Mesgari et al. 2026): structural compactness of a map's salient pixels.

The pixels at or above the map's ``threshold`` percentile (of |map|) are points in the plane;
their spread is the square root of their convex hull's area, their cohesion the number of points
over the length of the minimum spanning tree of their symmetric k-nearest-neighbour graph:

    MST-C = (1 / sqrt(A_hull)) * (|V| / L_T)    (times 100 * sqrt(H^2 + W^2) with scale_score)

A function of the map alone: no model calls. Everything runs under jit on fixed shapes, one map
at a time: the hull is found among each row's leftmost and rightmost salient pixel (every other
salient pixel of a row lies between them), the tree by Prim's algorithm on the dense graph of the
salient points, packed into ``capacity`` slots (about 1.5 times the count above the cutoff when
nothing ties) or, when ties at the cutoff make more, all H * W pixels, masked.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.metrics.registry import Batch, register_metric

_BIG = 1e30  # "no edge yet": finite, so argmin over the unreached still picks a valid vertex


def _check(attributions) -> None:
    if np.ndim(attributions) != 3:
        raise InputError(f"attributions must have shape (B, H, W), got {np.shape(attributions)}")
    b, h, w = np.shape(attributions)
    if b == 0:
        raise InputError("attributions is an empty batch")
    if h * w < 2:
        raise InputError(f"maps must have at least 2 pixels, got {h}x{w}")
    if not np.isfinite(np.asarray(attributions, np.float64)).all():
        raise InputError("attributions contains NaN or inf")


def _capacity(n: int, cut: int) -> int:
    """Slots for the packed salient points: 1.5 times the count without ties, rounded up to a
    multiple of 64 (ties at the cutoff beyond that take the unpacked path)."""
    return min(n, -(-int(1.5 * (n - cut)) // 64) * 64)


def _cutoff_index(n: int, threshold: float) -> int:
    """The sorted position whose value is the salient cutoff: np.percentile's linear
    interpolation puts the cutoff at q = threshold / 100 * (n - 1), strictly above the value at
    floor(q) when q is fractional, so "a >= cutoff" keeps exactly the values >= the value at
    ceil(q). numpy computes q, so it rounds as Quantus's call does."""
    q = float(np.percentile(np.arange(n, dtype=np.float64), threshold))
    return min(n - 1, int(math.ceil(q)))


def _hull_area2(sel):
    """Twice the convex hull area of the True pixels of the (H, W) ``sel`` (int, exact).

    The hull is the hull of each row's two extreme pixels. A candidate pair (i, j) is a
    boundary segment when every candidate lies left of or on the line i -> j and none lies
    strictly inside the segment (so collinear boundary points split an edge rather than adding
    it twice); the shoelace sum over those segments is the signed area. All points collinear:
    every segment appears in both directions and the sum is 0.
    """
    h, w = sel.shape
    cols = jnp.arange(w)
    has = sel.any(-1)
    lo = jnp.where(sel, cols, w).min(-1)
    hi = jnp.where(sel, cols, -1).max(-1)
    rows = jnp.arange(h)
    p = jnp.concatenate([jnp.stack([rows, lo], -1), jnp.stack([rows, hi], -1)])  # (2H, 2)
    valid = jnp.concatenate([has, has & (hi != lo)])
    d = p[None, :, :] - p[:, None, :]  # d[i, j] = p_j - p_i
    # cross[i, j, k] = (p_j - p_i) x (p_k - p_i)
    cross = d[:, :, None, 0] * d[:, None, :, 1] - d[:, :, None, 1] * d[:, None, :, 0]
    dot = (d[:, :, None, :] * d[:, None, :, :]).sum(-1)
    length2 = (d * d).sum(-1)
    vk = valid[None, None, :]
    all_left = ((cross >= 0) | ~vk).all(-1)
    inside = (vk & (cross == 0) & (dot > 0) & (dot < length2[:, :, None])).any(-1)
    edge = valid[:, None] & valid[None, :] & ~jnp.eye(p.shape[0], dtype=bool) & all_left & ~inside
    shoelace = p[:, None, 0] * p[None, :, 1] - p[None, :, 0] * p[:, None, 1]
    return jnp.abs(jnp.where(edge, shoelace, 0).sum())


def _prim(weights, valid, count):
    """(total length, number of trees) of the minimum spanning forest of the valid vertices of
    the dense graph ``weights`` (``_BIG``: no edge). Each step adds the closest unreached valid
    vertex; when none is reachable, it starts a new tree at cost 0."""
    n = weights.shape[0]

    def body(state):
        step, key, reached, total, trees = state
        cand = jnp.where(valid & ~reached, key, jnp.inf)
        u = jnp.argmin(cand)
        new_tree = cand[u] >= _BIG
        total = total + jnp.where(new_tree, 0, cand[u])
        return (
            step + 1,
            jnp.minimum(key, weights[u]),
            reached.at[u].set(True),
            total,
            trees + new_tree.astype(jnp.int32),
        )

    init = (
        jnp.int32(0),
        jnp.full((n,), _BIG, weights.dtype),
        jnp.zeros((n,), bool),
        jnp.zeros((), weights.dtype),
        jnp.int32(0),
    )
    _, _, _, total, trees = jax.lax.while_loop(lambda s: s[0] < count, body, init)
    return total, trees


def _forest(coords, valid, k, auto_increase_k, dtype):
    """(length, trees) of the minimum spanning forest of the symmetric k-NN graph of the valid
    points ``coords`` (m, 2): a pair joins when either is among the other's k nearest, k at most
    (count - 1), ties at the k-th distance all in. ``auto_increase_k``: the smallest k from there
    whose graph is connected (Quantus adds 1 until it is; the graphs grow with k, so a binary
    search finds the same k)."""
    m = coords.shape[0]
    diff = coords[:, None, :] - coords[None, :, :]
    d2 = (diff * diff).sum(-1)  # integers: ties compare exactly
    pair = valid[:, None] & valid[None, :] & ~jnp.eye(m, dtype=bool)
    # row i's k-th smallest entry is the squared distance of its k-th nearest valid other
    nearest = jnp.sort(jnp.where(pair, d2, jnp.iinfo(d2.dtype).max), axis=-1)
    dist = jnp.sqrt(d2.astype(dtype))
    count = valid.sum()

    def forest(kk):
        kth = jax.lax.dynamic_index_in_dim(nearest, kk - 1, axis=1, keepdims=False)
        edges = pair & ((d2 <= kth[:, None]) | (d2 <= kth[None, :]))
        return _prim(jnp.where(edges, dist, _BIG), valid, count)

    first = jnp.clip(jnp.minimum(k, count - 1), 1, max(1, m - 1))
    if not auto_increase_k:
        return forest(first)

    def halve(state):
        lo, hi = state  # forest(lo) disconnected, forest(hi) connected
        mid = (lo + hi) // 2
        connected = forest(mid)[1] <= 1
        return jnp.where(connected, lo, mid), jnp.where(connected, mid, hi)

    last = jnp.maximum(first, count - 1)  # the complete graph
    lo, hi = jax.lax.while_loop(lambda s: s[1] - s[0] > 1, halve, (first - 1, last))
    return forest(hi)


def _one(a, *, cut, capacity, k, auto_increase_k, scale_score):
    h, w = a.shape
    flat = jnp.abs(a).ravel()
    sel = flat >= jnp.sort(flat)[cut]
    count = sel.sum()
    diagonal = math.hypot(h, w)
    area2 = _hull_area2(sel.reshape(h, w))
    sqrt_area = jnp.where(area2 > 0, jnp.sqrt(area2.astype(a.dtype) / 2), diagonal)
    grid = jnp.stack(jnp.divmod(jnp.arange(h * w, dtype=jnp.int32), w), -1)
    forest = partial(_forest, k=k, auto_increase_k=auto_increase_k, dtype=a.dtype)

    def packed():
        idx = jnp.nonzero(sel, size=capacity, fill_value=0)[0]
        return forest(grid[idx], jnp.arange(capacity) < count)

    if capacity < h * w:
        length, trees = jax.lax.cond(count <= capacity, packed, lambda: forest(grid, sel))
    else:
        length, trees = forest(grid, sel)
    score = (1 / sqrt_area) * count / jnp.where(length > 0, length, 1)
    score = jnp.where(scale_score, score * diagonal * 100, score)
    score = jnp.where((count >= 2) & (length > 0), score, jnp.nan)
    zero = flat.max() == 0
    return jnp.where(zero, 0.0, score).astype(a.dtype), jnp.where(zero, 0, trees)


@partial(jax.jit, static_argnames=("cut", "capacity", "auto_increase_k"))
def _mst_c(attributions, k, scale_score, *, cut, capacity, auto_increase_k):
    a = jnp.asarray(attributions)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    one = partial(
        _one,
        cut=cut,
        capacity=capacity,
        k=k,
        auto_increase_k=auto_increase_k,
        scale_score=scale_score,
    )
    # one map per step, unbatched, so that lax.cond runs one branch only
    return jax.lax.map(one, a)


def mst_c_with_trees(
    attributions,
    *,
    threshold: float = 80.0,
    k: int = 20,
    auto_increase_k: bool = False,
    scale_score: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """(``mst_c`` scores (B,), int32 (B,) number of trees of the spanning forest: 1 when the
    k-NN graph is connected, as Quantus warns otherwise; 0 for an all-zero map)."""
    _check(attributions)
    if isinstance(threshold, bool) or not np.isfinite(threshold) or not 0 <= threshold < 100:
        raise InputError(f"threshold must satisfy 0 <= threshold < 100, got {threshold!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    _, h, w = np.shape(attributions)
    cut = _cutoff_index(h * w, float(threshold))
    return _mst_c(
        attributions,
        jnp.int32(min(int(k), h * w)),  # traced, as scale_score: changing them compiles nothing
        jnp.bool_(scale_score),
        cut=cut,
        capacity=_capacity(h * w, cut),
        auto_increase_k=bool(auto_increase_k),
    )


def mst_c(
    attributions,
    *,
    threshold: float = 80.0,
    k: int = 20,
    auto_increase_k: bool = False,
    scale_score: bool = True,
) -> jax.Array:
    """MST-C (Mesgari, Ma, Samek, Lapuschkin & Weber 2026, "Structural Compactness as a
    Complementary Criterion for Explanation Quality", arXiv:2603.29491). Higher is more compact
    and cohesive. Range (0, inf): 100 * diag / sqrt(A) * |V| / L_T; an all-zero map scores 0.

    The salient points V are the pixels (row, column) with |a| >= the ``threshold`` percentile
    of |a| (numpy's linear interpolation); A is their convex hull's area (the image diagonal
    stands in for sqrt(A) when the points are collinear or fewer than 3); L_T is the length of
    the minimum spanning tree (a forest when disconnected) of their symmetric k-NN graph, an edge
    weighing its Euclidean length. NaN when fewer than 2 points are salient.

    Defaults as Quantus 0.6's ``MSTC`` (threshold=80, k=20 neighbours, at most |V| - 1,
    auto_increase_k=False, scale_score=True: times 100 * sqrt(H^2 + W^2)). Departures:
    - k-NN ties: every point at the k-th nearest distance joins (sklearn's ``kneighbors_graph``
      keeps exactly k, choosing among ties by its search order); on the pixel grid ties are the
      rule, so the graph here can hold a few more edges (a shorter or more connected forest).
    - Quantus's ``normalise`` (default True, batch max) is left out: the score depends only on
      the order of |a| and the geometry, so dividing by a positive number changes nothing.
    - NaN / inf values are an ``InputError`` (Quantus drops non-finite pixels).
    - Computed in float32 (float64 under ``jax_enable_x64``); the hull is exact integer geometry
      where Quantus calls Qhull, whose floating point area agrees to rounding.
    On MNIST beware: when more than 80% of a map is exactly 0 (input-times-gradient maps are 0 on
    the black background) the cutoff is 0, every pixel is "salient", and the score is that of the
    full grid whatever the map (1 / (H-1) * HW / (HW-1) * 100 * diag = 146.8 at 28x28); for
    that reason the leaderboard computes it only when named.

    Args:
      attributions: (B, H, W) maps.
    Returns (B,) in the maps' float dtype (float32 at least). Cost: O(m^2 log m) for m salient
    points, one map at a time: m = 157 of 784 pixels at the default threshold without ties
    (packed into 256 slots, ~6 ms a map on a loaded 2-core CPU), all 784 when ties at the cutoff
    exceed the slots (~60 ms a map).
    """
    return mst_c_with_trees(
        attributions,
        threshold=threshold,
        k=k,
        auto_increase_k=auto_increase_k,
        scale_score=scale_score,
    )[0]


def _threshold_option(name, v):
    v = real(0.0, 100.0)(name, v)
    if v == 100:
        raise InputError(f"{name} must satisfy 0 <= {name} < 100, got {v}")
    return v


@register_metric(
    "mst_c",
    category="complexity",
    options_of=mst_c,
    options=("threshold", "k", "auto_increase_k", "scale_score"),
    checks={"threshold": _threshold_option, "k": positive_int()},
    default_set=False,
    columns={
        "mst_c": (
            "higher",
            "MST-C: hull spread x k-NN tree cohesion of top 20% |map| (Mesgari 2026)",
        )
    },
)
def _score_mst_c(batch: Batch, **options) -> dict:
    return {"mst_c": mst_c(batch.maps, **options)}
