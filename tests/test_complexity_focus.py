"""Effective complexity, MST-C, Focus and Consistency: known answers on hand-built maps, equality
with NumPy / SciPy transcriptions of Quantus 0.6's definitions (85bc29d; k-NN ties all joining,
the stated departure), batch = per example, bad input, float64, and the leaderboard entries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import ConvexHull

from mnistxai.data import load, to_model_input
from mnistxai.util.errors import InputError
from mnistxai.xai import metrics as M
from mnistxai.xai.metrics.consistency import consistency, predicted_classes
from mnistxai.xai.metrics.effective_complexity import effective_complexity
from mnistxai.xai.metrics.focus import focus, focus_of_method, make_mosaics
from mnistxai.xai.metrics.mst_c import mst_c, mst_c_with_trees
from mnistxai.xai.metrics.registry import Batch


def _batch(**kw):
    base = dict(
        x=None,
        maps=None,
        targets=None,
        keys=None,
        probabilities=None,
        logits=None,
        chunk_size=256,
    )
    return Batch(**{**base, **kw})


# ---- effective complexity ---------------------------------------------------------------------


def _effective_reference(maps, eps=1e-5, abs=True, normalise=True):
    out = []
    for a in np.asarray(maps, np.float64):
        if normalise and np.abs(a).max() > 0:
            a = a / np.abs(a).max()
        if abs:
            a = np.abs(a)
        out.append(int((a.ravel() > eps).sum()))
    return np.array(out)


def test_effective_complexity_counts_the_pixels_above_eps():
    maps = np.zeros((4, 28, 28), np.float32)
    maps[0, :3, :5] = 2.0  # 15 equal pixels
    maps[1, 0, 0] = 1.0
    maps[1, 1, :10] = 0.5e-5  # below eps once divided by the max
    maps[1, 2, :4] = 2e-5
    maps[2, 5, 5:9] = -3.0  # negative: counted under |.|, not without
    maps[2, 6, 5] = 1.0
    np.testing.assert_array_equal(effective_complexity(maps), [15, 5, 5, 0])
    np.testing.assert_array_equal(effective_complexity(maps, abs=False), [15, 5, 1, 0])
    np.testing.assert_array_equal(effective_complexity(maps * 1e-6, normalise=False), [0, 0, 0, 0])
    np.testing.assert_array_equal(effective_complexity(maps * 1e-6), [15, 5, 5, 0])
    np.testing.assert_array_equal(effective_complexity(maps, eps=0.3), [15, 1, 5, 0])
    assert effective_complexity(maps).dtype == jnp.float32
    with jax.enable_x64(True):
        wide = effective_complexity(maps.astype(np.float64) * 1e-300)  # below float32's range
        assert wide.dtype == jnp.float64
        np.testing.assert_array_equal(wide, [15, 5, 5, 0])


def test_effective_complexity_matches_a_loop_and_is_per_example():
    rng = np.random.default_rng(0)
    maps = (rng.normal(size=(6, 28, 28)) * (rng.random((6, 28, 28)) < 0.3)).astype(np.float32)
    maps[3] *= 1e-4  # a small map beside large ones: its own max normalises it
    for kw in ({}, {"abs": False}, {"normalise": False, "eps": 0.5}, {"eps": 0.3}):
        got = np.asarray(effective_complexity(maps, **kw))
        np.testing.assert_array_equal(got, _effective_reference(maps, **kw), err_msg=str(kw))
        single = [int(effective_complexity(maps[i : i + 1], **kw)[0]) for i in range(6)]
        np.testing.assert_array_equal(got, single)


def test_effective_complexity_rejects_bad_input():
    with pytest.raises(InputError, match="shape"):
        effective_complexity(np.zeros((28, 28)))
    with pytest.raises(InputError, match="NaN"):
        effective_complexity(np.full((1, 4, 4), np.nan))
    with pytest.raises(InputError, match="eps"):
        effective_complexity(np.zeros((1, 4, 4)), eps=-1.0)
    with pytest.raises(InputError, match="eps"):
        M.METRICS["effective_complexity"].parse({"eps": -0.1})


# ---- MST-C -------------------------------------------------------------------------------------


def _knn_graph(points, k):
    """Symmetric distance-weighted k-NN graph, every neighbour at the k-th distance included."""
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    n = len(points)
    g = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        kth = np.sort(d[i, others])[k - 1]
        for j in others:
            if d[i, j] <= kth:
                g[i, j] = d[i, j]
    return np.maximum(g, g.T)


def _mst_c_reference(a, threshold=80.0, k=20, auto_increase_k=False, scale_score=True):
    """Quantus 0.6's ``MSTC._evaluate_map`` steps, with SciPy's ConvexHull and MST."""
    a = np.abs(np.asarray(a, np.float64))
    h, w = a.shape
    diagonal = float(np.hypot(h, w))
    if a.max() == 0:
        return 0.0, 0
    points = np.argwhere(a >= np.percentile(a, threshold)).astype(np.float64)
    n = len(points)
    if n < 2:
        return float("nan"), 1
    sqrt_area = diagonal
    if n >= 3 and np.linalg.matrix_rank(points - points[0]) >= 2:
        area = ConvexHull(points).volume
        if area > 1e-12:
            sqrt_area = np.sqrt(area)
    kk = min(k, n - 1)
    graph = _knn_graph(points, kk)
    parts = connected_components(csr_matrix(graph), directed=False, return_labels=False)
    while auto_increase_k and parts != 1 and kk < n - 1:
        kk += 1
        graph = _knn_graph(points, kk)
        parts = connected_components(csr_matrix(graph), directed=False, return_labels=False)
    length = minimum_spanning_tree(csr_matrix(graph)).sum()
    score = n / (sqrt_area * length)
    return (score * diagonal * 100 if scale_score else score), parts


def _mst_maps():
    rng = np.random.default_rng(3)
    maps = []
    for _ in range(3):  # sparse peaks over a faint floor: the packed path
        m = rng.random((12, 12)) * 0.01
        m[rng.integers(0, 12, 25), rng.integers(0, 12, 25)] = 1 + rng.random(25)
        maps.append(m)
    maps.append(rng.normal(size=(12, 12)))  # signed, continuous
    m = np.full((12, 12), 0.1)
    m[0:3, 0:3], m[8:12, 7:12] = 1, -1  # two far clusters: a forest for small k
    maps.append(m)
    m = np.full((12, 12), 0.1)
    m[3, :], m[3:12, 5] = 1, 1  # a T of collinear runs
    maps.append(m)
    m = np.zeros((12, 12))
    m[2, 3:9] = rng.random(6) + 1  # > 80% zeros: every pixel is salient (the unpacked path)
    maps.append(m)
    maps.append(np.zeros((12, 12)))
    return np.array(maps, np.float32)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"k": 1},
        {"k": 3, "auto_increase_k": True},
        {"k": 1, "auto_increase_k": True, "scale_score": False},
    ],
)
def test_mst_c_matches_a_scipy_transcription(options):
    maps = _mst_maps()
    scores, trees = mst_c_with_trees(maps, **options)
    ref = [_mst_c_reference(m, **options) for m in maps]
    np.testing.assert_allclose(scores, [r[0] for r in ref], rtol=2e-6)
    np.testing.assert_array_equal(trees, [r[1] for r in ref])
    if options == {"k": 1}:
        assert (np.asarray(trees) > 1).any()  # the forest case is exercised


def test_mst_c_known_answers():
    diagonal = np.hypot(12, 12)
    maps = np.zeros((8, 12, 12), np.float32)  # the shape of _mst_maps: compiled once
    s = 6  # 36 pixels >= the 29 above the 80th percentile: exactly the block is salient
    maps[0, 5 : 5 + s, 3 : 3 + s] = 2.0
    maps[1, 4, 3:9] = 1.0  # > 80% zeros: the whole grid is salient
    maps[2] = 0.5
    maps[2, 10, :] = 3.0  # threshold 99.9: the tied row, collinear: the diagonal for sqrt(area)
    maps[3] = np.arange(144).reshape(12, 12)  # threshold 99.9: one pixel, undefined
    block = 100 * diagonal * s * s / ((s - 1) * (s * s - 1))  # hull (s-1)^2, tree s^2 - 1
    grid = 100 * diagonal * 144 / (11 * 143)
    got = np.asarray(mst_c(maps))
    np.testing.assert_allclose(got[[0, 1, 4]], [block, grid, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        mst_c(maps, scale_score=False)[:2], [block, grid] / (100 * diagonal), rtol=1e-6
    )
    top = np.asarray(mst_c(maps, threshold=99.9))
    np.testing.assert_allclose(top[2], 100 * 12 / 11, rtol=1e-6)
    assert np.isnan(top[3])
    # only the order of |a| matters: scaled, negated maps score the same
    np.testing.assert_allclose(mst_c(maps * -3.7), got, rtol=1e-6)


def test_mst_c_is_per_example_and_works_in_float64():
    maps = _mst_maps()
    got = np.asarray(mst_c(maps))
    # each score is its own map's: the same whatever the other maps of the batch
    np.testing.assert_array_equal(mst_c(np.roll(maps, 3, axis=0)), np.roll(got, 3))
    np.testing.assert_array_equal(mst_c(np.repeat(maps[4:5], len(maps), 0)), got[4])
    with jax.enable_x64(True):
        wide = mst_c(maps.astype(np.float64))
        assert wide.dtype == jnp.float64
        np.testing.assert_allclose(wide, [_mst_c_reference(m)[0] for m in maps], rtol=1e-12)


def test_mst_c_rejects_bad_input():
    maps = np.ones((1, 8, 8), np.float32)
    for options, match in (
        ({"threshold": 100.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"k": 0}, "k must"),
    ):
        with pytest.raises(InputError, match=match):
            mst_c(maps, **options)
    with pytest.raises(InputError, match="threshold"):
        M.METRICS["mst_c"].parse({"threshold": 100})
    with pytest.raises(InputError, match="NaN"):
        mst_c(np.full((1, 8, 8), np.inf))
    with pytest.raises(InputError, match="shape"):
        mst_c(np.ones((8, 8)))


# ---- Focus -------------------------------------------------------------------------------------


def _pool(images):
    b, h, w, c = images.shape
    return images.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def test_focus_known_answers():
    masks = np.zeros((5, 28, 28), bool)
    masks[:, :14, :14] = masks[:, 14:, 14:] = True
    masks[4] = False
    uniform = np.ones((5, 28, 28), np.float32)
    np.testing.assert_allclose(focus(masks.astype(np.float32), masks)[:4], 1.0)
    np.testing.assert_array_equal(focus((~masks).astype(np.float32), masks)[:4], 0.0)
    np.testing.assert_allclose(focus(uniform, masks)[:4], 0.5)
    assert np.isnan(focus(uniform, masks)[4])  # no target quadrant: no mosaic
    signed = masks * 2.0 - (~masks) * 5.0  # negative relevance elsewhere is not counted...
    np.testing.assert_allclose(focus(signed, masks)[:4], 1.0)
    np.testing.assert_allclose(focus(signed, masks, abs=True)[:4], 2 / 7)  # ...unless |a|
    np.testing.assert_array_equal(focus(-uniform, masks)[:4], 0.0)  # no positive relevance
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 28, 28)).astype(np.float32)
    single = [float(focus(maps[i : i + 1], masks[i : i + 1])[0]) for i in range(4)]
    np.testing.assert_allclose(focus(maps, masks)[:4], single, rtol=1e-6)
    pos = np.maximum(maps, 0)
    np.testing.assert_allclose(
        focus(maps, masks)[:4],
        (pos * masks).sum((1, 2))[:4] / pos.sum((1, 2))[:4],
        rtol=1e-5,
    )


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """25 real test digits, 2 or 3 of every class, shuffled: (x (25, 28, 28, 1), labels)."""
    images, labels = load("mnist", "test", data_dir=mnist_dir)
    pick = np.concatenate([np.flatnonzero(labels[:300] == c)[: 2 + c % 2] for c in range(10)])
    pick = np.random.default_rng(0).permutation(pick)
    return to_model_input(images[pick]), labels[pick].astype(np.int32)


def test_make_mosaics_tiles_two_target_and_two_other_digits(digits):
    x, y = digits
    mosaics, masks, members = jax.device_get(make_mosaics(x, y, jax.random.key(1)))
    small = _pool(x)
    for i in range(len(y)):
        quadrant_labels = y[members[i]]
        target = quadrant_labels == y[i]
        assert i in members[i] and target.sum() == 2, (i, quadrant_labels)
        assert len(set(members[i][target])) == 2  # every class has a second digit here
        tiles = [
            mosaics[i, :14, :14],
            mosaics[i, :14, 14:],
            mosaics[i, 14:, :14],
            mosaics[i, 14:, 14:],
        ]
        for q in range(4):
            np.testing.assert_allclose(tiles[q], small[members[i][q]], atol=1e-6)
            np.testing.assert_array_equal(
                masks[i, (q // 2) * 14 : (q // 2 + 1) * 14, (q % 2) * 14 : (q % 2 + 1) * 14],
                target[q],
            )
    again = make_mosaics(x, y, jax.random.split(jax.random.key(1), len(y)))
    np.testing.assert_array_equal(again[2], members)  # one key == its split into (B,) keys
    assert not np.array_equal(make_mosaics(x, y, jax.random.key(2))[2], members)


def test_make_mosaics_fallbacks_and_class_balance():
    x = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 0] + [1] + [2] * 9, np.int32)
    counts = np.zeros(3)
    for seed in range(150):
        _, masks, members = jax.device_get(make_mosaics(x, y, jax.random.key(seed)))
        assert (members[2] == 2).sum() == 2  # the lone "1": itself twice
        counts += np.bincount(y[members[0]], minlength=3)
    # example 0's other-class digits: classes 1 and 2 equally often, not 1 : 9 as the images
    assert counts[0] == 300 and abs(counts[1] - counts[2]) < 0.25 * 300, counts
    _, masks, _ = make_mosaics(x, np.zeros(12, np.int32), jax.random.key(0))
    assert not np.asarray(masks).any()  # one class only: no mosaic, focus NaN
    assert np.isnan(focus(np.ones((12, 8, 8)), masks)).all()


def test_focus_of_an_explanation_that_is_the_input(digits):
    """A hand-built 'method' whose explanation is its input (times a model parameter): the
    relevance falls where the ink is, so focus is the target digits' share of the ink."""
    x, y = digits
    b = len(y)
    model = {"scale": jnp.float32(3.0)}
    calls = []

    def explain_fn(model, xs, targets, keys):
        calls.append(xs.shape)
        return xs[..., 0] * model["scale"]

    key = jax.random.key(4)
    got = np.asarray(focus_of_method(explain_fn, model, x, y, key=key))
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(jax.random.split(key, b))
    _, _, members = jax.device_get(make_mosaics(x, y, keys))
    ink = _pool(x).sum((1, 2, 3))
    expected = [ink[m][y[m] == y[i]].sum() / ink[m].sum() for i, m in enumerate(members)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert calls == [(b, 28, 28, 1)]  # one explanation of the b mosaics
    entry = M.METRICS["focus"]
    assert entry.reexplains and not entry.needs_masks and not entry.default_set
    batch = _batch(
        x=x,
        targets=jnp.asarray(y),
        keys=jax.random.split(key, b),
        explain_fn=explain_fn,
        classifier=model,
    )
    np.testing.assert_allclose(entry.fn(batch, **entry.parse({}))["focus"], got, rtol=1e-6)
    with jax.enable_x64(True):  # float64 draws differ: the mosaics' members are read again
        wide = focus_of_method(explain_fn, model, x.astype(np.float64), y, key=key)
        assert wide.dtype == jnp.float64
        _, _, members = jax.device_get(make_mosaics(x.astype(np.float64), y, keys))
        expected = [ink[m][y[m] == y[i]].sum() / ink[m].sum() for i, m in enumerate(members)]
        np.testing.assert_allclose(wide, expected, rtol=1e-6)


def test_focus_rejects_bad_input():
    with pytest.raises(InputError, match="even"):
        make_mosaics(np.zeros((2, 7, 8, 1)), np.array([0, 1]), jax.random.key(0))
    with pytest.raises(InputError, match="labels"):
        make_mosaics(np.zeros((2, 8, 8, 1)), np.array([0.0, 1.0]), jax.random.key(0))
    with pytest.raises(InputError, match="key"):
        make_mosaics(
            np.zeros((2, 8, 8, 1)), np.array([0, 1]), jax.random.split(jax.random.key(0), 3)
        )
    with pytest.raises(InputError, match="quadrant_mask"):
        focus(np.zeros((2, 8, 8)), np.zeros((2, 8, 4), bool))
    with pytest.raises(InputError, match="NaN"):
        focus(np.full((1, 8, 8), np.nan), np.ones((1, 8, 8), bool))


# ---- Consistency -------------------------------------------------------------------------------


def _consistency_reference(maps, predicted, discretise="top_n_sign", n=5, decimals=2):
    """Quantus 0.6's ``Consistency`` on per-map normalised |maps|, hashing the discretised
    rows, with NaN for an example without peers (Quantus: 0)."""
    flat = np.abs(np.asarray(maps, np.float64)).reshape(len(maps), -1)
    flat = flat / np.where(flat.max(-1, keepdims=True) > 0, flat.max(-1, keepdims=True), 1)
    functions = {
        "top_n_sign": lambda a: np.sign(a)[:n],
        "sign": np.sign,
        "floating_points": lambda a: a.round(decimals),
        "rank": lambda a: np.argsort(a, kind="stable")[::-1],
    }
    labels = [hash(bytes(functions[discretise](a))) for a in flat]
    out = []
    for i in range(len(maps)):
        peers = [j for j in range(len(maps)) if j != i and labels[j] == labels[i]]
        same = [j for j in peers if predicted[j] == predicted[i]]
        out.append(len(same) / len(peers) if peers else np.nan)
    return np.array(out)


def test_consistency_known_answer():
    maps = np.zeros((6, 8, 8), np.float32)
    maps[0:3, 0, 0] = [1.0, 2.0, -0.5]  # one sign pattern (|.|: all positive there)
    maps[3:5, 1, 1] = [1.0, 3.0]  # a second
    maps[5, 2, 2] = 1.0  # a third, alone
    predicted = np.array([0, 0, 1, 2, 2, 7])
    got = consistency(maps, predicted, discretise="sign")
    np.testing.assert_allclose(got, [0.5, 0.5, 0.0, 1.0, 1.0, np.nan])
    # top_n_sign: the signs of the first n pixels only (row 0 here), so rows 1-2 are not seen
    np.testing.assert_allclose(consistency(maps, predicted), [0.5, 0.5, 0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(consistency(maps, predicted, n=64), got)
    # signed: example 2's negative pixel makes it a pattern of its own
    np.testing.assert_allclose(
        consistency(maps, predicted, discretise="sign", abs=False),
        [1.0, 1.0, np.nan, 1.0, 1.0, np.nan],
    )


@pytest.mark.parametrize("discretise", ["top_n_sign", "sign", "floating_points", "rank"])
def test_consistency_matches_a_quantus_transcription(discretise):
    rng = np.random.default_rng(5)
    patterns = rng.normal(size=(4, 6, 6)) * (rng.random((4, 6, 6)) < 0.5)
    pick = rng.integers(0, 4, 20)
    maps = patterns[pick] * rng.uniform(0.5, 2, (20, 1, 1))  # the same map up to scale
    maps[::3] += np.round(rng.normal(size=(7, 6, 6)), 1) * 0.3  # and some of their own
    maps[0, 0, :5] = 0.0
    predicted = (pick + (rng.random(20) < 0.3)) % 3
    got = np.asarray(consistency(maps.astype(np.float32), predicted, discretise=discretise))
    ref = _consistency_reference(maps.astype(np.float32), predicted, discretise)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert np.isfinite(ref).sum() >= 10
    order = rng.permutation(20)  # a batch-level score: permuting the batch permutes it
    np.testing.assert_allclose(
        consistency(maps[order], predicted[order], discretise=discretise), got[order], rtol=1e-6
    )
    with jax.enable_x64(True):
        wide = consistency(maps, predicted, discretise=discretise)
        assert wide.dtype == jnp.float64
        np.testing.assert_allclose(wide, _consistency_reference(maps, predicted, discretise))


def test_consistency_predictions_and_leaderboard_entry():
    rng = np.random.default_rng(1)
    weights = jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)
    calls = []

    def probabilities(x):
        calls.append(x.shape[0])
        return jax.nn.softmax(x.reshape(x.shape[0], -1) @ weights)

    x = rng.random((10, 4, 4, 1)).astype(np.float32)
    expected = np.argmax(x.reshape(10, -1) @ np.asarray(weights), -1)
    np.testing.assert_array_equal(predicted_classes(probabilities, x), expected)
    np.testing.assert_array_equal(predicted_classes(probabilities, x, chunk_size=3), expected)
    assert max(calls) <= 10 and 3 in calls  # flat passes of at most chunk_size inputs
    maps = np.sign(rng.normal(size=(10, 4, 4))).astype(np.float32)
    maps[5:] = maps[:5]
    entry = M.METRICS["consistency"]
    assert entry.category == "robustness" and entry.shared is not None
    batch = _batch(x=jnp.asarray(x), maps=jnp.asarray(maps), probabilities=probabilities)
    want = consistency(maps, expected)
    np.testing.assert_allclose(entry.fn(batch, **entry.parse({}))["consistency"], want)
    shared = entry.shared(batch)
    np.testing.assert_array_equal(shared, expected)
    batch = _batch(maps=jnp.asarray(maps), shared=shared)  # no model needed with shared
    np.testing.assert_allclose(entry.fn(batch, **entry.parse({}))["consistency"], want)


def test_consistency_rejects_bad_input():
    maps = np.ones((3, 4, 4))
    with pytest.raises(InputError, match="discretise"):
        consistency(maps, np.zeros(3, int), discretise="hash")
    with pytest.raises(InputError, match="predicted"):
        consistency(maps, np.zeros(2, int))
    with pytest.raises(InputError, match="predicted"):
        consistency(maps, np.zeros(3))
    with pytest.raises(InputError, match="NaN"):
        consistency(maps * np.nan, np.zeros(3, int))
    with pytest.raises(InputError, match="discretise"):
        M.METRICS["consistency"].parse({"discretise": "hash"})
