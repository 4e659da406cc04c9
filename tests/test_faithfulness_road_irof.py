"""ROAD, IROF, selectivity and sensitivity-n on hand-built cases with known answers (linear
scores, whose curves have closed forms), against naive references, batched == per-example,
chunking changes nothing, float64."""

import functools

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from mnistxai import data
from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai.metrics import METRICS
from mnistxai.xai.metrics._common import descending_order, ranks_of
from mnistxai.xai.metrics.faithfulness import _subset
from mnistxai.xai.metrics.irof import fraction_curve, irof, superpixels
from mnistxai.xai.metrics.road import NEIGHBOURS, linear_imputation, removal_counts, road
from mnistxai.xai.metrics.selectivity import selectivity
from mnistxai.xai.metrics.sensitivity_n import sensitivity_n, sensitivity_n_drops, subset_sizes

H = W = 8


@functools.lru_cache(maxsize=None)  # one score function per case: each compiles once
def linear_case(b=4, seed=0, dtype=jnp.float32, threshold=None):
    """f(x) = sum(w * x) as class 0 (and the constant ``threshold`` as class 1, so that the
    prediction stays class 0 while f > threshold); x in [0, 1]; the exact map w * x."""
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (b, H, W, 1), dtype)
    w = jax.random.normal(kw, (H, W, 1), dtype)

    def score(z):
        s = (z * w).sum((1, 2, 3))[:, None]
        return s if threshold is None else jnp.concatenate([s, jnp.full_like(s, threshold)], 1)

    return score, x, w, (w * x)[..., 0], jnp.zeros(b, jnp.int32)


def mlp_case(b=5, size=12, seed=1):
    """Softmax of a one-hidden-layer ReLU net on (size x size) images; a Sobel-like map."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w1 = jax.random.normal(k1, (size * size, 16)) / size
    w2 = jax.random.normal(k2, (16, 10))
    score = lambda z: jax.nn.softmax(jax.nn.relu(z.reshape(len(z), -1) @ w1.astype(z.dtype)) @ w2)
    x = jax.random.uniform(k3, (b, size, size, 1))
    x = x.at[:, : size // 2].set(0.0)  # a black half, as MNIST's background: skipped steps
    a = x[..., 0] * (jnp.arange(size)[None, :, None] % 3 - 1.0) + 0.1 * jnp.arange(size)
    return score, x, a, jnp.array([0, 3, 3, 7, 9][:b], jnp.int32)


def dense_imputation(xi, removed):
    """Quantus's noisy_linear_imputation system without noise, built entry by entry and solved
    densely in float64: (H, W) image, bool (H, W) removed."""
    h, w = removed.shape
    xi = np.asarray(xi, np.float64)
    idx = np.flatnonzero(removed)
    pos = {p: i for i, p in enumerate(idx)}
    a, rhs = np.zeros((len(idx), len(idx))), np.zeros(len(idx))
    for i, p in enumerate(idx):
        r, c = divmod(p, w)
        for dy, dx, wt in NEIGHBOURS:
            if 0 <= r + dy < h and 0 <= c + dx < w:
                q = (r + dy) * w + c + dx
                a[i, i] += wt
                if q in pos:
                    a[i, pos[q]] -= wt
                else:
                    rhs[i] += wt * xi.ravel()[q]
    out = xi.ravel().copy()
    out[idx] = np.linalg.solve(a, rhs)
    return out.reshape(h, w)


def stencil_residual(v, removed):
    """Largest |deg_i v_i - sum_j w_ij v_j| over the removed pixels of an (H, W) image."""
    h, w = v.shape
    p = np.pad(np.asarray(v, np.float64), 1)
    mask = np.pad(np.ones((h, w)), 1)
    nb = sum(wt * p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx, wt in NEIGHBOURS)
    deg = sum(wt * mask[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx, wt in NEIGHBOURS)
    return np.abs(np.where(removed, deg * p[1:-1, 1:-1] - nb, 0)).max()


def morf_masks(a, counts):
    """bool (B, L, H, W): the counts[l] largest entries of each map (no ties in these maps)."""
    b = a.shape[0]
    ranks = np.argsort(np.argsort(-np.asarray(a).reshape(b, -1), 1, kind="stable"), 1)
    return ranks.reshape(a.shape)[:, None] < np.asarray(counts)[None, :, None, None]


# ---- ROAD ---------------------------------------------------------------------------------


def test_imputation_solves_the_stencil_system_of_a_dense_solve():
    x = jax.random.uniform(jax.random.key(0), (3, H, W, 1))
    fractions = jnp.array([0.2, 0.6, 0.95])[:, None, None]
    removed = jax.random.uniform(jax.random.key(1), (3, H, W)) < fractions
    impute = jax.jit(linear_imputation)
    v = np.asarray(impute(x, removed, tol=1e-6))
    for i in range(3):
        r = np.asarray(removed[i])
        assert stencil_residual(v[i, ..., 0], r) < 1e-5
        np.testing.assert_allclose(v[i, ..., 0], dense_imputation(x[i, ..., 0], r), atol=1e-5)
        np.testing.assert_array_equal(v[i, ..., 0][~r], np.asarray(x[i, ..., 0])[~r])  # kept
    # nothing kept: no data, imputed as 0 (the sparse system is singular there)
    assert np.all(np.asarray(impute(x, jnp.ones((3, H, W), bool), tol=1e-6)) == 0)


def test_road_with_a_linear_model_equals_its_closed_form():
    b, steps = 32, 6
    score, x, w, exact, t = linear_case(b=b, threshold=0.0)
    keys = jax.random.split(jax.random.key(3), b)
    kw = dict(steps=steps, key=keys, tol=1e-6)  # one compilation: noise is a traced value
    out = road(score, x, exact, t, noise=0.0, **kw)
    counts = removal_counts(H * W, steps)
    np.testing.assert_array_equal(counts, [5, 16, 26, 37, 48, 58])  # 64 (2k - 1) / 12, floored
    masks = morf_masks(exact, counts)
    wn = np.asarray(w[..., 0], np.float64)
    expected = np.array(
        [[(wn * dense_imputation(x[i, ..., 0], m)).sum() for m in masks[i]] for i in range(b)]
    )
    np.testing.assert_allclose(out["curve"], expected, atol=1e-4)
    np.testing.assert_allclose(out["auc"], expected.mean(1), atol=1e-4)
    # accuracy: class 0 is predicted while w . imputed x > 0 (the constant class 1)
    np.testing.assert_array_equal(out["accuracy"], (np.asarray(out["curve"]) > 0).astype(float))
    np.testing.assert_allclose(out["accuracy_auc"], np.asarray(out["accuracy"]).mean(1))
    # the exact map removes the largest w_i x_i first: below its negation's curve
    assert np.all(out["auc"] < road(score, x, -exact, t, noise=0.0, **kw)["auc"])
    # the noise: 0.05 N(0, 1) on the removed pixels only, so the score moves by
    # 0.05 sum_removed w_i z_i ~ N(0, (0.05 |w_removed|)^2)
    noisy = road(score, x, exact, t, noise=0.05, **kw)
    sd = 0.05 * np.sqrt((masks * wn**2).sum((2, 3)))
    z = (np.asarray(noisy["curve"]) - np.asarray(out["curve"])) / sd
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 0.15
    with pytest.raises(InputError, match="key"):  # noise needs a key: no silent default
        road(score, x, exact, t, steps=steps)
    # Quantus's default percentages 1, 3, ..., 99 are steps=50, floored as int(size * p / 100)
    np.testing.assert_array_equal(
        removal_counts(784, 50), [int(784 * p / 100) for p in range(1, 100, 2)]
    )


# ---- IROF ---------------------------------------------------------------------------------


def quadrants(b):
    """Four 4 x 4 segments of an 8 x 8 image."""
    seg = (np.arange(H)[:, None] // 4) * 2 + np.arange(W)[None, :] // 4
    return np.broadcast_to(seg, (b, H, W)).copy()


def test_irof_equals_a_loop_quantus_formula_greedy_order_and_random_order():
    b = 32
    _, x, w, _, t = linear_case(b=b, seed=2)
    x, w = 0.5 + 0.5 * x, jnp.abs(w)
    score = lambda z: (z * w).sum((1, 2, 3))[:, None]  # positive, falls as pixels are averaged
    seg, keys = quadrants(b), jax.random.split(jax.random.key(4), b)
    run = lambda a: irof(score, x, a, t, segments=seg, key=keys)  # one compilation
    # the exact map of a removal to the mean: w (x - mean x); on equal segments its order is
    # the greedy one (largest drop first), so its curve is the lowest, its area over the largest
    exact = (w * (x - x.mean((1, 2, 3), keepdims=True)))[..., 0]
    out = run(exact)
    for i in range(3):  # a loop reference
        xi, ai = np.asarray(x[i, ..., 0], np.float64), np.asarray(exact[i])
        means = np.array([ai[seg[i] == s].mean() for s in range(4)])
        z, ps = xi.copy(), [(xi * np.asarray(w[..., 0])).sum()]
        for s in np.argsort(-means):
            z[seg[i] == s] = xi.mean()
            ps.append((z * np.asarray(w[..., 0])).sum())
        c = np.array(ps) / ps[0]
        np.testing.assert_allclose(out["curve"][i], c, rtol=1e-5)
        np.testing.assert_allclose(out["aoc"][i], 1 - np.trapezoid(c, dx=1 / 4), rtol=1e-4)
        quantus = 4 - np.trapezoid(c[1:], dx=1)  # Quantus: S - trapz(c_1..c_S, dx=1)
        np.testing.assert_allclose(4 * out["aoc"][i] + (1 + c[1]) / 2, quantus, rtol=1e-5)
    assert np.all(np.asarray(out["segments"]) == 4) and np.all(np.asarray(out["evaluated"]) == 5)
    np.testing.assert_allclose(fraction_curve(out["curve"], out["segments"], 5), out["curve"])
    for other in (-exact, jax.random.normal(jax.random.key(9), exact.shape)):
        o = run(other)
        assert np.all(np.asarray(out["curve"]) <= np.asarray(o["curve"]) + 1e-6)
    assert np.all(out["aoc"] > run(-exact)["aoc"])
    # a constant map: every segment order equally likely, so E[c_k] is linear in k and
    # E[aoc] = (1 - c_S) / 2, c_S the all-mean image's ratio
    const = run(jnp.ones_like(exact))
    gap = np.asarray(const["aoc"]) - (1 - np.asarray(const["curve"])[:, -1]) / 2
    assert np.asarray(const["aoc"]).std() > 0 and abs(gap.mean()) < 4 * gap.std() / np.sqrt(b)


def test_slic_on_an_mnist_digit_is_a_nine_by_nine_grid(mnist_dir):
    images = data.load("mnist", "test", mnist_dir)[0][:2]
    seg = superpixels(data.to_model_input(images))
    assert seg.shape == (2, 28, 28) and np.all(seg.reshape(2, -1).max(1) == 80)
    np.testing.assert_array_equal(seg[0], seg[1])  # the same grid for every digit
    assert np.all(np.bincount(seg[0].ravel()) >= 9)


# ---- selectivity --------------------------------------------------------------------------


def test_selectivity_linear_closed_form_greedy_optimal_and_skips():
    score, x, w, exact, t = linear_case()
    x = x.at[:, :2, :2].set(0.0)  # one all-black 2 x 2 patch per image: its step is skipped
    exact = (w * x)[..., 0]
    out = selectivity(score, x, exact, t, patch=2)
    sums = np.asarray(exact).reshape(4, 4, 2, 4, 2).sum((2, 4)).reshape(4, -1)
    top = np.sort(sums, 1)[:, ::-1]
    expected = sums.sum(1, keepdims=True) - np.concatenate([np.zeros((4, 1)), np.cumsum(top, 1)], 1)
    np.testing.assert_allclose(out["curve"], expected, atol=1e-5)
    np.testing.assert_allclose(
        out["auc"], (expected.sum(1) - (expected[:, 0] + expected[:, -1]) / 2) / 16, atol=1e-5
    )
    np.testing.assert_array_equal(out["evaluated"], 16)  # 17 points, one black patch
    rand = jax.random.normal(jax.random.key(4), exact.shape)
    for other in (-exact, rand):
        o = selectivity(score, x, other, t, patch=2)
        assert np.all(np.asarray(out["curve"]) <= np.asarray(o["curve"]) + 1e-5)
        assert np.all(out["auc"] < o["auc"])


# ---- sensitivity-n ------------------------------------------------------------------------


def test_sensitivity_n_exact_map_of_a_linear_model_and_a_naive_loop():
    score, x, w, _, t = linear_case()
    x = x.at[:, : H // 2].set(0.0)  # a black half: single-pixel subsets there are skipped
    exact = (w * x)[..., 0]
    keys = jax.random.split(jax.random.key(5), 4)
    kw = dict(key=keys, sizes=5, runs=12)
    out = sensitivity_n(score, x, exact, t, **kw)
    grid = subset_sizes(H * W, 5, 0.8)
    np.testing.assert_array_equal(out["sizes"], grid)
    # the black baseline (each image's minimum, 0): the drop is the map summed on the subset
    np.testing.assert_allclose(out["curve"], 1.0, atol=1e-5)
    rand = jax.random.normal(jax.random.key(6), exact.shape)
    assert np.all(sensitivity_n(score, x, rand, t, **kw)["correlation"] < 0.9)
    # a constant map: the sums do not vary, the correlation is 0 by convention
    np.testing.assert_array_equal(
        sensitivity_n(score, x, jnp.ones_like(exact), t, **kw)["curve"], 0
    )
    # the shared drops give the same result with no model call, and equal a naive loop
    drops = sensitivity_n_drops(score, x, t, **kw)
    np.testing.assert_array_equal(
        sensitivity_n(score, x, exact, t, drops=drops, **kw)["curve"], out["curve"]
    )
    f0 = np.asarray(score(x))[:, 0]
    for i in range(2):
        for j, n in enumerate(grid):
            for r in range(12):
                idx = np.asarray(_subset(jax.random.fold_in(keys[i], n), r, H * W, n))
                z = np.asarray(x[i]).reshape(-1).copy()
                z[idx] = 0.0
                f = (z * np.asarray(w).reshape(-1)).sum()
                np.testing.assert_allclose(drops[i, j, r], f0[i] - f, atol=2e-6)
    assert np.sum(np.asarray(drops)[:, 0] == 0) >= 8  # single black pixels: not evaluated


# ---- shared properties --------------------------------------------------------------------


def grid12(b):
    """Nine 4 x 4 segments of a 12 x 12 image."""
    seg = (np.arange(12)[:, None] // 4) * 3 + np.arange(12)[None, :] // 4
    return np.broadcast_to(seg, (b, 12, 12)).copy()


def loop_reference(score, x, a, t, keys):
    """The four metrics' curves one example at a time, one model input at a time, from their
    definitions (the random draws made as the docstrings say)."""
    out = {k: [] for k in ("road", "road_accuracy", "irof", "selectivity", "sensitivity_n")}
    impute = jax.jit(linear_imputation)
    f = lambda z, ti: np.asarray(score(jnp.asarray(z, jnp.float32)[None]))[0]
    for xi, ai, ti, k in zip(np.asarray(x), np.asarray(a), np.asarray(t), keys):
        tie = streams.fold(k, "tie_break")
        # ROAD: the removed pixels imputed and noised, point by point
        ranks = np.asarray(ranks_of(descending_order(jnp.asarray(ai.ravel()), tie))).reshape(12, 12)
        curve, correct = [], []
        for c in removal_counts(144, 5):
            removed = ranks < c
            z = np.asarray(impute(xi[None], removed[None]))[0]
            noise = jax.random.normal(
                jax.random.fold_in(streams.fold(k, "road_noise"), c), xi.shape
            )
            s = f(z + 0.01 * removed[..., None] * np.asarray(noise), ti)
            curve.append(s[ti])
            correct.append(float(np.argmax(s) == ti))
        out["road"].append(curve)
        out["road_accuracy"].append(correct)
        # IROF: nine 4 x 4 segments by mean relevance, replaced by the image mean
        seg = grid12(1)[0]
        means = jnp.asarray([ai[seg == g].mean() for g in range(9)])
        z, p = xi.copy(), [f(xi, ti)[ti]]
        for g in np.asarray(descending_order(means, tie)):
            z[seg == g] = xi.mean()
            p.append(f(z, ti)[ti])
        out["irof"].append(np.array(p) / p[0])
        # selectivity: sixteen 3 x 3 patches by summed relevance, set to the image minimum
        sums = jnp.asarray(ai.reshape(4, 3, 4, 3).sum((1, 3)).ravel())
        z, p = xi.copy(), [f(xi, ti)[ti]]
        for g in np.asarray(descending_order(sums, tie)):
            r, c = divmod(int(g), 4)
            z[3 * r : 3 * r + 3, 3 * c : 3 * c + 3] = xi.min()
            p.append(f(z, ti)[ti])
        out["selectivity"].append(p)
        # sensitivity-n: Pearson over the random subsets of each size
        corr = []
        for n in subset_sizes(144, 3, 0.8):
            sums, drops = [], []
            for r in range(5):
                idx = np.asarray(_subset(jax.random.fold_in(k, n), r, 144, n))
                z = xi.reshape(-1).copy()
                z[idx] = xi.min()
                sums.append(ai.ravel()[idx].sum())
                drops.append(f(xi, ti)[ti] - f(z.reshape(xi.shape), ti)[ti])
            corr.append(np.corrcoef(sums, drops)[0, 1])
        out["sensitivity_n"].append(corr)
    return {k: np.array(v) for k, v in out.items()}


def test_batched_equals_per_example_loop_whatever_the_chunking():
    score, x, a, t = mlp_case()
    keys = jax.random.split(jax.random.key(8), 5)
    # 3 model inputs a pass: passes that straddle examples and split every curve
    r = road(score, x, a, t, steps=5, key=keys, chunk_size=3)
    batched = {
        "road": r["curve"],
        "road_accuracy": r["accuracy"],
        "irof": irof(score, x, a, t, segments=grid12(5), key=keys, chunk_size=3)["curve"],
        "selectivity": selectivity(score, x, a, t, patch=3, key=keys, chunk_size=3)["curve"],
        "sensitivity_n": sensitivity_n(score, x, a, t, key=keys, sizes=3, runs=5, chunk_size=3)[
            "curve"
        ],
    }
    reference = loop_reference(score, x, a, t, keys)
    for name in batched:
        np.testing.assert_allclose(
            batched[name], reference[name], rtol=1e-5, atol=2e-6, err_msg=name
        )


def test_float64():
    with jax.enable_x64(True):
        score, x, w, exact, t = linear_case(b=2, dtype=jnp.float64)
        r = road(score, x, exact, t, steps=3, noise=0.0, tol=1e-12)
        assert r["curve"].dtype == jnp.float64
        masks = morf_masks(exact, removal_counts(H * W, 3))
        expected = [
            [(np.asarray(w[..., 0]) * dense_imputation(x[i, ..., 0], m)).sum() for m in masks[i]]
            for i in range(2)
        ]
        np.testing.assert_allclose(r["curve"], expected, atol=1e-9)
        seg = quadrants(2)
        assert irof(lambda z: score(z) ** 2 + 1, x, exact, t, segments=seg)["aoc"].dtype == (
            jnp.float64
        )
        s = selectivity(score, x, exact, t, patch=4, baseline=0.0)
        sums = np.sort(np.asarray(exact).reshape(2, 2, 4, 2, 4).sum((2, 4)).reshape(2, -1), 1)
        left = sums.sum(1, keepdims=True) - np.cumsum(np.c_[np.zeros(2), sums[:, ::-1]], 1)
        assert s["auc"].dtype == jnp.float64
        np.testing.assert_allclose(s["curve"], left, atol=1e-12)
        n = sensitivity_n(score, x, exact, t, key=jax.random.key(0), sizes=3, runs=8, baseline=0.0)
        assert n["curve"].dtype == jnp.float64
        np.testing.assert_allclose(n["curve"], 1.0, atol=1e-12)


def test_bad_inputs_raise_input_errors():
    score, x, _, exact, t = linear_case()
    key = jax.random.key(0)
    bad = [
        lambda: road(score, x, exact[:, :3], t, key=key),
        lambda: road(score, x, exact, t, steps=0, key=key),
        lambda: road(score, x, exact, t, steps=65, key=key),
        lambda: road(score, x, exact, t, order="up", key=key),
        lambda: road(score, x, exact, t, noise=-1.0, key=key),
        lambda: road(score, x.at[0, 0, 0, 0].set(jnp.nan), exact, t, key=key),
        lambda: irof(score, x, exact, t, segments=quadrants(4)[:, :3]),
        lambda: irof(score, x, exact, t, segments=np.zeros((4, H, W), int)),
        lambda: irof(score, x, exact, t, segmentation="watershed"),
        lambda: selectivity(score, x, exact, t, patch=3),
        lambda: selectivity(score, x, exact, t, baseline="grey"),
        lambda: sensitivity_n(score, x, exact, t, key=key, runs=1),
        lambda: sensitivity_n(score, x, exact, t, key=key, sizes=52),
        lambda: sensitivity_n(score, x, exact, t, key=None),
        lambda: sensitivity_n(score, x, exact, t, key=key, sizes=3, runs=4, drops=np.ones((4, 3))),
        lambda: sensitivity_n(score, x, exact, t[:2], key=key),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(InputError):
            call()
    for name, options in [
        ("road", {"steps": 0}),
        ("road", {"noise": -0.1}),
        ("selectivity", {"patch": 5}),
        ("sensitivity_n", {"sizes": 700}),
        ("irof", {"segmentation": "grid"}),
    ]:
        with pytest.raises(InputError):
            METRICS[name].parse(options)


def test_registry_entries():
    for name, default in [
        ("road", False),
        ("irof", False),
        ("selectivity", True),
        ("sensitivity_n", False),
    ]:
        m = METRICS[name]
        assert m.category == "faithfulness" and m.default_set is default, name
    assert METRICS["sensitivity_n"].shared is not None and METRICS["irof"].shared is not None
