"""Metrics on hand-built cases with known answers, batched == per-example, chunking invariance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.xai import metrics as M
from mnistxai.xai.metrics import faithfulness

H = W = 8  # the metrics are shape-generic; small images keep the exact cases cheap


def linear_case(b=4, seed=0):
    """A linear score f(x) = sum(w * x) (one class), inputs x in [0, 1], the exact map w * x."""
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (b, H, W, 1))
    w = jax.random.normal(kw, (H, W, 1))
    score = lambda z: (z * w).sum((1, 2, 3))[:, None]
    return score, x, w, (w * x)[..., 0], jnp.zeros(b, jnp.int32)


def mlp_apply(params, z):
    return jax.nn.softmax(jax.nn.relu(z.reshape(len(z), -1) @ params["w1"]) @ params["w2"])


def tiny_mlp(seed=1, size=28, hidden=16, classes=10):
    """Parameters of a one-hidden-layer ReLU net on (size x size) images (``mlp_apply``)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(k1, (size * size, hidden)) / size,
        "w2": jax.random.normal(k2, (hidden, classes)),
    }


def test_exact_linear_map_deletion_falls_fastest_and_beats_random():
    score, x, w, exact, t = linear_case()
    others = {
        "random": M.random_attribution(x, jax.random.key(3)),
        "input": x[..., 0],
        "weights": jnp.broadcast_to(w[..., 0], exact.shape),
        "reversed": -exact,
    }
    best = M.deletion(score, x, exact, t, steps=8)
    ins = M.insertion(score, x, exact, t, steps=8)
    for name, a in others.items():
        other = M.deletion(score, x, a, t, steps=8)
        # greedy removal of the largest w_i x_i is optimal for a linear score at every step
        assert np.all(best["curve"] <= other["curve"] + 1e-5), name
        assert np.all(best["auc"] < other["auc"]), name
        assert np.all(ins["auc"] > M.insertion(score, x, a, t, steps=8)["auc"]), name
    np.testing.assert_allclose(best["curve"][:, 0], score(x)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(best["curve"][:, -1], 0.0, atol=1e-5)  # everything deleted


def test_constant_map_gives_random_order_expectation():
    # uniformly random deletion order: E[f after removing m of n pixels] = f(x) (1 - m/n), so the
    # expected trapezoid AUC of the (linear) curve is f(x) / 2 exactly
    score, x, _, _, _ = linear_case(b=1)
    reps = 400
    xs = jnp.repeat(x, reps, 0)
    out = M.deletion(
        score,
        xs,
        jnp.ones((reps, H, W)),
        jnp.zeros(reps, jnp.int32),
        steps=8,
        key=jax.random.key(0),
    )
    auc = np.asarray(out["auc"])
    assert auc.std() > 0  # the ties really were broken at random
    assert abs(auc.mean() - float(score(x)[0, 0]) / 2) < 4 * auc.std() / np.sqrt(reps)
    expected = float(score(x)[0, 0]) * (1 - np.linspace(0, 1, 9))
    se = np.asarray(out["curve"]).std(0) / np.sqrt(reps) + 1e-4  # + float32 rounding
    assert np.all(np.abs(np.asarray(out["curve"]).mean(0) - expected) < 5 * se)


def test_region_perturbation_orders_and_pixel_flipping():
    score, x, _, exact, t = linear_case()
    rand = M.random_attribution(x, jax.random.key(5))
    kw = dict(patch=2, regions=8, baseline=0.0)
    morf = M.region_perturbation(score, x, exact, t, order="morf", **kw)["aopc"]
    lerf = M.region_perturbation(score, x, exact, t, order="lerf", **kw)["aopc"]
    rand_morf = M.region_perturbation(score, x, rand, t, order="morf", **kw)["aopc"]
    assert np.all(morf > rand_morf) and np.all(lerf < rand_morf) and np.all(morf > lerf)
    # patch 1 with a black baseline is pixel flipping: the deletion curve one pixel per step
    flip = M.region_perturbation(score, x, exact, t, patch=1, regions=H * W, baseline=0.0)
    np.testing.assert_allclose(
        flip["curve"], M.deletion(score, x, exact, t, steps=H * W)["curve"], rtol=1e-5, atol=1e-5
    )


def test_a_perturbation_that_changes_no_pixel_drops_exactly_zero():
    # MNIST's black background: a square removed there changes nothing. A score whose rounding
    # depends on the batch it is computed in (as XLA's convolutions' does across batch shapes
    # and devices) must not turn that into a drop, nor infidelity's 0 into 1.
    score = lambda z: (z.sum((1, 2, 3)) + 1e-6 * z.shape[0])[:, None]  # noqa: E731
    x = jnp.zeros((3, H, W, 1)).at[0, :2, :2].set(1.0)  # two black images, one with a corner
    t = jnp.zeros(3, jnp.int32)
    kw = dict(key=jax.random.key(0), samples=5, patch=2)
    drops = np.asarray(M.infidelity_drops(score, x, t, **kw))
    np.testing.assert_array_equal(drops[1:], 0.0)
    maps = jnp.ones((3, H, W))
    np.testing.assert_array_equal(np.asarray(M.infidelity(score, x, maps, t, **kw))[1:], 0.0)


def test_faithfulness_correlation_and_infidelity_on_linear_model():
    score, x, w, exact, t = linear_case()
    key = jax.random.key(2)
    rand = M.random_attribution(x, jax.random.key(6))
    # black baseline: the drop is exactly the sum of w*x over the subset
    fc = M.faithfulness_correlation(score, x, exact, t, key=key, runs=16, subset=20)
    np.testing.assert_allclose(fc, 1.0, atol=1e-5)
    assert np.all(M.faithfulness_correlation(score, x, rand, t, key=key, runs=16, subset=20) < 0.9)
    # the gradient explains every perturbation of a linear model exactly, at any scale
    grad = jnp.broadcast_to(w[..., 0], exact.shape)
    for kind in ("square", "gaussian"):
        kw = dict(key=key, perturbation=kind, patch=2, samples=48)
        np.testing.assert_allclose(M.infidelity(score, x, 3.0 * grad, t, **kw), 0.0, atol=1e-4)
        assert np.all(M.infidelity(score, x, rand, t, **kw) > 0.1), kind


def _naive_curve(score, xi, ranks, counts, start, end, t):
    """One path point at a time in NumPy: features of rank < count from ``end``."""
    out = []
    for c in counts:
        z = np.where((ranks < c)[..., None], end, start)
        out.append(float(score(jnp.asarray(z[None]))[0, t]))
    return np.array(out)


def test_steps_that_change_no_pixel_are_skipped_and_curves_equal_a_naive_loop():
    # sparse digits-like images: 3/4 black pixels, and a map that is 0 on them (gradient x input)
    params = tiny_mlp(seed=4)
    score = functools.partial(mlp_apply, params)
    kx, kb = jax.random.split(jax.random.key(7))
    x = jax.random.uniform(kx, (3, 28, 28, 1)) * (jax.random.uniform(kb, (3, 28, 28, 1)) > 0.75)
    a = x[..., 0] * jax.random.normal(jax.random.key(8), (28, 28))
    t = jnp.array([1, 4, 9], jnp.int32)
    kw = dict(chunk_size=8)  # several packed passes (and a remainder) over the 3 x 17 points
    dele = M.deletion(score, x, a, t, steps=16, **kw)  # no key: ties broken by pixel index
    ins = M.insertion(score, x, a, t, steps=16, **kw)
    flip = M.region_perturbation(score, x, a, t, patch=4, regions=20, baseline=0.0, **kw)
    counts = np.round(np.linspace(0, 784, 17)).astype(int)
    xs = np.asarray(x)
    for i in range(3):
        ranks = np.argsort(np.argsort(-np.asarray(a[i]).ravel(), kind="stable"), kind="stable")
        ranks = ranks.reshape(28, 28)
        np.testing.assert_allclose(
            dele["curve"][i],
            _naive_curve(score, xs[i], ranks, counts, xs[i], 0 * xs[i], t[i]),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            ins["curve"][i],
            _naive_curve(score, xs[i], ranks, counts, 0 * xs[i], xs[i], t[i]),
            rtol=1e-5,
            atol=1e-6,
        )
        region = np.asarray(a[i]).reshape(7, 4, 7, 4).sum((1, 3)).ravel()
        order = np.argsort(-region, kind="stable")
        region_ranks = np.empty(49, int)
        region_ranks[order] = np.arange(49)
        pixel_ranks = np.kron(region_ranks.reshape(7, 7), np.ones((4, 4), int))
        np.testing.assert_allclose(
            flip["curve"][i],
            _naive_curve(score, xs[i], pixel_ranks, range(21), xs[i], 0 * xs[i], t[i]),
            rtol=1e-5,
            atol=1e-6,
        )
        # exactly the points that move a non-black pixel (and the first) are run
        moved = [
            np.any(xs[i][(ranks >= lo) & (ranks < hi)] != 0) for lo, hi in zip(counts, counts[1:])
        ]
        assert dele["evaluated"][i] == ins["evaluated"][i] == 1 + sum(moved)
        moved = [np.any(xs[i][pixel_ranks == r] != 0) for r in range(20)]
        assert flip["evaluated"][i] == 1 + sum(moved)
    # positive, zero (black: the skipped steps) and negative attributions, in that order
    assert np.all(dele["evaluated"] < 17) and np.all(dele["evaluated"] >= 4)
    # dense images change at every step: nothing is skipped
    dense = M.deletion(score, jax.random.uniform(kx, (3, 28, 28, 1)) + 0.01, a, t, steps=16)
    np.testing.assert_array_equal(dense["evaluated"], 17)


def test_shared_drops_give_the_same_metrics_for_every_map():
    params = tiny_mlp(seed=5)
    score = functools.partial(mlp_apply, params)
    x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    t = jnp.array([0, 2, 5, 9], jnp.int32)
    keys = jax.random.split(jax.random.key(1), 4)
    fd = M.faithfulness_drops(score, x, t, key=keys, runs=8, subset=60, chunk_size=5)
    idrops = M.infidelity_drops(score, x, t, key=keys, samples=7, chunk_size=5)
    assert fd.shape == (4, 8) and idrops.shape == (4, 7)
    for seed in (2, 3):  # two different maps scored against one set of model calls
        a = M.random_attribution(x, jax.random.key(seed))
        np.testing.assert_allclose(
            M.faithfulness_correlation(score, x, a, t, key=keys, runs=8, subset=60, drops=fd),
            M.faithfulness_correlation(score, x, a, t, key=keys, runs=8, subset=60),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            M.infidelity(score, x, a, t, key=keys, samples=7, drops=idrops),
            M.infidelity(score, x, a, t, key=keys, samples=7),
            rtol=1e-5,
            atol=1e-6,
        )
    # the drops are f(x) - f(x with the subset blacked out): check one against its definition
    pixels = np.asarray(faithfulness._subset(keys[2], 3, 784, 60))
    assert len(set(pixels.tolist())) == 60
    subset = (jnp.zeros(784, bool).at[pixels].set(True)).reshape(28, 28, 1)
    expected = score(x[2:3])[0, 5] - score(jnp.where(subset, 0.0, x[2:3]))[0, 5]
    np.testing.assert_allclose(fd[2, 3], expected, rtol=1e-5, atol=1e-6)
    # and the subsets are uniform: each of 20 pixels in half of 4,000 subsets of 10
    hits = np.zeros(20)
    for i in np.asarray(
        jax.vmap(lambda i: faithfulness._subset(keys[0], i, 20, 10))(jnp.arange(4000))
    ):
        hits[i] += 1
    assert np.all(np.abs(hits / 4000 - 0.5) < 4 * np.sqrt(0.25 / 4000))
    with pytest.raises(ValueError, match="drops must have shape"):
        M.infidelity(score, x, a, t, key=keys, samples=6, drops=idrops)
    with pytest.raises(ValueError, match="drops contains NaN"):
        M.faithfulness_correlation(
            score, x, a, t, key=keys, runs=8, subset=60, drops=fd.at[0, 0].set(jnp.nan)
        )


def test_sparseness_and_complexity_known_values():
    n = H * W
    const = jnp.ones((1, H, W))
    spike = jnp.zeros((1, H, W)).at[0, 3, 4].set(-5.0)
    pair = jnp.zeros((1, H, W)).at[0, 0, 0].set(2.0).at[0, 7, 7].set(2.0)
    np.testing.assert_allclose(M.sparseness(const), 0.0, atol=1e-6)
    np.testing.assert_allclose(M.sparseness(spike), (n - 1) / n, atol=1e-5)
    np.testing.assert_allclose(M.complexity(const), np.log(n), rtol=1e-6)
    np.testing.assert_allclose(M.complexity(spike), 0.0, atol=1e-6)
    np.testing.assert_allclose(M.complexity(pair), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(M.complexity(jnp.zeros((1, H, W))), np.log(n), rtol=1e-6)
    r = M.random_attribution(jnp.zeros((3, H, W, 1)), jax.random.key(0))
    for scale in (7.0, 1e-6, 1e-20):  # scale-free, down to maps far below any offset
        np.testing.assert_allclose(M.sparseness(scale * r), M.sparseness(r), rtol=1e-5)
    np.testing.assert_array_equal(M.sparseness(jnp.zeros((1, H, W))), 0.0)
    assert np.all(M.sparseness(r) < M.sparseness(r**8))  # a peakier map is sparser


def _rankdata(v):
    """Average ranks by an explicit loop over tie groups (scipy.stats.rankdata, 0-based)."""
    v = np.asarray(v, float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def test_spearman_with_ties_matches_loop_reference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 50).astype(np.float32)  # many ties
    b = (a + rng.normal(0, 2, 50)).astype(np.float32)
    np.testing.assert_allclose(M.average_ranks(jnp.asarray(a)), _rankdata(a))
    expected = np.corrcoef(_rankdata(a), _rankdata(b))[0, 1]
    np.testing.assert_allclose(M.spearman(jnp.asarray(a), jnp.asarray(b)), expected, rtol=1e-5)
    np.testing.assert_allclose(M.spearman(jnp.asarray(a), jnp.asarray(-a)), -1.0, rtol=1e-6)


def _ssim_loop(a, b, win=7):
    """SSIM by explicit windows (skimage's defaults: uniform window, sample covariance)."""
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            p, q = a[i : i + win, j : j + win].ravel(), b[i : i + win, j : j + win].ravel()
            cov = np.cov(p, q)
            c1, c2 = 0.01**2, 0.03**2
            vals.append(
                (2 * p.mean() * q.mean() + c1)
                * (2 * cov[0, 1] + c2)
                / ((p.mean() ** 2 + q.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
            )
    return np.mean(vals)


def test_ssim_matches_window_loop():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(12, 12)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1).astype(np.float32)
    np.testing.assert_allclose(M.ssim(jnp.asarray(a), jnp.asarray(b)), _ssim_loop(a, b), rtol=1e-4)
    np.testing.assert_allclose(M.ssim(jnp.asarray(a), jnp.asarray(a)), 1.0, rtol=1e-6)


def test_sobel_and_random_baselines():
    x = jnp.zeros((2, 10, 10, 1)).at[:, :, 5:].set(1.0)  # a vertical edge between columns 4 and 5
    s = np.asarray(M.sobel_attribution(x))
    assert np.all(s[:, 2:8, 4:6] > 0) and np.all(s[:, 2:8, :3] == 0) and np.all(s[:, 2:8, 7:9] == 0)
    r = np.asarray(M.random_attribution(x, jax.random.key(0)))
    assert r.shape == (2, 10, 10) and r.min() >= 0 and r.max() < 1 and not np.allclose(r[0], r[1])
    keys = jax.random.split(jax.random.key(0), 2)
    np.testing.assert_array_equal(
        M.random_attribution(x, keys)[1:], M.random_attribution(x[1:], keys[1:])
    )


def _gradient_map(params, xs, ts, keys):
    grad = jax.grad(lambda z, t: mlp_apply(params, z[None])[0, t])
    return jax.vmap(grad)(xs, ts)[..., 0]


def _all_metrics(params, x, a, t, keys, chunk_size):
    score = functools.partial(mlp_apply, params)
    return {
        "deletion": M.deletion(score, x, a, t, steps=5, key=keys, chunk_size=chunk_size)["curve"],
        "insertion": M.insertion(
            score, x, a, t, steps=5, blur_sigma=2.0, key=keys, chunk_size=chunk_size
        )["curve"],
        "region": M.region_perturbation(
            score, x, a, t, patch=7, regions=6, key=keys, chunk_size=chunk_size
        )["curve"],
        "faithfulness": M.faithfulness_correlation(
            score, x, a, t, key=keys, runs=6, subset=50, chunk_size=chunk_size
        ),
        "infidelity": M.infidelity(score, x, a, t, key=keys, samples=6, chunk_size=chunk_size),
        "max_sensitivity": M.max_sensitivity(_gradient_map, params, x, a, t, key=keys, samples=3),
    }


def test_batched_equals_per_example_and_chunking_changes_nothing():
    params = tiny_mlp()
    x = jax.random.uniform(jax.random.key(0), (5, 28, 28, 1))
    a = M.sobel_attribution(x)
    t = jnp.array([0, 3, 3, 7, 9], jnp.int32)
    keys = jax.random.split(jax.random.key(1), 5)
    batched = _all_metrics(params, x, a, t, keys, chunk_size=256)
    small = _all_metrics(params, x, a, t, keys, chunk_size=4)  # several passes per example
    for name in batched:
        np.testing.assert_allclose(small[name], batched[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for i in (3,):
        one = _all_metrics(params, x[i : i + 1], a[i : i + 1], t[i : i + 1], keys[i : i + 1], 256)
        for name in batched:
            np.testing.assert_allclose(
                one[name][0], batched[name][i], rtol=1e-5, atol=1e-6, err_msg=name
            )


def test_randomization_linear_model_unchanged_vs_randomized():
    # a linear classifier's gradient map is its weight row: re-drawn weights give unrelated maps
    k = jax.random.split(jax.random.key(0), 3)
    model = {"w": jax.random.normal(k[0], (10, 28, 28))}
    explain = lambda m, x, t, keys: m["w"][t] * jnp.ones_like(x[..., 0])
    x = jax.random.uniform(k[1], (6, 28, 28, 1))
    t = jnp.arange(6, dtype=jnp.int32)
    randomized = [("same", model), ("all", {"w": jax.random.normal(k[2], (10, 28, 28))})]
    out = M.model_parameter_randomization(explain, model, randomized, x, t, key=k[1])
    np.testing.assert_allclose(out["same"]["spearman"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["same"]["ssim"], 1.0, rtol=1e-5)
    assert np.all(np.abs(out["all"]["spearman"]) < 0.15)
    assert np.all(np.abs(out["all"]["ssim"]) < 0.15)


def test_cnn_cascade_randomizes_top_down_and_saliency_fails_to_stay_put(random_classifier):
    from mnistxai.pipelines.evaluate import method_explain_fn

    cascade = M.cascading_randomization(random_classifier, jax.random.key(42))
    assert [s for s, _ in cascade] == list(M.CASCADE)
    p0 = random_classifier.params
    for i, (stage, clf) in enumerate(cascade):  # exactly stages 0..i changed
        for s in M.CASCADE:
            changed = not all(
                np.array_equal(a, b)
                for a, b in zip(
                    jax.tree_util.tree_leaves(clf.params[s]), jax.tree_util.tree_leaves(p0[s])
                )
            )
            assert changed == (M.CASCADE.index(s) <= i), (stage, s)
    explain = method_explain_fn("saliency", {}, random_classifier, 3)
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    t = jnp.array([1, 2, 3], jnp.int32)
    out = M.model_parameter_randomization(
        explain,
        random_classifier,
        [("identity", random_classifier), cascade[-1]],
        x,
        t,
        key=jax.random.key(0),
    )
    np.testing.assert_allclose(out["identity"]["spearman"], 1.0, rtol=1e-6)
    assert np.mean(out[M.CASCADE[-1]]["spearman"]) < 0.6


def test_bad_inputs_raise_value_errors():
    score, x, _, exact, t = linear_case()
    with pytest.raises(ValueError, match="attributions must have shape"):
        M.deletion(score, x, exact[:, :3], t)
    with pytest.raises(ValueError, match="targets"):
        M.deletion(score, x, exact, t[:2])
    with pytest.raises(ValueError, match="NaN"):
        M.insertion(score, x, exact.at[0, 0, 0].set(jnp.nan), t)
    with pytest.raises(ValueError, match="key"):
        M.faithfulness_correlation(score, x, exact, t, key=None, subset=10)
    with pytest.raises(ValueError, match="patch"):
        M.region_perturbation(score, x, exact, t, patch=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="order"):
        M.region_perturbation(score, x, exact, t, order="up", regions=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="steps"):
        M.deletion(score, x, exact, t, steps=0)
    with pytest.raises(ValueError, match="unknown layer"):
        M.cascading_randomization(None, jax.random.key(0), stages=("conv9",))
