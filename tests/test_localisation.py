"""Localisation metrics: known answers on hand-built maps and real digits, equality with a NumPy
transcription of Quantus 0.6's formulas (85bc29d) in float64, tie handling against random
tie-breaking, batch = per example, and the leaderboard's use of masks."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.data import load
from mnistxai.pipelines.evaluate import EvalConfig, evaluate_method, evaluate_run
from mnistxai.util.errors import InputError
from mnistxai.xai import metrics as M
from mnistxai.xai.metrics import localisation as L

N = 28 * 28
FUNCTIONS = {
    "pointing_game": L.pointing_game,
    "attribution_localisation": L.attribution_localisation,
    "top_k_intersection": L.top_k_intersection,
    "relevance_mass_accuracy": L.relevance_mass_accuracy,
    "relevance_rank_accuracy": L.relevance_rank_accuracy,
    "localisation_auc": L.auc,
}


def _patches(sizes, seed=0):
    """Boolean (B, 28, 28) masks: one square patch of each size at a random place."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((len(sizes), 28, 28), bool)
    for i, k in enumerate(sizes):
        r, c = rng.integers(0, 28 - k + 1, 2)
        masks[i, r : r + k, c : c + k] = True
    return masks


def _random_masks(b, seed):
    """Patches of several sizes and scattered random pixels (none empty, none full)."""
    rng = np.random.default_rng(seed)
    masks = _patches(rng.integers(1, 20, b // 2), seed)
    scattered = rng.random((b - b // 2, 28, 28)) < rng.uniform(0.01, 0.6, (b - b // 2, 1, 1))
    scattered[:, 0, 0] = True
    return np.concatenate([masks, scattered])


# ---- known answers ----------------------------------------------------------------------------


def test_a_map_equal_to_the_mask_scores_the_maximum():
    masks = _patches([1, 3, 4, 9, 20])
    maps = masks.astype(np.float32)
    size = masks.reshape(5, -1).sum(-1)
    for name, fn in FUNCTIONS.items():
        np.testing.assert_allclose(
            fn(maps, masks),
            1.0 if name != "top_k_intersection" else np.minimum(1, size / 16),
            err_msg=name,
        )
    np.testing.assert_allclose(L.top_k_intersection(maps, masks, k=1), 1.0)
    np.testing.assert_allclose(
        L.top_k_intersection(maps, masks, concept_influence=True),
        np.minimum(1, size / 16) * N / size,
    )
    np.testing.assert_allclose(L.pointing_game(maps, masks, weighted=True), 1 - size / N)
    np.testing.assert_allclose(
        L.attribution_localisation(maps, masks, weighted=True), size / N, rtol=1e-6
    )
    # scaled and signed variants of the same map: the metrics look at order / share only
    np.testing.assert_allclose(L.auc(maps * 7 - 3, masks), 1.0)
    np.testing.assert_allclose(L.relevance_rank_accuracy(maps * 0.01, masks), 1.0)


def test_a_map_outside_the_mask_scores_the_minimum():
    masks = _patches([1, 3, 4, 9, 19], seed=1)  # |S| <= n / 2: the top |S| pixels can all miss
    maps = (~masks).astype(np.float32)
    for name, fn in FUNCTIONS.items():
        np.testing.assert_array_equal(np.asarray(fn(maps, masks)), 0.0, err_msg=name)
    # negative relevance on the mask is outside it for the signed metrics, inside for |map|
    np.testing.assert_array_equal(np.asarray(L.pointing_game(-maps, masks)), 1.0)
    np.testing.assert_array_equal(np.asarray(L.attribution_localisation(-maps, masks)), 0.0)
    np.testing.assert_array_equal(np.asarray(L.auc(-maps, masks)), 1.0)


def test_a_uniform_map_scores_the_chance_value():
    masks = _random_masks(8, seed=2)
    chance = masks.reshape(8, -1).mean(-1)
    for value in (0.3, -2.0):
        maps = np.full(masks.shape, value, np.float32)
        for name, fn in FUNCTIONS.items():
            want = 0.5 if name == "localisation_auc" else chance
            np.testing.assert_allclose(fn(maps, masks), want, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            L.top_k_intersection(maps, masks, concept_influence=True), 1.0, rtol=1e-5
        )
    zero = np.zeros(masks.shape, np.float32)
    assert np.isnan(L.relevance_mass_accuracy(zero, masks)).all()  # 0 / 0
    np.testing.assert_array_equal(np.asarray(L.attribution_localisation(zero, masks)), 0.0)
    np.testing.assert_allclose(L.pointing_game(zero, masks), chance, rtol=1e-6)


def test_empty_and_full_masks():
    maps = np.random.default_rng(3).normal(size=(2, 28, 28)).astype(np.float32)
    empty = np.zeros((2, 28, 28), bool)
    for name, fn in FUNCTIONS.items():
        assert np.isnan(fn(maps, empty)).all(), name
    full = ~empty
    assert np.isnan(L.auc(maps, full)).all()  # no pixel outside: ROC undefined
    np.testing.assert_allclose(L.relevance_rank_accuracy(maps, full), 1.0)
    np.testing.assert_allclose(L.relevance_mass_accuracy(maps, full), 1.0, rtol=1e-5)


def test_known_answers_on_real_digits(mnist_dir):
    images, _ = load("mnist", "test", data_dir=mnist_dir)
    x = images[:16].astype(np.float32) / 255
    masks = x > 0.5  # the digit's strokes: every mask pixel outscores every other pixel of x
    for name in ("pointing_game", "relevance_rank_accuracy", "localisation_auc"):
        np.testing.assert_allclose(FUNCTIONS[name](x, masks), 1.0, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(L.top_k_intersection(x, masks), 1.0)  # strokes have > 16 pixels
    background = np.where(masks, 0, 1 - x)  # the inverted digit, nothing on the strokes
    for name, fn in FUNCTIONS.items():
        np.testing.assert_array_equal(np.asarray(fn(background, masks)), 0.0, err_msg=name)
    # the faint pixels around the strokes carry mass outside: the shares are below 1
    share = np.where(masks, x, 0).sum((1, 2)) / x.sum((1, 2))
    assert (share < 0.99).all()
    np.testing.assert_allclose(L.relevance_mass_accuracy(x, masks), share, rtol=1e-5)
    np.testing.assert_allclose(L.attribution_localisation(x, masks), share, rtol=1e-5)
    # the left half of the strokes: the right half outscores some of it, the background none
    left = masks & (np.arange(28) < 14)
    got = np.asarray(L.auc(x, left))
    assert ((got > 0.5) & (got < 1)).all(), got
    np.testing.assert_allclose(got, q_auc(x.astype(np.float64), left), rtol=1e-5)


# ---- Quantus 0.6, transcribed (normalise_by_max over the batch, then abs, then the formula) ---


def _quantus_pre(a, abs_):
    a = a / np.max(np.abs(a)) if not np.all(a == 0) else a
    a = np.abs(a) if abs_ else a
    return a.reshape(len(a), -1)


def q_pointing_game(a, s, weighted=False, abs=False):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    hit = np.any(s * (a == a.max(-1, keepdims=True)), -1).astype(float)  # float: see docstring
    if weighted:
        hit[hit > 0] = 1 - s[hit > 0].sum(-1) / s[0].size
    return hit


def q_attribution_localisation(a, s, weighted=False, positive_attributions=False, abs=True):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    if positive_attributions:
        a = np.clip(a, 0, None)
    ratio = (a * s).sum(-1) / (a.sum(-1) + 1e-9)
    ratio[ratio > 1] = np.nan
    if weighted:
        ratio *= s.sum(-1) / s[0].size  # Quantus: x_batch[2:].size, see the docstring
    return ratio


def q_top_k_intersection(a, s, k=16, concept_influence=False, abs=False):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    order = np.argsort(-a, axis=-1)
    tki = s[np.arange(len(a))[:, None], order[:, :k]].mean(-1)
    if concept_influence:
        tki *= a.shape[-1] / s.sum(-1)
    return tki


def q_relevance_mass_accuracy(a, s, abs=False):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    return (a * s).sum(-1) / a.sum(-1)


def q_relevance_rank_accuracy(a, s, abs=False):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    n, sums = a.shape[-1], s.sum(-1)
    chosen = s[np.arange(len(a))[:, None], np.argsort(-a, axis=-1)]
    first = np.array([[True] * k + [False] * (n - k) for k in sums])
    return (chosen * first).sum(-1) / first.sum(-1)


def _roc_auc(y, score):
    """sklearn's roc_curve (all distinct thresholds) then auc (trapezoid)."""
    order = np.argsort(-score, kind="mergesort")
    score, y = score[order], y[order].astype(float)
    last = np.r_[np.nonzero(np.diff(score))[0], len(y) - 1]
    tps, fps = np.cumsum(y)[last], (1 + last) - np.cumsum(y)[last]
    tpr, fpr = np.r_[0, tps] / tps[-1], np.r_[0, fps] / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def q_auc(a, s, abs=False):
    a, s = _quantus_pre(a, abs), s.reshape(len(s), -1)
    return np.array([_roc_auc(si, ai) for si, ai in zip(s, a)])


QUANTUS = {
    "pointing_game": (q_pointing_game, [{}, {"weighted": True}, {"abs": True}]),
    "attribution_localisation": (
        q_attribution_localisation,
        [{}, {"abs": False}, {"positive_attributions": True, "abs": False}, {"weighted": True}],
    ),
    "top_k_intersection": (
        q_top_k_intersection,
        [{}, {"k": 1}, {"k": 100, "concept_influence": True}, {"abs": True}],
    ),
    "relevance_mass_accuracy": (q_relevance_mass_accuracy, [{}, {"abs": True}]),
    "relevance_rank_accuracy": (q_relevance_rank_accuracy, [{}, {"abs": True}]),
    "localisation_auc": (q_auc, [{}, {"abs": True}]),
}


@pytest.mark.parametrize("name", list(QUANTUS))
def test_equals_quantus_formula_in_float64(name):
    rng = np.random.default_rng(4)
    masks = _random_masks(12, seed=5)
    maps = rng.normal(size=masks.shape) + 0.4 * masks  # signed, continuous: no ties
    maps[3] = np.abs(maps[3])
    reference, variants = QUANTUS[name]
    with jax.enable_x64(True):
        for options in variants:
            got = FUNCTIONS[name](jnp.asarray(maps), masks, **options)
            assert got.dtype == jnp.float64
            want = reference(maps, masks, **options)
            # attribution localisation: Quantus's 1e-9 in the denominator, dropped here
            rtol = 1e-8 if name == "attribution_localisation" else 1e-10
            np.testing.assert_allclose(
                np.asarray(got), want, rtol=rtol, atol=1e-12, err_msg=f"{name} {options}"
            )


def test_auc_with_ties_equals_the_roc_trapezoid():
    rng = np.random.default_rng(6)
    masks = _random_masks(8, seed=7)
    maps = np.round(rng.normal(size=masks.shape) + masks, 0)  # five-odd levels: many ties
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            np.asarray(L.auc(jnp.asarray(maps), masks)), q_auc(maps, masks), rtol=1e-12
        )


def test_ties_count_as_random_tie_breaking():
    """With tied values, the score is the mean over random orders of the tied pixels."""
    rng = np.random.default_rng(8)
    masks = _random_masks(4, seed=9)
    maps = np.round(rng.normal(size=masks.shape) + 0.5 * masks, 0).astype(np.float64)
    maps[1] = np.where(masks[1], 1.0, maps[1].clip(None, 1.0))  # the max is tied in and out
    draws = 4000
    sums = {n: 0.0 for n in ("pointing_game", "top_k_intersection", "relevance_rank_accuracy")}
    for _ in range(draws):
        jitter = maps + 1e-6 * rng.random(maps.shape)
        sums["pointing_game"] += q_pointing_game(jitter, masks)
        sums["top_k_intersection"] += q_top_k_intersection(jitter, masks)
        sums["relevance_rank_accuracy"] += q_relevance_rank_accuracy(jitter, masks)
    for name, total in sums.items():
        got = np.asarray(FUNCTIONS[name](maps.astype(np.float32), masks))
        np.testing.assert_allclose(got, total / draws, atol=0.025, err_msg=name)
    # the tie at the maximum matters: Quantus's any-hit rule would score 1 there
    assert 0 < float(L.pointing_game(maps[1:2], masks[1:2])[0]) < 1


# ---- batching, jit, checks --------------------------------------------------------------------


def test_batch_equals_per_example_and_jits():
    rng = np.random.default_rng(10)
    masks = _random_masks(6, seed=11)
    maps = rng.normal(size=masks.shape).astype(np.float32)
    for name, fn in FUNCTIONS.items():
        whole = np.asarray(fn(maps, masks))
        single = np.concatenate(
            [np.asarray(fn(maps[i : i + 1], masks[i : i + 1])) for i in range(6)]
        )
        # float32 sums of 784 values, reduced in another order for another batch shape
        np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-6, err_msg=name)
        jitted = jax.jit(partial(fn))(jnp.asarray(maps), jnp.asarray(masks))
        np.testing.assert_allclose(np.asarray(jitted), whole, rtol=1e-6, err_msg=name)
        assert whole.dtype == np.float32


def test_bad_input():
    maps = np.zeros((2, 28, 28), np.float32)
    with pytest.raises(InputError, match="shape"):
        L.auc(maps, np.zeros((2, 28, 27), bool))
    with pytest.raises(InputError, match=r"\(B, H, W\)"):
        L.pointing_game(maps[0], maps[0] > 0)
    with pytest.raises(InputError, match="smaller than the 784"):
        L.top_k_intersection(maps, maps > 0, k=784)
    with pytest.raises(InputError):
        M.METRICS["top_k_intersection"].parse({"k": 0})
    with pytest.raises(InputError):
        M.METRICS["pointing_game"].parse({"weighted": "yes"})


# ---- the leaderboard --------------------------------------------------------------------------


def test_registry_and_leaderboard_skip_them_without_masks(tmp_path):
    names = list(FUNCTIONS)
    for name in names:
        m = M.METRICS[name]
        assert m.needs_masks and m.category == "localisation"
        assert m.columns == {name: ("higher", m.columns[name][1])}
    assert not set(names) & set(M.columns()) and set(names) <= set(M.columns(masks=True))
    assert not set(names) & set(EvalConfig().selected())
    assert set(names) <= set(EvalConfig().selected(masks=True))
    with pytest.raises(InputError, match="need ground-truth masks"):
        evaluate_run(tmp_path, tmp_path / "lb", EvalConfig(metrics=("pointing_game",)))

    rng = np.random.default_rng(12)
    images = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    targets = rng.integers(0, 10, 6).astype(np.int32)
    maps = rng.normal(size=(6, 28, 28)).astype(np.float32)
    masks = _random_masks(6, seed=13)
    masks[2] = False  # an image without ground truth
    config = EvalConfig(metrics=("sparseness", *names), batch_size=4)
    args = (targets, images, None, None, {}, config, (None, None))  # no metric calls a model
    values, _ = evaluate_method("m", maps, *args, masks=masks)
    for name, fn in FUNCTIONS.items():
        want = np.asarray(fn(maps, masks))
        assert np.isnan(values[name][2]) and np.isnan(want[2])
        np.testing.assert_allclose(values[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    without, _ = evaluate_method("m", maps, *args)
    assert set(without) == {"sparseness"}
