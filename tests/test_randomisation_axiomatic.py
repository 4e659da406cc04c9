"""Randomisation (random logit, smooth MPRT, efficient MPRT) and axiomatic (completeness,
non-sensitivity, input invariance) metrics: known answers on hand-built tiny models, naive-loop
references, batch == per example, float64, bad input; the CNN-specific parts (the shifted
classifier, the leaderboard entries) on the random-weight CNN."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from skimage.metrics import structural_similarity

from mnistxai import data
from mnistxai.pipelines.evaluate import method_explain_fn, score_fns
from mnistxai.util.errors import InputError
from mnistxai.xai.metrics import METRICS
from mnistxai.xai.metrics import randomization as R
from mnistxai.xai.metrics.completeness import completeness
from mnistxai.xai.metrics.input_invariance import (
    ShiftedCNN,
    input_invariance,
    shifted_classifier,
)
from mnistxai.xai.metrics.non_sensitivity import non_sensitivity
from mnistxai.xai.metrics.random_logit import off_targets, random_logit
from mnistxai.xai.metrics.registry import Batch

H = W = 8
K = 10


def _rng(seed):
    return np.random.default_rng(seed)


def linear_model(seed=0, classes=K):
    """Scores f_k(x) = sum(w_k * x) + b_k on (H, W, 1) images (NumPy-built: few compiles)."""
    r = _rng(seed)
    w, b = r.normal(size=(classes, H, W)), r.normal(size=classes)
    return {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}


def linear_scores(model):
    return lambda z: jnp.einsum("nhwc,khw->nk", z, model["w"].astype(z.dtype)) + model["b"]


def gradient(m, x, t, keys):  # the exact gradient of a linear model: its weight map
    return m["w"][t] * jnp.ones_like(x[..., 0])


def grad_x_input(m, x, t, keys):
    return m["w"][t] * x[..., 0]


def np_grad_x_input(m, x, t):
    return np.asarray(m["w"])[np.asarray(t)] * np.asarray(x)[..., 0]


def images(b, seed=1, black=0.0, size=H):
    """(b, size, size, 1) in [0, 1], a fraction ``black`` of the pixels exactly 0."""
    r = _rng(seed)
    x = r.uniform(size=(b, size, size, 1))
    return jnp.asarray(np.where(r.uniform(size=x.shape) < black, 0.0, x), jnp.float32)


def mlp(seed=2, hidden=6):
    r = _rng(seed)
    return {
        "w1": jnp.asarray(r.normal(size=(H * W, hidden)) / H, jnp.float32),
        "b1": jnp.asarray(r.normal(size=hidden) * 0.1, jnp.float32),
        "w2": jnp.asarray(r.normal(size=(hidden, K)), jnp.float32),
    }


def mlp_logits(p, z):
    return jnp.tanh(z.reshape(len(z), -1) @ p["w1"].astype(z.dtype) + p["b1"]) @ p["w2"]


def mlp_gradient(p, x, t, keys):
    one = lambda xi, ti: jax.grad(lambda v: mlp_logits(p, v[None])[0, ti])(xi)[..., 0]
    return jax.vmap(one)(x, t)


def keys_of(b, seed=0):
    return jax.random.split(jax.random.key(seed), b)


def to64(tree):
    return jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), tree)


# ---- random logit ---------------------------------------------------------------------------

B = 4  # one batch size for most tests: one compile per metric


def _np_normalize(a):
    return a / np.abs(a).max()


def test_random_logit_known_answers_and_the_off_class():
    m, x = linear_model(), images(B)
    t = jnp.array([0, 3, 7, 9], jnp.int32)
    keys = keys_of(B)
    # a map that ignores the class: identical maps, SSIM 1
    same = random_logit(lambda m_, x_, t_, k_: x_[..., 0], m, x, x[..., 0], t, key=keys)
    np.testing.assert_allclose(same["ssim"], 1.0, rtol=1e-6)
    # class-specific maps: SSIM as skimage's 2-D SSIM of the max-normalised maps, joint range
    w = np.asarray(m["w"])
    r = random_logit(gradient, m, x, jnp.asarray(w[np.asarray(t)]), t, key=keys)
    off = np.asarray(r["off_targets"])
    assert (off != np.asarray(t)).all()
    for i in range(B):
        a, b = _np_normalize(w[t[i]]), _np_normalize(w[off[i]])
        span = max(a.max(), b.max()) - min(a.min(), b.min())
        want = structural_similarity(a, b, win_size=7, data_range=span)
        np.testing.assert_allclose(r["ssim"][i], want, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(r["ssim"]) < 0.6)
    # per example: one example alone, its own key, the same class and score
    for i in (0, 3):
        sl = slice(i, i + 1)
        one = random_logit(
            gradient, m, x[sl], jnp.asarray(w[np.asarray(t[sl])]), t[sl], key=keys[sl]
        )
        assert one["off_targets"][0] == off[i]
        np.testing.assert_allclose(one["ssim"][0], r["ssim"][i], rtol=1e-6)
    with jax.enable_x64(True):  # the same draw and score in float64
        m64, x64 = to64(m), to64(x)
        r64 = random_logit(gradient, m64, x64, to64(w[np.asarray(t)]), t, key=keys)
        np.testing.assert_array_equal(r64["off_targets"], off)
        np.testing.assert_allclose(r64["ssim"], r["ssim"], rtol=1e-4, atol=1e-5)


def test_random_logit_draws_every_other_class_never_the_target():
    draw = jax.jit(off_targets, static_argnums=2)
    off = np.asarray(draw(keys_of(400), jnp.asarray(np.full(400, 3, np.int32)), K))
    assert 3 not in off
    counts = np.bincount(off, minlength=K)
    assert set(np.flatnonzero(counts)) == set(range(K)) - {3}
    assert counts.max() < 2.2 * counts[counts > 0].min()  # ~44 each


def test_random_logit_bad_input():
    m, x = linear_model(), images(2)
    t = jnp.array([0, 1], jnp.int32)
    a = jnp.asarray(np.asarray(m["w"])[:2])
    key = jax.random.key(0)
    with pytest.raises(InputError, match="num_classes"):
        random_logit(gradient, m, x, a, t, key=key, num_classes=1)
    with pytest.raises(InputError, match="targets"):
        random_logit(gradient, m, x, a, jnp.array([0, 10]), key=key)
    with pytest.raises(InputError, match="7x7"):
        random_logit(gradient, m, x[:, :6, :6], a[:, :6, :6], t, key=key)
    with pytest.raises(InputError, match="attributions"):
        random_logit(gradient, m, x, a[:, :4], t, key=key)


# ---- smooth MPRT -----------------------------------------------------------------------------


def _reference_mprt(model, randomized, x, t):
    """Adebayo's comparison of grad x input maps written out in NumPy/SciPy: |maps|, Spearman,
    SSIM (skimage) of min-max scaled maps."""
    ref = np.abs(np_grad_x_input(model, x, t))
    out = {}
    for name, m in randomized:
        maps = np.abs(np_grad_x_input(m, x, t))
        rho = [scipy.stats.spearmanr(ref[i].ravel(), maps[i].ravel())[0] for i in range(len(x))]
        mm = lambda a: (a - a.min()) / (a.max() - a.min())
        s = [
            structural_similarity(mm(ref[i]), mm(maps[i]), win_size=7, data_range=1.0)
            for i in range(len(x))
        ]
        out[name] = (np.asarray(rho), np.asarray(s))
    return out


def test_randomization_defaults_unchanged_and_one_smooth_sample_is_no_smoothing():
    m, x = linear_model(), images(B)
    t = jnp.array([1, 2, 3, 4], jnp.int32)
    keys = keys_of(B)
    half = {**m, "w": jnp.asarray(np.asarray(m["w"]) * np.linspace(-1, 1, W), jnp.float32)}
    randomized = [("half", half), ("all", linear_model(9))]
    base = R.model_parameter_randomization(grad_x_input, m, randomized, x, t, key=keys)
    want = _reference_mprt(m, randomized, x, t)
    for name in ("half", "all"):
        np.testing.assert_allclose(base[name]["spearman"], want[name][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(base[name]["ssim"], want[name][1], rtol=1e-4, atol=1e-5)
    one = R.model_parameter_randomization(
        grad_x_input, m, randomized, x, t, key=keys, smooth_samples=1
    )
    for name in ("half", "all"):
        for k in ("spearman", "ssim"):
            np.testing.assert_allclose(one[name][k], base[name][k], rtol=1e-6)
    # the leaderboard entry: same columns, same numbers at its default options
    entry = METRICS["randomization"]
    assert set(entry.columns) == {"randomization_spearman", "randomization_ssim"}
    options = entry.parse({})
    assert options == {"smooth_samples": 0, "noise_magnitude": 0.1}
    batch = Batch(
        x, None, t, keys, None, None, 64, explain_fn=grad_x_input, classifier=m, state=randomized
    )
    got = entry.fn(batch, **options)
    np.testing.assert_array_equal(got["randomization_spearman"], base["all"]["spearman"])
    np.testing.assert_array_equal(got["cascade_ssim_half"], base["half"]["ssim"])


def test_smooth_mprt_averages_noisy_maps_with_the_quantus_noise_scale():
    # the map is the input itself: the smoothed map is x plus the mean of N - 1 noise draws
    # (the N-th copy is noise-free) of std magnitude x (max - min) of each image
    x = images(B, size=28) * jnp.array([1.0, 0.5, 0.25, 1.0])[:, None, None, None]
    t = jnp.array([0, 0, 0, 0], jnp.int32)
    keys = keys_of(B)
    ident = lambda m_, x_, t_, k_: x_[..., 0]
    n, mag = 9, 0.2
    smooth = np.asarray(R._smooth_explain(ident, None, x, t, keys, mag, samples=n))
    xn = np.asarray(x)[..., 0]
    span = xn.max((1, 2)) - xn.min((1, 2))
    expected = mag * span * np.sqrt(n - 1) / n
    np.testing.assert_allclose((smooth - xn).reshape(B, -1).std(1), expected, rtol=0.15)
    zero = R._smooth_explain(ident, None, x, t, keys, 0.0, samples=n)
    np.testing.assert_allclose(zero, xn, rtol=1e-6)
    # per-example noise: one example alone gets the same smoothed map
    one = R._smooth_explain(ident, None, x[1:2], t[1:2], keys[1:2], mag, samples=n)
    np.testing.assert_allclose(one[0], smooth[1], rtol=1e-6)
    # the same noise for every model: an unchanged model keeps rho = 1 under smoothing
    out = R.model_parameter_randomization(
        ident, None, [("same", None)], x, t, key=keys, smooth_samples=n, noise_magnitude=mag
    )
    np.testing.assert_allclose(out["same"]["spearman"], 1.0, rtol=1e-6)


def test_smooth_mprt_bad_options():
    m, x = linear_model(), images(2)
    t = jnp.array([0, 0], jnp.int32)
    for bad in ({"smooth_samples": -1}, {"smooth_samples": 2.5}, {"noise_magnitude": np.nan}):
        with pytest.raises(InputError):
            R.model_parameter_randomization(gradient, m, [], x, t, key=jax.random.key(0), **bad)
    with pytest.raises(InputError):
        METRICS["randomization"].parse({"smooth_samples": -1})


# ---- efficient MPRT ------------------------------------------------------------------------


def test_discrete_entropy_is_numpys_histogram_entropy():
    rng = np.random.default_rng(0)
    maps = np.stack(
        [
            rng.normal(size=(H, W)),
            rng.integers(0, 7, size=(H, W)).astype(np.float32),  # values on the bin edges
            np.linspace(-1, 1, H * W).reshape(H, W),
            np.full((H, W), 0.3),  # constant: one bin
            np.where(rng.uniform(size=(H, W)) < 0.8, 0.0, rng.uniform(size=(H, W))),
        ]
    ).astype(np.float32)
    for n_bins in (100, 10, 7):
        got = R.discrete_entropy(maps, n_bins=n_bins)
        want = [scipy.stats.entropy(np.histogram(a, bins=n_bins)[0]) for a in maps]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(R.discrete_entropy(maps)[3]) == 0.0
    with pytest.raises(InputError):
        R.discrete_entropy(maps, n_bins=1)
    with pytest.raises(InputError):
        R.discrete_entropy(maps[0])


def test_efficient_mprt_is_the_relative_rise_in_entropy():
    # trained model: a two-valued map (entropy log 2); randomized: a ramp over every bin
    two_np = (np.arange(H * W).reshape(H, W) % 2 == 0).astype(np.float32)
    two, ramp = (
        jnp.asarray(two_np),
        jnp.asarray(np.linspace(0, 1, H * W).reshape(H, W), jnp.float32),
    )
    explain = lambda m_, x_, t_, k_: m_["map"] * jnp.ones_like(x_[..., 0])
    x, t, keys = images(B), jnp.array([0, 1, 2, 3], jnp.int32), keys_of(B)
    r = R.efficient_mprt(explain, {"map": two}, {"map": ramp}, x, t, key=keys)
    h1 = scipy.stats.entropy(np.histogram(np.asarray(ramp), bins=100)[0])
    np.testing.assert_allclose(r["entropy"], np.log(2), rtol=1e-6)
    np.testing.assert_allclose(r["entropy_randomized"], h1, rtol=1e-6)
    np.testing.assert_allclose(r["rise"], (h1 - np.log(2)) / np.log(2), rtol=1e-5)
    given = R.efficient_mprt(
        explain,
        None,
        {"map": ramp},
        x,
        t,
        key=keys,
        attributions=np.broadcast_to(two_np, (B, H, W)),
    )
    np.testing.assert_allclose(given["rise"], r["rise"], rtol=1e-6)
    flat = R.efficient_mprt(explain, {"map": two * 0}, {"map": ramp}, x, t, key=keys)
    assert np.isnan(np.asarray(flat["rise"])).all()
    with pytest.raises(InputError):
        R.efficient_mprt(explain, None, {"map": ramp}, x, t, key=keys, n_bins=0)


# ---- completeness ----------------------------------------------------------------------------

mlp_gradient_jit = jax.jit(mlp_gradient)


@functools.partial(jax.jit, static_argnames="steps")
def midpoint_ig(p, x, t, steps):
    """Integrated gradients from black, midpoint rule, of the tiny MLP's logits."""
    alphas = (jnp.arange(steps) + 0.5) / steps
    grads = jax.lax.map(lambda a: mlp_gradient(p, a * x, t, None), alphas)
    return grads.mean(0) * x[..., 0]


def test_completeness_exact_for_linear_grad_x_input_and_ig():
    m, x = linear_model(), images(B)
    t = jnp.array([0, 3, 5, 9], jnp.int32)
    score = linear_scores(m)
    g = np_grad_x_input(m, x, t)
    r = completeness(score, x, g, t)
    np.testing.assert_allclose(r["gap"], 0.0, atol=2e-5)
    np.testing.assert_allclose(r["delta"], g.sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(r["sum"], g.sum((1, 2)), rtol=1e-5)
    # from a grey baseline, grad x (x - baseline) is the complete map
    w = np.asarray(m["w"])[np.asarray(t)]
    grey = completeness(score, x, w * (np.asarray(x)[..., 0] - 0.5), t, baseline=0.5)
    np.testing.assert_allclose(grey["gap"], 0.0, atol=2e-5)
    # an empty map misses the whole change: relative gap 1
    empty = completeness(score, x, np.zeros((B, H, W), np.float32), t)
    np.testing.assert_allclose(empty["relative"], 1.0, rtol=1e-6)
    # IG with many steps is complete; with one step it is not
    p = mlp()
    logits = lambda z: mlp_logits(p, z)
    ig = completeness(logits, x, midpoint_ig(p, x, t, 256), t)
    assert np.all(np.asarray(ig["relative"]) < 1e-3)
    ig1 = completeness(logits, x, midpoint_ig(p, x, t, 1), t)
    assert np.all(np.asarray(ig1["relative"]) > 10 * np.asarray(ig["relative"]))


def test_completeness_batch_chunking_float64_and_bad_input():
    p, x = mlp(), images(B, black=0.3)
    t = jnp.array([1, 4, 6, 8], jnp.int32)
    logits = lambda z: mlp_logits(p, z)
    a = mlp_gradient_jit(p, x, t, None) * x[..., 0]
    full = completeness(logits, x, a, t)
    for i in range(B):
        one = completeness(logits, x[i : i + 1], a[i : i + 1], t[i : i + 1], chunk_size=1)
        np.testing.assert_allclose(one["gap"][0], full["gap"][i], rtol=1e-6, atol=1e-7)
    small = completeness(logits, x, a, t, chunk_size=3)
    np.testing.assert_allclose(small["relative"], full["relative"], rtol=1e-6)
    with jax.enable_x64(True):
        m, x64 = to64(linear_model()), to64(x)
        r = completeness(linear_scores(m), x64, np_grad_x_input(m, x64, t), t)
        assert r["gap"].dtype == jnp.float64
        np.testing.assert_allclose(r["gap"], 0.0, atol=1e-12)
    with pytest.raises(InputError, match="attributions"):
        completeness(logits, x, a[:, :3], t)
    with pytest.raises(InputError, match="baseline"):
        completeness(logits, x, a, t, baseline=float("nan"))
    bad = np.array(a)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        completeness(logits, x, bad, t)


# ---- non-sensitivity ---------------------------------------------------------------------------


def naive_non_sensitivity(score, x, a, t, eps, step, baseline=0.0):
    """Quantus's loop: every group of the zero-attribution pixels, then of the others, removed in
    turn and the model run on it (no skipping), the XOR count."""
    score = jax.jit(score)
    x, a, t = np.asarray(x), np.abs(np.asarray(a, np.float64)), np.asarray(t)
    out = []
    for i in range(len(x)):
        ai = a[i].ravel() / a[i].max() if a[i].max() > 0 else a[i].ravel()
        zero = ai < eps
        f0 = float(score(x[i : i + 1])[0, t[i]])
        same = np.zeros(ai.size, bool)
        for mask in (zero, ~zero):
            idx = np.flatnonzero(mask)
            for s in range(0, len(idx), step):
                g = idx[s : s + step]
                xp = x[i].reshape(-1, x.shape[-1]).copy()
                xp[g] = baseline
                f = float(score(xp.reshape(1, *x.shape[1:]))[0, t[i]])
                same[g] = abs(f0 - f) < eps
        out.append(int((same ^ zero).sum()))
    return np.array(out)


def test_non_sensitivity_known_answer_on_a_linear_model():
    # f = w . x: removing pixel i moves the output by |w_i x_i| = the exact map's |value|; with
    # the map's max scaled to 1 the two thresholds agree and no pixel breaks the rule
    m, x = linear_model(), images(B, black=0.5)
    t = jnp.array([2, 4, 6, 8], jnp.int32)
    g = np_grad_x_input(m, x, t)
    top = np.abs(g).max((1, 2), keepdims=True)
    w = np.array(m["w"])
    w[np.asarray(t)] /= top
    scaled = {"w": jnp.asarray(w), "b": m["b"]}
    r = non_sensitivity(linear_scores(scaled), x, g, t, eps=1e-3)
    np.testing.assert_array_equal(r["violations"], 0)
    np.testing.assert_array_equal(r["evaluated"], (np.asarray(x)[..., 0] != 0).sum((1, 2)))
    # a map that calls every pixel relevant: each pixel without effect (black, or |w x| below
    # eps) is a violation
    flat = non_sensitivity(linear_scores(m), x, np.ones((B, H, W), np.float32), t, eps=1e-3)
    inert = np.abs(g) < 1e-3
    assert inert.sum() > 0
    np.testing.assert_array_equal(flat["violations"], inert.sum((1, 2)))
    np.testing.assert_allclose(flat["fraction"], inert.mean((1, 2)))


@pytest.mark.parametrize("step", [1, 4])
def test_non_sensitivity_equals_the_naive_loop(step):
    p, x = mlp(), images(B, black=0.4)
    t = jnp.array([1, 5, 8, 0], jnp.int32)
    probs = lambda z: jax.nn.softmax(mlp_logits(p, z))
    # maps with exact zeros (black pixels), small values and large ones; an all-zero map
    a = np.array(mlp_gradient_jit(p, x, t, None) * x[..., 0])
    a[2] = 0.0
    eps = 1e-3
    r = non_sensitivity(probs, x, a, t, eps=eps, features_in_step=step, chunk_size=7)
    want = naive_non_sensitivity(probs, x, a, t, eps, step)
    np.testing.assert_array_equal(r["violations"], want)
    assert want.max() > 0  # some pixels break the rule: the comparison is not vacuous
    full = non_sensitivity(probs, x, a, t, eps=eps, features_in_step=step)
    np.testing.assert_array_equal(full["violations"], r["violations"])
    for i in (0, 3) if step == 1 else ():
        sl = slice(i, i + 1)
        one = non_sensitivity(probs, x[sl], a[sl], t[sl], eps=eps, features_in_step=step)
        assert one["violations"][0] == full["violations"][i]
        assert one["evaluated"][0] == full["evaluated"][i]


def test_non_sensitivity_float64_and_bad_input():
    m, x = linear_model(), images(B, black=0.5)
    t = jnp.array([0, 1, 2, 3], jnp.int32)
    score = linear_scores(m)
    a = np_grad_x_input(m, x, t)
    r32 = non_sensitivity(score, x, a, t, eps=1e-2)
    with jax.enable_x64(True):
        m64, x64 = to64(m), to64(x)
        r = non_sensitivity(linear_scores(m64), x64, np_grad_x_input(m64, x64, t), t, eps=1e-2)
        assert r["violations"].dtype == jnp.float64
        np.testing.assert_array_equal(r["violations"], r32["violations"])
    with pytest.raises(InputError, match="features_in_step"):
        non_sensitivity(score, x, a, t, features_in_step=3)
    with pytest.raises(InputError, match="eps"):
        non_sensitivity(score, x, a, t, eps=0.0)
    with pytest.raises(InputError, match="features_in_step"):
        METRICS["non_sensitivity"].parse({"features_in_step": 5})


# ---- input invariance -----------------------------------------------------------------------


def dense_net(seed=3, hidden=5):
    r = _rng(seed)
    return {
        "w1": jnp.asarray(r.normal(size=(H * W, hidden)) / H, jnp.float32),
        "b1": jnp.asarray(r.normal(size=hidden), jnp.float32),
        "w2": jnp.asarray(r.normal(size=(hidden, K)), jnp.float32),
    }


def dense_shifted(p, shift):
    """Kindermans's construction on a first dense layer: b1' = b1 - W1^T m, exact (no padding)."""
    return {**p, "b1": p["b1"] - shift * p["w1"].sum(0)}


def dense_saliency(p, x, t, keys):
    f = lambda v, ti: (jax.nn.relu(v.reshape(-1) @ p["w1"] + p["b1"]) @ p["w2"])[ti]
    return jax.vmap(lambda xi, ti: jax.grad(f)(xi, ti)[..., 0])(x, t)


def dense_grad_x_input(p, x, t, keys):
    return dense_saliency(p, x, t, keys) * x[..., 0]


def test_input_invariance_on_a_dense_net_with_the_bias_absorbing_the_shift():
    p, x = dense_net(), images(B)
    t = jnp.array([0, 1, 2, 3], jnp.int32)
    keys = keys_of(B)
    shifted = dense_shifted(p, -1.0)
    kw = dict(key=keys, shift=-1.0, shifted_model=shifted)
    g = np.asarray(jax.jit(dense_saliency)(p, x, t, keys))
    sal = input_invariance(dense_saliency, p, x, g, t, **kw)
    np.testing.assert_array_equal(sal["unchanged"], 1.0)
    np.testing.assert_array_equal(sal["invariant"], 1.0)
    assert np.all(np.asarray(sal["relative_l2"]) < 1e-5)
    gxi = input_invariance(dense_grad_x_input, p, x, None, t, **kw)
    # grad x (x - 1) - grad x x = -grad: every pixel with a non-zero gradient changes
    a = g * np.asarray(x[..., 0])
    want = (np.abs(g) <= 1e-4 * np.abs(a).max((1, 2), keepdims=True)).mean((1, 2))
    np.testing.assert_allclose(gxi["unchanged"], want)
    np.testing.assert_array_equal(gxi["invariant"], 0.0)
    np.testing.assert_allclose(
        gxi["relative_l2"],
        np.linalg.norm(g, axis=(1, 2)) / np.linalg.norm(a, axis=(1, 2)),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        gxi["shifted_maps"], g * (np.asarray(x[..., 0]) - 1), rtol=1e-4, atol=1e-6
    )
    for i in (0, 3):
        sl = slice(i, i + 1)
        one = input_invariance(dense_grad_x_input, p, x[sl], None, t[sl], **{**kw, "key": keys[sl]})
        np.testing.assert_allclose(one["relative_l2"][0], gxi["relative_l2"][i], rtol=1e-6)
        np.testing.assert_allclose(one["unchanged"][0], gxi["unchanged"][i])
    with jax.enable_x64(True):
        p64, x64 = to64(p), to64(x)
        r = input_invariance(
            dense_saliency, p64, x64, None, t, key=keys, shifted_model=dense_shifted(p64, -1.0)
        )
        assert r["relative_l2"].dtype == jnp.float64
        assert np.all(np.asarray(r["relative_l2"]) < 1e-12)
    with pytest.raises(InputError, match="Classifier"):
        input_invariance(dense_saliency, p, x, None, t, key=keys)
    with pytest.raises(InputError, match="tol"):
        input_invariance(dense_saliency, p, x, None, t, key=keys, shifted_model=shifted, tol=-1.0)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    imgs = data.load("mnist", "test", mnist_dir)[0][:2]
    return jnp.asarray(data.to_model_input(imgs))


logits_of = jax.jit(lambda classifier, z: classifier.logits(z))


def test_shifted_cnn_computes_the_same_logits_and_saliency_is_invariant(random_classifier, digits):
    x = digits
    shifted = shifted_classifier(random_classifier, -1.0)
    assert isinstance(shifted.model, ShiftedCNN)
    assert shifted.model.spec.layers[1:] == random_classifier.model.spec.layers
    before = np.asarray(logits_of(random_classifier, x))
    np.testing.assert_allclose(logits_of(shifted, x - 1.0), before, rtol=1e-5, atol=1e-6)
    twice = shifted_classifier(shifted, 0.5)  # shifts compose: -1 then +0.5
    np.testing.assert_allclose(logits_of(twice, x - 0.5), before, rtol=1e-5, atol=1e-6)
    t = jnp.asarray(before.argmax(-1), jnp.int32)
    keys = keys_of(2)
    sal = method_explain_fn("saliency", {}, random_classifier, 2)
    maps = jax.jit(sal)(random_classifier, x, t, keys)
    # through the leaderboard entry: the run's maps against the shifted model's
    entry = METRICS["input_invariance"]
    probabilities, logits = score_fns(random_classifier)
    batch = Batch(x, maps, t, keys, probabilities, logits, 256, sal, random_classifier)
    r = entry.fn(batch, **entry.parse({}))
    assert set(entry.columns) <= set(r)
    np.testing.assert_array_equal(r["input_invariance"], 1.0)
    np.testing.assert_array_equal(r["input_invariance_exact"], 1.0)
    assert np.all(np.asarray(r["input_invariance_l2"]) < 1e-4)
    gxi = method_explain_fn("grad_x_input", {}, random_classifier, 2)
    r = input_invariance(gxi, random_classifier, x, None, t, key=keys)
    np.testing.assert_array_equal(r["invariant"], 0.0)
    assert np.all(np.asarray(r["unchanged"]) < 0.9)
    assert np.all(np.asarray(r["relative_l2"]) > 0.5)
    with pytest.raises(InputError, match="Classifier"):
        shifted_classifier({"w": 1.0})
    with pytest.raises(InputError, match="shift"):
        shifted_classifier(random_classifier, float("inf"))


# ---- the leaderboard entries ------------------------------------------------------------------


def test_entries_return_their_columns_per_image():
    # the tiny tanh MLP stands in for the classifier: the entries only call what Batch holds
    # (the CNN runs them in tests/test_metric_contract.py)
    p, x = mlp(), images(B, black=0.3)
    t = jnp.array([0, 1, 2, 3], jnp.int32)
    keys = keys_of(B)
    maps = mlp_gradient_jit(p, x, t, keys)
    logits = lambda z: mlp_logits(p, z)
    probabilities = lambda z: jax.nn.softmax(logits(z))
    other = mlp(seed=11)
    assert METRICS["non_sensitivity"].default_set is False
    for name in ("random_logit", "efficient_mprt", "completeness", "non_sensitivity"):
        metric = METRICS[name]
        batch = Batch(x, maps, t, keys, probabilities, logits, 64, mlp_gradient, p)
        if metric.setup is not None:  # the cascade's last stage: every layer re-drawn
            batch = dataclasses.replace(batch, state=[("all", other)])
        values = metric.fn(batch, **metric.parse({}))
        for column in metric.columns:
            v = np.asarray(values[column])
            assert v.shape == (B,) and np.isfinite(v).all(), (name, column, v)
    cascade = METRICS["efficient_mprt"].setup
    assert cascade is METRICS["randomization"].setup
