"""Monotonicity, monotonicity correlation, faithfulness estimate and sufficiency: known answers,
naive-loop references, batch == per-example, chunking invariance, float64, bad input.

The score functions are module-level objects and most calls share shapes and options: each new
(score function, shape, static option) compiles the metric again, which is what costs time here.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mnistxai.util.errors import InputError
from mnistxai.xai import metrics as M
from mnistxai.xai.metrics.faithfulness_estimate import faithfulness_estimate
from mnistxai.xai.metrics.monotonicity import monotonicity
from mnistxai.xai.metrics.monotonicity_correlation import monotonicity_correlation, noise_values
from mnistxai.xai.metrics.registry import Batch
from mnistxai.xai.metrics.sufficiency import sufficiency, sufficiency_predictions

H = W = 8
B = 4


def linear_score(w):
    """f(z) = sum(w * z), one class."""
    return lambda z: (z * w).sum((1, 2, 3))[:, None]


def images(b=B, seed=0, sparse=False, dtype=jnp.float32):
    kx, kb = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (b, H, W, 1), dtype) * 0.9 + 0.05
    return x * (jax.random.uniform(kb, x.shape) > 0.6) if sparse else x


def random_map(x, seed=3):
    """Gaussian times the image: 0 exactly on black pixels (as gradient x input)."""
    return jax.random.normal(jax.random.key(seed), x.shape[:3], x.dtype) * x[..., 0]


_W = jax.random.normal(jax.random.key(1), (H, W, 1))
LIN = linear_score(_W)
POS = linear_score(jnp.abs(_W))
_k1, _k2 = jax.random.split(jax.random.key(2))
_W1, _W2 = jax.random.normal(_k1, (H * W, 12)) / H, jax.random.normal(_k2, (12, 5))
MLP = lambda z: jax.nn.softmax(jnp.tanh(z.reshape(len(z), -1) @ _W1) @ _W2)  # noqa: E731
T0 = jnp.zeros(B, jnp.int32)

# the reference configuration: MLP probabilities, B sparse images, per-example keys, chunk 256
XS = images(seed=5, sparse=True)
AS = jax.random.normal(jax.random.key(6), XS.shape[:3])  # no ties: the loops need no tie order
TS = jnp.array([0, 2, 4, 1], jnp.int32)
KEYS = jax.random.split(jax.random.key(4), B)


def _reference_runs(x, a, t, keys, chunk_size):
    return {
        "monotonicity": monotonicity(MLP, x, a, t, key=keys, chunk_size=chunk_size),
        "estimate": faithfulness_estimate(MLP, x, a, t, key=keys, chunk_size=chunk_size),
        "correlation": monotonicity_correlation(MLP, x, a, t, key=keys, chunk_size=chunk_size),
    }


@pytest.fixture(scope="module")
def reference():
    return _reference_runs(XS, AS, TS, KEYS, 256)


def _target_score(x, t):
    return float(MLP(jnp.asarray(x)[None])[0, t])


# ---- monotonicity -------------------------------------------------------------------------------


def test_monotonicity_of_additive_models_is_one_whatever_the_order():
    x = images(sparse=True)
    c = jnp.abs(jax.random.normal(jax.random.key(3), (H, W, 1)))
    # a linear score with non-negative weights, and a sum of monotone per-pixel functions
    per_pixel = lambda z: (c * jnp.sqrt(z) + z**3).sum((1, 2, 3))[:, None]
    exact = (jnp.abs(_W) * x)[..., 0]
    for score, step in ((POS, 4), (per_pixel, 1)):
        for a in (exact, -exact, random_map(x)):  # an additive model: every order rises
            r = monotonicity(score, x, a, T0, features_in_step=step, absolute=False)
            np.testing.assert_array_equal(r["monotonic"], 1.0)
            np.testing.assert_array_equal(r["fraction"], 1.0)
    # one pixel that lowers the score fails every map, unless it comes in the first step (the
    # curve has no point on the bare canvas, as Quantus's): a sum of terms, order cannot help
    x = images()
    w_neg = jnp.abs(_W).at[3, 5, 0].set(-1.0)
    late = random_map(x).at[:, 3, 5].set(10.0)
    for a in ((w_neg * x)[..., 0], late):
        r = monotonicity(linear_score(w_neg), x, a, T0)
        np.testing.assert_array_equal(r["monotonic"], 0.0)
        np.testing.assert_allclose(r["fraction"], 62 / 63)  # 63 steps, one falls


def test_monotonicity_known_order_with_an_interaction():
    # f = z1 - z0 + 2 z0 z1 on 2x2 ones: pixel 1 before pixel 0 gives 1 then 2 (rises), pixel 0
    # before pixel 1 gives -1 then 2 (falls once, unless it is the very first step)
    x = jnp.ones((1, 2, 2, 1))
    score = lambda z: (z[:, 0, 1, 0] - z[:, 0, 0, 0] + 2 * z[:, 0, 0, 0] * z[:, 0, 1, 0])[:, None]
    t = jnp.zeros(1, jnp.int32)
    good, bad = jnp.array([[[2.0, 1.0], [0.0, 0.0]]]), jnp.array([[[1.0, 2.0], [0.0, 0.0]]])
    r = monotonicity(score, x, good, t)
    np.testing.assert_allclose(r["curve"], [[0.0, 0.0, 1.0, 2.0]])
    assert r["monotonic"][0] == 1.0 and r["fraction"][0] == 1.0
    r = monotonicity(score, x, bad, t)
    np.testing.assert_allclose(r["curve"], [[0.0, 0.0, -1.0, 2.0]])
    assert r["monotonic"][0] == 0.0
    np.testing.assert_allclose(r["fraction"], [2 / 3])
    # absolute (the default) ranks |a|: pixel 3, 1, 0, 2, rises; signed: pixel 2, 0, 3, 1, falls
    mixed = jnp.array([[[-2.0, 1.0], [-3.0, 0.0]]])
    r = monotonicity(score, x, mixed, t)
    np.testing.assert_allclose(r["curve"], [[0.0, 1.0, 2.0, 2.0]])
    assert r["monotonic"][0] == 1.0
    signed = monotonicity(score, x, mixed, t, absolute=False)
    np.testing.assert_allclose(signed["curve"], [[0.0, -1.0, -1.0, 2.0]])
    assert signed["monotonic"][0] == 0.0


def test_monotonicity_equals_a_naive_loop_and_skips_black_steps(reference):
    r = reference["monotonicity"]
    xs = np.asarray(XS)
    for i in range(B):
        # Quantus's loop as its docstring means it: from black, pixels back in ascending |a|
        order = np.argsort(np.abs(np.asarray(AS[i])).ravel())
        canvas, curve = np.zeros((H * W, 1), np.float32), []
        for p in order:
            canvas[p] = xs[i].reshape(-1, 1)[p]
            curve.append(_target_score(canvas.reshape(H, W, 1), int(TS[i])))
        np.testing.assert_allclose(r["curve"][i], curve, rtol=1e-5, atol=1e-6)
        assert r["monotonic"][i] == float(np.all(np.diff(curve) >= 0))
        # run: the first point, then the steps that add a non-black pixel
        moving = xs[i].reshape(-1)[order[1:]] != 0
        assert r["evaluated"][i] == 1 + moving.sum()
        np.testing.assert_allclose(r["fraction"][i], (np.diff(curve)[moving] >= 0).mean())
    assert np.all(r["evaluated"] < 40)  # sparse: most of the 64 steps add black pixels


# ---- faithfulness estimate ----------------------------------------------------------------------


def test_faithfulness_estimate_of_a_linear_logit_and_its_exact_map_is_one():
    for sparse in (False, True):
        x = images(sparse=sparse)
        exact = (_W * x)[..., 0]
        for step in (1, 4):
            r = faithfulness_estimate(LIN, x, exact, T0, features_in_step=step)
            np.testing.assert_allclose(r["correlation"], 1.0, atol=1e-5)
            rev = faithfulness_estimate(LIN, x, -exact, T0, features_in_step=step)
            np.testing.assert_allclose(rev["correlation"], -1.0, atol=1e-5)
        # one pixel a group: every drop is its w_i x_i, black pixels (drop 0) not run
        r = faithfulness_estimate(LIN, x, exact, T0)
        drops = np.sort(np.asarray(r["drops"]), 1)
        np.testing.assert_allclose(drops, np.sort(np.asarray(exact).reshape(B, -1), 1), atol=1e-5)
        nonblack = (np.asarray(x)[..., 0] != 0).reshape(B, -1).sum(1)
        np.testing.assert_array_equal(r["evaluated"], 1 + nonblack)


def test_faithfulness_estimate_equals_a_naive_loop(reference):
    r = reference["estimate"]
    for i in range(B):
        xi, ai = np.asarray(XS[i]), np.asarray(AS[i]).ravel()
        order = np.argsort(-ai)
        f0 = _target_score(xi, int(TS[i]))
        drops = []
        for p in order:  # each pixel removed alone from the intact image
            z = xi.reshape(-1, 1).copy()
            z[p] = 0.0
            drops.append(f0 - _target_score(z.reshape(xi.shape), int(TS[i])))
        np.testing.assert_allclose(r["drops"][i], drops, atol=1e-6)
        expect = np.corrcoef(ai[order], drops)[0, 1]
        np.testing.assert_allclose(r["correlation"][i], expect, atol=1e-5)


# ---- monotonicity correlation -------------------------------------------------------------------


def test_monotonicity_correlation_linear_exact_is_one_random_near_zero():
    key, t = jax.random.key(2), jnp.zeros(16, jnp.int32)
    x = jnp.full((16, H, W, 1), 0.3)  # constant image: each change is w_i^2 E_s[(u_s - 0.3)^2]
    r = monotonicity_correlation(LIN, x, (_W * x)[..., 0], t, key=key, features_in_step=1)
    np.testing.assert_allclose(r["correlation"], 1.0, atol=1e-6)
    # groups of 4: (sum of w)^2 rises with the sum of |w| when w >= 0
    pos = (jnp.abs(_W) * x)[..., 0]
    r = monotonicity_correlation(POS, x, pos, t, key=key, features_in_step=4)
    np.testing.assert_allclose(r["correlation"], 1.0, atol=1e-6)
    # a random map of the same model: uncorrelated (64 pixels, 16 images: s.e. of the mean ~0.03)
    x = images(16, seed=7)
    rand = jax.random.normal(jax.random.key(9), x.shape[:3])
    r = monotonicity_correlation(LIN, x, rand, t, key=key, features_in_step=1)
    assert abs(float(r["correlation"].mean())) < 0.1


def test_monotonicity_correlation_equals_a_naive_loop(reference):
    r = reference["correlation"]
    noise = np.asarray(noise_values(KEYS, 8, jnp.float32))  # the default 8 samples
    for i in range(B):
        xi, ai = np.asarray(XS[i]), np.abs(np.asarray(AS[i])).ravel()
        order = np.argsort(ai)
        f0 = _target_score(xi, int(TS[i]))
        changes, sums = [], []
        for s in range(0, 64, 16):  # the default 16 pixels a group
            sq = []
            for u in noise[i]:
                z = xi.reshape(-1, 1).copy()
                z[order[s : s + 16]] = u
                sq.append((_target_score(z.reshape(xi.shape), int(TS[i])) - f0) ** 2)
            changes.append(np.mean(sq))
            sums.append(ai[order[s : s + 16]].sum())
        np.testing.assert_allclose(r["changes"][i], changes, rtol=1e-4, atol=1e-9)
        expect = np.corrcoef(np.argsort(np.argsort(sums)), np.argsort(np.argsort(changes)))[0, 1]
        np.testing.assert_allclose(r["correlation"][i], expect, atol=1e-5)


# ---- sufficiency --------------------------------------------------------------------------------


def _two_class_by_brightness(z):
    """Class 1 when the top-left pixel is bright, else 0."""
    s = z[:, 0, 0, 0] - 0.5
    return jnp.stack([-s, s], 1)


def test_sufficiency_known_answers():
    # predictions 0, 0, 1, 1, 1 (top-left pixel)
    x = jnp.zeros((5, H, W, 1)).at[2:, 0, 0, 0].set(1.0)
    # clusters {0, 1, 2} and {3, 4}, 16 pixels each; one pixel tells a cluster's maps apart
    maps = jnp.zeros((5, H, W)).at[:3, 0:2].set(1.0).at[3:, 2:4].set(1.0)
    maps = maps.at[:, 7, 7].set(jnp.array([0.0, 0.01, 0.02, 0.0, 0.01]))
    r = sufficiency(_two_class_by_brightness, x, maps)
    np.testing.assert_array_equal(r["neighbours"], [2, 2, 2, 1, 1])
    np.testing.assert_allclose(r["sufficiency"], [0.5, 0.5, 0.0, 1.0, 1.0])
    # threshold 1: every other image applies; threshold 0 with distinct maps: none does
    r = sufficiency(_two_class_by_brightness, x, maps, threshold=1.0)
    np.testing.assert_allclose(r["sufficiency"], [1 / 4, 1 / 4, 2 / 4, 2 / 4, 2 / 4])
    r = sufficiency(_two_class_by_brightness, x, maps, threshold=0.0)
    np.testing.assert_array_equal(r["neighbours"], 0)
    np.testing.assert_array_equal(r["sufficiency"], 0.0)


def _scipy_sufficiency(maps, preds, threshold):
    flat = np.abs(np.asarray(maps, np.float64)).reshape(len(maps), -1)
    flat = flat[:, flat.var(0) > 0]  # scipy divides 0 by 0 on a constant pixel: leave it out
    dist = cdist(flat, flat, "seuclidean")
    near = (dist / dist.max() <= threshold) & ~np.eye(len(maps), dtype=bool)
    agree = (near & (preds[:, None] == preds[None])).sum(1)
    return near.sum(1), agree / np.maximum(near.sum(1), 1)


def test_sufficiency_equals_scipy_seuclidean_and_ignores_constant_pixels():
    x, score = images(12, seed=9), _two_class_by_brightness
    maps = jax.random.normal(jax.random.key(6), (12, H, W))
    preds = np.asarray(score(x)).argmax(1)
    # a pixel that is 0 in every map (scipy: every distance NaN, Quantus: every score 0)
    for m in (maps, maps.at[:, 2, 3].set(0.0)):
        for threshold in (0.7, 0.8, 0.9):
            neighbours, expect = _scipy_sufficiency(m, preds, threshold)
            r = sufficiency(score, x, m, threshold=threshold)
            np.testing.assert_array_equal(r["neighbours"], neighbours)
            np.testing.assert_allclose(r["sufficiency"], expect, atol=1e-6)
    assert 0 < neighbours.sum() < 12 * 11  # the case has neighbours and non-neighbours


def test_sufficiency_is_permutation_equivariant_and_predictions_shared():
    x, score = images(12, seed=10), _two_class_by_brightness
    maps = jax.random.normal(jax.random.key(7), (12, H, W))
    r = sufficiency(score, x, maps, threshold=0.85)
    perm = np.random.default_rng(0).permutation(12)
    rp = sufficiency(score, x[perm], maps[perm], threshold=0.85)
    np.testing.assert_allclose(rp["sufficiency"], r["sufficiency"][perm], atol=1e-6)
    preds = sufficiency_predictions(score, x, chunk_size=5)
    np.testing.assert_array_equal(preds, np.asarray(score(x)).argmax(1))
    given = sufficiency(score, x, maps, threshold=0.85, predictions=preds)
    np.testing.assert_array_equal(given["sufficiency"], r["sufficiency"])


# ---- shared properties --------------------------------------------------------------------------


def test_batch_equals_per_example_and_chunking_changes_nothing(reference):
    # a map with many ties too (broken by the per-example keys): the same shapes, no new compile
    tied = jnp.round(AS * 2) / 2 * (XS[..., 0] > 0)
    for a, whole in ((AS, reference), (tied, _reference_runs(XS, tied, TS, KEYS, 256))):
        # examples one at a time, in passes of 7 inputs (packed passes and a remainder)
        for i in (0, 3):
            one = _reference_runs(XS[i : i + 1], a[i : i + 1], TS[i : i + 1], KEYS[i : i + 1], 7)
            for name, out in one.items():
                for k, v in out.items():
                    np.testing.assert_allclose(
                        v[0], whole[name][k][i], rtol=1e-5, atol=1e-6, err_msg=f"{name}/{k}"
                    )


def test_float64():
    with jax.enable_x64(True):
        w = jax.random.normal(jax.random.key(1), (H, W, 1), jnp.float64)
        score = linear_score(w)
        x = images(dtype=jnp.float64)
        exact = (w * x)[..., 0]
        r = faithfulness_estimate(score, x, exact, T0)
        assert r["correlation"].dtype == jnp.float64
        np.testing.assert_allclose(r["correlation"], 1.0, atol=1e-12)
        xc = jnp.full_like(x, 0.3)
        r = monotonicity_correlation(
            score, xc, (w * xc)[..., 0], T0, key=jax.random.key(0), features_in_step=1
        )
        assert r["changes"].dtype == jnp.float64
        np.testing.assert_allclose(r["correlation"], 1.0, atol=1e-12)
        r = monotonicity(linear_score(jnp.abs(w)), x, exact, T0)
        assert r["curve"].dtype == jnp.float64 and np.all(r["monotonic"] == 1.0)
        s = sufficiency(_two_class_by_brightness, x, exact, threshold=1.0)
        assert s["sufficiency"].dtype == jnp.float64


def test_registered_for_the_leaderboard(reference):
    batch = Batch(
        x=XS,
        maps=AS,
        targets=TS,
        keys=KEYS,
        probabilities=MLP,
        logits=MLP,  # the same function: the calls reuse the reference runs' compilations
        chunk_size=256,
    )
    expected = {
        "monotonicity": ("monotonicity", "monotonicity_fraction"),
        "monotonicity_correlation": ("monotonicity_corr",),
        "faithfulness_estimate": ("faithfulness_estimate",),
        "sufficiency": ("sufficiency",),
    }
    values = {}
    for name, columns in expected.items():
        metric = M.METRICS[name]
        assert metric.category == "faithfulness" and not metric.default_set
        assert tuple(metric.columns) == columns
        options = metric.parse({})
        shared = None if metric.shared is None else metric.shared(batch, **options)
        out = metric.fn(dataclasses.replace(batch, shared=shared), **options)
        for c in columns:
            assert out[c].shape == (B,) and np.isfinite(out[c]).all(), (name, c)
            values[c] = np.asarray(out[c])
    np.testing.assert_array_equal(values["monotonicity"], reference["monotonicity"]["monotonic"])
    np.testing.assert_array_equal(
        values["monotonicity_corr"], reference["correlation"]["correlation"]
    )
    np.testing.assert_array_equal(
        values["faithfulness_estimate"], reference["estimate"]["correlation"]
    )
    with pytest.raises(InputError, match="features_in_step"):
        M.METRICS["monotonicity"].parse({"features_in_step": 5})
    with pytest.raises(InputError, match="threshold"):
        M.METRICS["sufficiency"].parse({"threshold": -0.1})


def test_bad_inputs_raise_input_errors():
    x = images()
    a, key = (_W * x)[..., 0], jax.random.key(0)
    with pytest.raises(InputError, match="features_in_step must divide"):
        monotonicity(LIN, x, a, T0, features_in_step=3)
    with pytest.raises(InputError, match="features_in_step"):
        faithfulness_estimate(LIN, x, a, T0, features_in_step=0)
    with pytest.raises(InputError, match="attributions must have shape"):
        faithfulness_estimate(LIN, x, a[:, :3], T0)
    with pytest.raises(InputError, match="NaN"):
        monotonicity(LIN, x, a.at[0, 0, 0].set(jnp.nan), T0)
    with pytest.raises(InputError, match="targets"):
        monotonicity(LIN, x, a, T0[:2])
    with pytest.raises(InputError, match="key"):
        monotonicity_correlation(LIN, x, a, T0, key=None)
    with pytest.raises(InputError, match="samples"):
        monotonicity_correlation(LIN, x, a, T0, key=key, samples=0)
    with pytest.raises(InputError, match="threshold"):
        sufficiency(LIN, x, a, threshold=-1.0)
    with pytest.raises(InputError, match="predictions"):
        sufficiency(LIN, x, a, predictions=jnp.zeros(3, jnp.int32))
    with pytest.raises(InputError, match="baseline"):
        faithfulness_estimate(LIN, x, a, T0, baseline=float("nan"))
