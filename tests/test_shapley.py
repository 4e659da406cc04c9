"""The game-theoretic methods (exact Shapley values, KernelSHAP, Shapley value sampling, LIME,
feature ablation) against the axioms and independent references, on real MNIST digits of the
trained CNN and on hand-built models.

Black backgrounds make most corner patches null players (their pixels equal the baseline), so
the real digits exercise the exact shortcuts; the hand-built models have known answers: an
additive model's Shapley values are each group's own contribution, a linear one's LIME
coefficients are its weights summed per group, a mirror-symmetric model on a mirror-symmetric
digit gives mirrored groups equal values, an ignored group gets 0.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.data import load, to_model_input
from mnistxai.training.checkpoint import load_classifier
from mnistxai.util.errors import InputError
from mnistxai.xai import METHODS, explain
from mnistxai.xai import _coalitions as co
from mnistxai.xai.groups import grid_labels

ESTIMATORS = ("exact_shapley", "feature_ablation", "kernel_shap", "shapley_sampling", "lime")
MIRROR = np.arange(16).reshape(4, 4)[:, ::-1].ravel()  # the 4 x 4 grid's left-right mirror


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def images(mnist_dir):
    return load("mnist", "test", data_dir=mnist_dir)[0][:4]


@pytest.fixture(scope="module")
def hand_digits(images):
    """float64 (6, 28, 28, 1): three real digits, then three made left-right symmetric."""
    x = np.asarray(to_model_input(images[:3]), np.float64)
    return np.concatenate([x, (x + x[:, :, ::-1]) / 2])


def patch_sums(x, patch=7):
    k = x.shape[0]
    s = 28 // patch
    return x.reshape(k, s, patch, s, patch).sum((2, 4)).reshape(k, s * s)


RNG = np.random.default_rng(0)
FREQ, CURVE = RNG.uniform(0.05, 0.2, 16), RNG.uniform(-0.01, 0.01, 16)
WEIGHTS = RNG.normal(0, 0.1, (28, 28))
COUPLING = RNG.normal(0, 0.05, (16, 16))
KEEP = (grid_labels(7) != 5).astype(np.float64)[..., None]  # class 3 ignores group 5


def additive_parts(s):
    """(k, 16): f_j(s_j) = sin(FREQ_j s_j) + CURVE_j s_j^2 of the patch sums."""
    return np.sin(FREQ * s) + CURVE * s**2


def interacting(x):
    s = patch_sums(x) / 10
    return jnp.tanh(s @ FREQ + jnp.einsum("ki,ij,kj->k", s, COUPLING, s))


def hand_model(x):
    """(k, 28, 28, 1) -> (k, 10): class 0 additive over the 7 x 7 patches, class 1 linear in the
    pixels, class 2 an interacting model made mirror-symmetric, class 3 one that ignores group 5;
    the rest 0."""
    s = patch_sums(x)
    out = [
        (jnp.sin(FREQ * s) + CURVE * s**2).sum(-1),
        jnp.einsum("khw,hw->k", x[..., 0], WEIGHTS),
        interacting(x) + interacting(x[:, :, ::-1]),
        interacting(x * KEEP),
    ]
    return jnp.stack(out + [jnp.zeros_like(out[0])] * 6, -1)


@functools.lru_cache(maxsize=None)
def compiled(name, model, static):
    spec = METHODS[name]
    return jax.jit(
        lambda x, t, key, arrays: spec.fn(
            model, x, t, **dict(static), **arrays, **({"key": key} if spec.takes_key else {})
        )
    )


def call(name, model, x, targets, key=None, **options):
    """``METHODS[name].fn`` on any model callable, options checked as ``explain`` does; one
    compiled program per (method, model, static options)."""
    opts = METHODS[name].parse(options, x.shape[0], None)
    arrays = {k: jnp.asarray(v, x.dtype) for k, v in opts.items() if isinstance(v, np.ndarray)}
    static = tuple(sorted((k, v) for k, v in opts.items() if k not in arrays))
    key = jax.random.key(0) if key is None else key
    return compiled(name, model, static)(
        jnp.asarray(x), jnp.asarray(targets, jnp.int32), key, arrays
    )


def naive_shapley(model, x, base, labels, target):
    """Shapley values from their definition: a loop over every coalition without i."""
    n = int(labels.max()) + 1
    coalitions = list(itertools.product([0, 1], repeat=n))
    images = [np.where(np.isin(labels, np.flatnonzero(c))[..., None], x, base) for c in coalitions]
    v = dict(zip(coalitions, np.asarray(model(jnp.asarray(np.stack(images))))[:, target]))
    phi = np.zeros(n)
    for i in range(n):
        for c in coalitions:
            if c[i]:
                continue
            s = sum(c)
            with_i = c[:i] + (1,) + c[i + 1 :]
            phi[i] += (
                math.factorial(s)
                * math.factorial(n - s - 1)
                / math.factorial(n)
                * (v[with_i] - v[c])
            )
    return phi


def test_exact_shapley_is_a_naive_loop_over_coalitions(classifier, images, hand_digits):
    with jax.enable_x64(True):
        x = np.asarray(to_model_input(images[:3]), np.float64)
        res = explain("exact_shapley", classifier, x, patch=14)
        assert res.attributions.dtype == jnp.float64
        model = classifier.astype(jnp.float64).logits
        for i in range(3):
            ref = naive_shapley(model, x[i], np.zeros_like(x[i]), grid_labels(14), res.targets[i])
            np.testing.assert_allclose(res.extras["group_values"][i], ref, rtol=1e-10, atol=1e-12)
        # efficiency, to float64 rounding, against F(x) - F(black) computed separately
        assert np.abs(res.extras["efficiency_gap"]).max() < 1e-10 * np.abs(ref).sum()
        # a hand-built interacting model on a 4-player grid, a white baseline
        white = call("exact_shapley", hand_model, hand_digits, [2] * 6, patch=14, baseline="white")
        for i in (0, 4):
            ref = naive_shapley(
                hand_model, hand_digits[i], np.ones((28, 28, 1)), grid_labels(14), 2
            )
            np.testing.assert_allclose(white.extras["group_values"][i], ref, rtol=1e-10)


@pytest.fixture(scope="module")
def real(classifier, images):
    """Exact Shapley values, KernelSHAP (budgets of 32 and 256, two runs each) and Shapley
    sampling (16 runs of 8 permutations) of 4 real digits on the 4 x 4 grid, float32."""
    out = {"exact": explain("exact_shapley", classifier, images, patch=7)}
    for s in (32, 256):
        out[f"kernel_{s}"] = [
            explain("kernel_shap", classifier, images, key=jax.random.key(k), patch=7, samples=s)
            for k in range(2)
        ]
    out["sampling"] = [
        explain("shapley_sampling", classifier, images, key=jax.random.key(k), patch=7, samples=8)
        for k in range(16)
    ]
    return out


def test_efficiency_and_null_players_on_real_digits(classifier, images, real):
    exact = real["exact"]
    values = np.asarray(exact.extras["group_values"])
    delta = values.sum(-1) - np.asarray(exact.extras["efficiency_gap"])
    scale = np.abs(values).sum(-1)
    # F(x) - F(black) from the classifier directly
    x = to_model_input(images)
    logits = np.asarray(classifier.logits(jnp.concatenate([x, jnp.zeros_like(x)])))
    t = np.asarray(exact.targets)
    want = logits[np.arange(4), t] - logits[4 + np.arange(4), t]
    np.testing.assert_allclose(delta, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    runs = [exact, *real["kernel_32"], *real["kernel_256"], *real["sampling"][:2]]
    for res in runs:
        v = np.asarray(res.extras["group_values"])
        assert (np.abs(v.sum(-1) - delta) <= 2e-5 * scale).all()
    # every blank patch is a null player: exactly 0, never evaluated
    blank = (np.asarray(x)[..., 0].reshape(4, 4, 7, 4, 7) == 0).all((2, 4)).reshape(4, 16)
    assert blank.sum() >= 16
    for res in runs:
        np.testing.assert_array_equal(np.asarray(res.extras["active_players"]), 16 - blank.sum(1))
        assert (np.asarray(res.extras["group_values"])[blank] == 0).all()
    np.testing.assert_array_equal(exact.extras["evaluated"], 2 ** (16 - blank.sum(1)))


def relative_error(estimate, exact):
    return np.sqrt(((estimate - exact) ** 2).mean()) / np.sqrt((exact**2).mean())


def test_kernel_shap_with_every_coalition_is_exact_shapley(real):
    exact = np.asarray(real["exact"].extras["group_values"])
    for res in real["kernel_256"]:
        m = np.asarray(res.extras["active_players"])
        full = 2**m - 2 <= 256  # these images' budget covers every coalition: shap enumerates
        assert full.any() and (~full).any()
        np.testing.assert_array_equal(np.asarray(res.extras["evaluated"])[full], 2 ** m[full] - 2)
        v = np.asarray(res.extras["group_values"])[full]
        assert relative_error(v, exact[full]) < 1e-4


def test_estimators_converge_to_exact_shapley(real):
    exact = np.asarray(real["exact"].extras["group_values"])
    # Shapley sampling: a mean of r runs of 8 permutations is one run of 8 r; error ~ 1/sqrt(8 r)
    runs = np.stack([np.asarray(r.extras["group_values"]) for r in real["sampling"]])
    errors = [
        np.mean([relative_error(runs[i : i + r].mean(0), exact) for i in range(0, 16, r)])
        for r in (1, 4, 16)
    ]
    for coarse, fine in zip(errors, errors[1:]):
        assert 1.4 < coarse / fine < 3.0, errors  # 4x the permutations: about half the error
    # KernelSHAP, on the images it does not enumerate: 8x the coalitions, at least sqrt(8) less
    # error (shap's enumeration of the small and large coalitions does better than that)
    sampled = np.asarray(real["exact"].extras["active_players"]) > 8
    assert sampled.sum() >= 2
    k32, k256 = (
        np.mean(
            [
                relative_error(np.asarray(r.extras["group_values"])[sampled], exact[sampled])
                for r in real[k]
            ]
        )
        for k in ("kernel_32", "kernel_256")
    )
    assert k256 < k32 / math.sqrt(8) and k256 < 0.1, (k32, k256)


def test_every_method_returns_each_groups_own_contribution_on_an_additive_model(hand_digits):
    with jax.enable_x64(True):
        x = hand_digits
        own = additive_parts(patch_sums(x)) - additive_parts(np.zeros((1, 16)))
        linear = patch_sums(x[..., 0] * WEIGHTS)
        active = patch_sums(x) > 0
        for name in ESTIMATORS:
            options = {"patch": 7}
            if name == "lime":
                options["alpha"] = 0.0  # weighted least squares: exact for a model linear in z
            for target, want in ((0, own), (1, linear)):
                res = call(name, hand_model, x, [target] * 6, **options)
                values = np.asarray(res.extras["group_values"])
                np.testing.assert_allclose(
                    values, np.where(active, want, 0), rtol=1e-8, atol=1e-10, err_msg=name
                )
                maps = np.asarray(res.attributions)
                np.testing.assert_array_equal(maps, values[:, grid_labels(7)])


def enumerated(res):
    """bool (B,): the images whose KernelSHAP run enumerated all 2^m - 2 coalitions."""
    m = np.asarray(res.extras["active_players"])
    return np.asarray(res.extras["evaluated"]) == 2**m - 2


def test_symmetric_groups_get_equal_values_and_an_ignored_group_gets_zero(classifier, hand_digits):
    sym = slice(3, 6)  # the mirror-symmetric digits
    with jax.enable_x64(True):
        x = hand_digits
        for name in ("exact_shapley", "feature_ablation", "kernel_shap"):
            res = call(name, hand_model, x, [2] * 6, patch=7)
            v = np.asarray(res.extras["group_values"])[sym]
            if name == "kernel_shap":  # symmetric only where every coalition is enumerated
                v = v[enumerated(res)[sym]]
                assert len(v)
            np.testing.assert_allclose(v, v[:, MIRROR], rtol=1e-9, atol=1e-12, err_msg=name)
        # (LIME is left out: a linear fit of a nonlinear model, it gives an ignored group the
        # correlation of its column with the residuals, about 1/sqrt(samples), not 0)
        for name in ("exact_shapley", "feature_ablation", "kernel_shap", "shapley_sampling"):
            res = call(name, hand_model, x, [3] * 6, patch=7)
            v = np.asarray(res.extras["group_values"])
            assert np.abs(v[:, 6]).max() > 1e-6, name  # group 5's neighbour counts
            if name == "kernel_shap":
                v = v[enumerated(res)]
            assert np.abs(v[:, 5]).max() < 1e-9 * np.abs(v).max(), name  # 5 is ignored
    # the trained CNN on symmetric real digits, 2 x 2 patches: logits 0-9 made mirror-symmetric
    # (groups 0, 1 and 2, 3 mirror each other), logits 10-19 with group 1 masked out
    keep = (grid_labels(14) != 1).astype(np.float32)[..., None]
    cnn = lambda x: jnp.concatenate(
        [classifier.logits(x) + classifier.logits(x[:, :, ::-1]), classifier.logits(x * keep)], -1
    )
    xs = hand_digits[sym].astype(np.float32)
    t = np.asarray(jnp.argmax(cnn(jnp.asarray(xs))[:, :10], -1))
    for name in ("exact_shapley", "feature_ablation"):
        v = np.asarray(call(name, cnn, xs, t, patch=14).extras["group_values"])
        np.testing.assert_allclose(v, v[:, [1, 0, 3, 2]], rtol=1e-4, atol=1e-5 * np.abs(v).max())
        v = np.asarray(call(name, cnn, xs, t + 10, patch=14).extras["group_values"])
        assert np.abs(v[:, 1]).max() <= 1e-5 * np.abs(v).max() and np.abs(v).max() > 0, name


def test_lime_weighs_coalitions_by_their_cosine_distance(hand_digits):
    """LIME from its definition in NumPy, on the same coalitions: perturbed images, Captum's
    kernel (width 1) on the cosine distance, a weighted least-squares fit with an intercept."""
    from mnistxai.util import streams

    key, width, samples = jax.random.key(0), 1.0, 1000
    with jax.enable_x64(True):
        x = hand_digits  # the additive test's program; target 2 is the interacting model
        res = call("lime", hand_model, x, [2] * 6, key, patch=7, alpha=0.0)
        keys = streams.fold(jax.random.split(key, 6), "lime")
        draw = lambda k: jax.vmap(
            lambda s: jax.random.bernoulli(jax.random.fold_in(k, s), 0.5, (16,))
        )(jnp.arange(samples))
        z = np.asarray(jax.vmap(draw)(keys))  # (6, samples, 16)
        labels = grid_labels(7)
        for i in range(6):
            active = patch_sums(x[i : i + 1])[0] > 0
            zi = z[i] & active
            images = np.where(zi[:, labels][..., None], x[i], 0.0)
            y = np.asarray(hand_model(jnp.asarray(images)))[:, 2]
            flat, ref = images.reshape(samples, -1), x[i].reshape(-1)
            cos = (
                flat @ ref / (np.maximum(np.linalg.norm(flat, axis=1), 1e-8) * np.linalg.norm(ref))
            )
            w = np.exp(-((1 - cos) ** 2) / (2 * width**2))
            design = np.concatenate([np.ones((samples, 1)), zi[:, active]], 1) * np.sqrt(w)[:, None]
            coef = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0]
            want = np.zeros(16)
            want[active] = coef[1:]
            np.testing.assert_allclose(res.extras["group_values"][i], want, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(res.extras["intercept"][i], coef[0], rtol=1e-7, atol=1e-9)
        assert w.min() < 0.8 < 0.95 < w.max()  # the kernel does weigh the coalitions


def test_lasso_meets_its_optimality_conditions():
    """LIME's surrogate: the weighted Lasso's KKT conditions, checked in NumPy on random data."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        z = (rng.uniform(size=(300, 12)) < 0.5).astype(np.float64)
        y = z @ (rng.normal(size=12) * (np.arange(12) < 6)) + 0.3 * rng.normal(size=300) + 2.0
        w = rng.uniform(0.5, 1.0, 300)
        active = np.arange(12) != 4
        for alpha in (0.0, 0.01, 0.3):
            beta, b = co.lasso(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w), active, alpha)
            beta, b = np.asarray(beta), float(b)
            assert beta[4] == 0
            r = y - b - z @ beta
            assert abs((w * r).sum()) < 1e-10  # the intercept is optimal
            grad = -(z * (w * r)[:, None]).sum(0) / w.sum()  # of the smooth part
            on = (beta != 0) & active
            np.testing.assert_allclose(grad[on], -alpha * np.sign(beta[on]), atol=1e-9)
            assert (np.abs(grad[~on & active]) <= alpha + 1e-9).all()
            if alpha == 0.3:
                assert (beta[active] == 0).sum() >= 1  # the penalty selects


def test_unrank_lists_the_combinations_and_the_kernel_plan_weighs_one():
    table = jnp.asarray(co.binomials(8))
    for m, size in [(6, 2), (6, 3), (5, 1), (8, 4)]:
        combos = list(itertools.combinations(range(m), size))
        got = jax.vmap(lambda r: co.unrank(r, jnp.int32(size), jnp.int32(m), 8, table))(
            jnp.arange(len(combos))
        )
        want = np.zeros((len(combos), 8), bool)
        for i, c in enumerate(combos):
            want[i, list(c)] = True
        np.testing.assert_array_equal(got, want)
    plan = co.kernel_plan(49, 0)
    for m in range(2, 50):
        sizes = np.diff(plan.start[m])
        total = (plan.weight[m] * sizes).sum()
        total += plan.random_weight[m] * (plan.budget[m] - plan.start[m, plan.classes[m]])
        assert abs(total - 1) < 1e-12 and plan.budget[m] == min(2 * m + 2048, 2**m - 2)
        # a class is enumerated with its complements: C(m, s) coalitions, twice below m / 2
        for s in range(1, plan.classes[m] + 1):
            assert sizes[s - 1] == math.comb(m, s) * (2 if s < m / 2 else 1)
    assert plan.classes[49] == 1 and plan.start[49, 1] == 98  # shap: sizes 1 and 48 only


def test_bad_options_are_input_errors_before_compiling(random_classifier, images):
    bad = [
        ("exact_shapley", {"patch": 4}, "49 players is more than this method's 16"),
        ("exact_shapley", {"groups": np.arange(784).reshape(28, 28) % 17}, "17 players"),
        ("kernel_shap", {"groups": "voronoi"}, "unknown groups"),
        ("lime", {"groups": np.zeros((28, 28), np.float32)}, "integer mask"),
        ("feature_ablation", {"groups": np.zeros((2, 28, 28), int)}, "1 or 4 masks"),
        ("shapley_sampling", {"patch": 29}, "patch"),
        ("kernel_shap", {"samples": -1}, "samples"),
        ("kernel_shap", {"ridge": -1.0}, "ridge"),
        ("lime", {"kernel_width": 0.0}, "kernel_width"),
        ("lime", {"distance": "manhattan"}, "distance"),
        ("feature_ablation", {"baseline": "grey"}, "baseline"),
    ]
    for name, options, match in bad:
        with pytest.raises(InputError, match=match):
            explain(name, random_classifier, images, key=jax.random.key(0), **options)
    with pytest.raises(ValueError, match="stochastic"):
        explain("kernel_shap", random_classifier, images)
