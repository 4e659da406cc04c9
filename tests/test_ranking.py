"""The leaderboard's statistics (``mnistxai.pipelines.ranking``): bootstrap coverage on a known
distribution, pairing, NaN handling, rank intervals, and Kendall's W against closed forms and a
naive loop."""

import itertools

import numpy as np
import pytest

from mnistxai.pipelines.ranking import bootstrap, concordance, kendalls_w, rank_rows
from mnistxai.util.errors import InputError


def test_intervals_cover_the_true_mean_at_about_the_nominal_rate():
    """400 data sets of 50 exponential draws (mean 1): the 90% percentile interval holds the
    true mean in about 90% of them (the percentile bootstrap runs a little short for a skewed
    distribution and N = 50, so [0.85, 0.95])."""
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(400):
        values = rng.exponential(1.0, 50)
        out = bootstrap({"m": values}, "higher", samples=500, level=0.9, seed=rep)["m"]
        assert out["ci_low"] <= out["mean"] <= out["ci_high"]
        hits += out["ci_low"] <= 1.0 <= out["ci_high"]
    assert 0.85 <= hits / 400 <= 0.95, hits / 400


def test_wider_level_gives_wider_intervals_and_the_seed_decides():
    values = np.random.default_rng(1).normal(size=40)
    a = bootstrap({"m": values}, samples=300, level=0.8, seed=3)["m"]
    b = bootstrap({"m": values}, samples=300, level=0.99, seed=3)["m"]
    assert b["ci_low"] < a["ci_low"] < a["ci_high"] < b["ci_high"]
    again = bootstrap({"m": values}, samples=300, level=0.8, seed=np.random.default_rng(3))["m"]
    assert again["ci_low"] == a["ci_low"] and again["ci_high"] == a["ci_high"]
    assert bootstrap({"m": values}, samples=300, level=0.8, seed=4)["m"]["ci_low"] != a["ci_low"]
    np.testing.assert_allclose(a["mean"], values.mean())


def test_a_method_better_on_every_image_ranks_first_in_every_resample():
    rng = np.random.default_rng(2)
    base = rng.normal(size=30)
    # noisy per image, but "best" beats the others on every single image
    values = {"mid": base, "best": base + 0.01, "worst": base - rng.uniform(0.1, 2, 30)}
    for better, order in (
        ("higher", ("best", "mid", "worst")),
        ("lower", ("worst", "mid", "best")),
    ):
        out = bootstrap(values, better, samples=200, seed=0)
        for rank, name in enumerate(order, 1):
            r = out[name]
            assert (r["rank"], r["rank_low"], r["rank_high"], r["rank_median"]) == (rank,) * 4
            assert (r["rank_samples"] == rank).all()


def test_resamples_are_paired_across_methods():
    """Two methods equal up to a constant shift: paired resamples keep their order in every
    resample, and their bootstrap means differ by exactly that shift."""
    rng = np.random.default_rng(3)
    a = rng.exponential(1.0, 25)
    out = bootstrap({"a": a, "b": a + 0.5}, "lower", samples=100, level=0.9, seed=7)
    assert (out["a"]["rank_samples"] == 1).all() and (out["b"]["rank_samples"] == 2).all()
    np.testing.assert_allclose(out["b"]["ci_low"] - out["a"]["ci_low"], 0.5)
    np.testing.assert_allclose(out["b"]["ci_high"] - out["a"]["ci_high"], 0.5)


def test_ties_share_the_average_rank_and_nans_are_dropped_per_method():
    values = {"x": np.array([1.0, 2.0, 3.0]), "y": np.array([1.0, 2.0, 3.0]), "z": np.zeros(3)}
    out = bootstrap(values, samples=50, seed=0)
    assert out["x"]["rank"] == out["y"]["rank"] == 1.5 and out["z"]["rank"] == 3
    assert (out["x"]["rank_samples"] == 1.5).all()
    # NaN images leave the method's mean over its finite values; all NaN: no mean, no rank
    v = {"a": np.array([1.0, np.nan, 3.0, np.nan]), "b": np.full(4, np.nan), "c": np.zeros(4)}
    out = bootstrap(v, samples=400, level=0.9, seed=1)
    assert out["a"]["mean"] == 2.0 and out["a"]["n"] == 2
    assert 1.0 <= out["a"]["ci_low"] <= out["a"]["ci_high"] <= 3.0
    assert np.isnan(out["b"]["mean"]) and np.isnan(out["b"]["rank"]) and out["b"]["n"] == 0
    assert np.isnan(out["b"]["rank_samples"]).all()
    # "a" has no finite value in the resamples that drew only its NaN images: no rank there
    ra = out["a"]["rank_samples"]
    assert np.isnan(ra).any() and (ra[~np.isnan(ra)] == 1).all() and out["c"]["rank_high"] <= 2


def test_bootstrap_means_equal_a_naive_loop():
    rng = np.random.default_rng(5)
    values = {"p": rng.normal(size=12), "q": rng.normal(size=12)}
    values["q"][[2, 7]] = np.nan
    samples = 64
    out = bootstrap(values, "higher", samples=samples, level=0.5, seed=9)
    idx = np.random.default_rng(9).integers(0, 12, (samples, 12))
    for name, v in values.items():
        means = [np.nanmean(v[i]) if np.isfinite(v[i]).any() else np.nan for i in idx]
        lo, hi = np.nanquantile(means, [0.25, 0.75])
        np.testing.assert_allclose([out[name]["ci_low"], out[name]["ci_high"]], [lo, hi])
    naive = [(1.0 if np.nanmean(values["p"][i]) > np.nanmean(values["q"][i]) else 2.0) for i in idx]
    np.testing.assert_array_equal(out["p"]["rank_samples"], naive)


def test_rank_rows():
    np.testing.assert_array_equal(rank_rows(np.array([3.0, 1.0, 3.0, 2.0])), [1.5, 4, 1.5, 3])
    np.testing.assert_array_equal(rank_rows(np.array([3.0, 1.0, 2.0]), "lower"), [3, 1, 2])
    np.testing.assert_array_equal(rank_rows(np.array([np.nan, 1.0, 2.0])), [np.nan, 2, 1])


def _naive_w(ranks):
    """Kendall's W by the textbook recipe, one loop per sum."""
    m, n = len(ranks), len(ranks[0])
    sums = [sum(ranks[j][i] for j in range(m)) for i in range(n)]
    mean = m * (n + 1) / 2
    s = sum((r - mean) ** 2 for r in sums)
    t = 0
    for row in ranks:
        for value in set(row):
            k = sum(1 for r in row if r == value)
            t += k**3 - k
    return 12 * s / (m * m * (n**3 - n) - m * t)


def test_kendalls_w_known_answers():
    assert kendalls_w(np.array([[1, 2, 3, 4]] * 3)) == pytest.approx(1.0)
    # two reversed rankings: every rank sum is n + 1, so S = 0
    for n in (2, 5, 8):
        assert kendalls_w(np.array([np.arange(1, n + 1), np.arange(n, 0, -1)])) == 0.0
    # by hand: rank sums 4.5, 4.5, 10, 11 around 7.5 -> S = 36.5; one tie of two -> T = 6;
    # W = 12 * 36.5 / (9 * 60 - 3 * 6) = 438 / 522
    ranks = [[1, 2, 3, 4], [1.5, 1.5, 3, 4], [2, 1, 4, 3]]
    assert kendalls_w(np.array(ranks)) == pytest.approx(438 / 522)
    assert _naive_w(ranks) == pytest.approx(438 / 522)
    # scores instead of ranks, and orientation-preserving transforms, give the same W
    assert kendalls_w(np.array([[10, 20, 30, 40], [5, 5, 7, 9], [0.2, 0.1, 0.9, 0.3]])) == (
        pytest.approx(438 / 522)
    )


def test_kendalls_w_equals_the_naive_loop_on_random_rankings_with_ties():
    rng = np.random.default_rng(6)
    for m, n in itertools.product((2, 3, 7), (3, 6)):
        scores = rng.integers(0, 4, (m, n)).astype(float)  # many ties
        ranks = rank_rows(scores.T, "lower").T
        denom = m * m * (n**3 - n)
        if np.all(scores == scores[:, :1]):
            continue
        want = _naive_w(ranks.tolist())
        assert 0 <= want <= 1 and denom > 0
        assert kendalls_w(scores) == pytest.approx(want, abs=1e-12), (m, n)
    # batched: one W per leading index, equal to the W of each matrix
    stack = rng.normal(size=(5, 4, 6))
    np.testing.assert_allclose(kendalls_w(stack), [kendalls_w(s) for s in stack])


def test_kendalls_w_drops_incomplete_rankings_and_degenerate_cases():
    full = np.array([[1.0, 2, 3], [1, 3, 2], [np.nan, 1, 2]])
    assert kendalls_w(full) == pytest.approx(kendalls_w(full[:2]))
    assert np.isnan(kendalls_w(np.array([[1.0, 2, 3]])))  # one ranking
    assert np.isnan(kendalls_w(np.ones((3, 4))))  # every item tied in every ranking
    with pytest.raises(InputError):
        kendalls_w(np.arange(3.0))


def test_concordance_interval_from_the_resampled_ranks():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 40))  # 6 methods x 40 images
    metrics = {f"m{j}": base + 0.3 * rng.normal(size=base.shape) for j in range(4)}
    point, per = [], []
    for values in metrics.values():
        out = bootstrap({f"x{i}": v for i, v in enumerate(values)}, samples=200, seed=11)
        point.append([out[f"x{i}"]["rank"] for i in range(6)])
        per.append([out[f"x{i}"]["rank_samples"] for i in range(6)])
    c = concordance(np.array(point), np.array(per), level=0.9)
    assert c["metrics"] == 4 and c["methods"] == 6
    assert 0 <= c["ci_low"] <= c["ci_high"] <= 1 and c["w"] > 0.5
    assert c["w"] == pytest.approx(kendalls_w(np.array(point)))


def test_bad_input():
    with pytest.raises(InputError, match="same N"):
        bootstrap({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(InputError, match="better"):
        bootstrap({"a": np.zeros(3)}, "more")
    with pytest.raises(InputError, match="samples"):
        bootstrap({"a": np.zeros(3)}, samples=0)
    with pytest.raises(InputError, match="level"):
        bootstrap({"a": np.zeros(3)}, level=1.0)
    with pytest.raises(InputError, match="seed"):
        bootstrap({"a": np.zeros(3)}, seed=1.5)
