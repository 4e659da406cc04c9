"""Average sensitivity, local Lipschitz, continuity and relative stability: closed forms on tiny
hand-built models, naive loop references, batch == per-example, bad input, float64."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from mnistxai import data
from mnistxai.util.errors import InputError
from mnistxai.xai import explain
from mnistxai.xai import metrics as M
from mnistxai.xai.metrics.avg_sensitivity import avg_sensitivity
from mnistxai.xai.metrics.continuity import continuity, shifts
from mnistxai.xai.metrics.local_lipschitz import local_lipschitz
from mnistxai.xai.metrics.relative_stability import relative_stability
from mnistxai.xai.metrics.robustness import max_sensitivity

H = W = 8
EPS = 1e-6  # relative_stability's default eps_min


@struct.dataclass
class Tiny:
    """features l = relu(V x) (R,), logits = l @ U (K,): head(features(x)) == logits(x)."""

    v: jax.Array  # (R, H, W, C)
    u: jax.Array  # (R, K)

    def features(self, x, layer=None):
        return jax.nn.relu(jnp.einsum("bhwc,rhwc->br", x, self.v))

    def head(self, a, layer=None):
        return a @ self.u

    def logits(self, x):
        return self.head(self.features(x))


def tiny(seed=0, r=5, k=3, positive=False):
    rng = np.random.default_rng(seed)  # NumPy data: no XLA program per shape
    v = rng.standard_normal((r, H, W, 1), np.float32) / H
    return Tiny(
        jnp.asarray(np.abs(v) if positive else v),
        jnp.asarray(rng.standard_normal((r, k), np.float32)),
    )


@struct.dataclass
class Linear:
    """logits = <w_k, x>: its gradient map w_t does not depend on x."""

    w: jax.Array  # (K, H, W, C)

    def logits(self, x):
        return jnp.einsum("bhwc,khwc->bk", x, self.w)


def linear(seed=0, k=3):
    return Linear(
        jnp.asarray(np.random.default_rng(seed).standard_normal((k, H, W, 1), np.float32))
    )


def saliency(model, x, t, keys):
    return jax.vmap(jax.grad(lambda xi, ti: model.logits(xi[None])[0, ti]))(x, t)[..., 0]


def grad_x_input(model, x, t, keys):
    return saliency(model, x, t, keys) * x[..., 0]


def model_gradient(model, x, t, keys):
    """Gradient x input of a Tiny model's target logit (nonlinear in x through the ReLU)."""
    g = jax.vmap(jax.grad(lambda xi, ti: model.logits(xi[None])[0, ti]))(x, t)
    return (g * x)[..., 0]


def squared(model, x, t, keys):
    return x[..., 0] ** 2


def images(b=4, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, H, W, 1)).astype(np.float32))


KEYS = jax.random.split(jax.random.key(2), 4)


def keys_of(b):
    return KEYS[:b]


# ---- average / max sensitivity, local Lipschitz ----


def test_gradient_of_a_linear_model_is_perfectly_robust():
    model, x = linear(), images()
    t = jnp.array([0, 1, 2, 0], jnp.int32)
    a, k = saliency(model, x, t, None), keys_of(4)
    np.testing.assert_allclose(avg_sensitivity(saliency, model, x, a, t, key=k), 0, atol=1e-6)
    np.testing.assert_allclose(local_lipschitz(saliency, model, x, a, t, key=k), 0, atol=1e-6)
    r = relative_stability(saliency, model, x, a, t, key=k, layer=None)
    for column in ("relative_input_stability", "relative_output_stability"):
        np.testing.assert_allclose(np.nan_to_num(r[column], nan=0.0), 0, atol=1e-6)
    assert np.all(r["relative_stability_kept"] > 0)


def test_local_lipschitz_of_gradient_x_input_is_the_weight_scale():
    # e(x') - e(x) = w * (x' - x): the ratio is |c| for w = c everywhere, in [min|w|, max|w|]
    x, t, k = images(), jnp.zeros(4, jnp.int32), keys_of(4)
    const = Linear(jnp.full((1, H, W, 1), -1.7))
    got = local_lipschitz(
        grad_x_input, const, x, grad_x_input(const, x, t, k), t, key=k, normalise=False
    )
    np.testing.assert_allclose(got, 1.7, rtol=1e-5)
    params = linear(3, k=1)
    w = np.abs(np.asarray(params.w))
    got = local_lipschitz(
        grad_x_input, params, x, grad_x_input(params, x, t, k), t, key=k, normalise=False
    )
    assert np.all(got >= w.min() * (1 - 1e-5)) and np.all(got <= w.max() * (1 + 1e-5))
    assert np.all(got > 0)


def _by_max(m):
    top = np.abs(m).max()
    return m / top if top > 0 else m


# the naive loops run one example and one sample at a time through these compiled pieces
_explain = jax.jit(model_gradient)
_logits = jax.jit(lambda m, z: m.logits(z))
_features = jax.jit(lambda m, z: m.features(z))
_uniform = jax.jit(
    lambda k, s, lo, hi: jax.random.uniform(
        jax.random.fold_in(k, s), (H, W, 1), jnp.float32, lo, hi
    )
)
_normal = jax.jit(lambda k, s: jax.random.normal(jax.random.fold_in(k, s), (H, W, 1)))


def _map(model, xp, t, key, s):
    """e(x') of one example (NumPy float64), explained with the sample's key as the metric does."""
    ks = jax.random.fold_in(key, s)
    return np.asarray(
        _explain(model, jnp.asarray(xp, jnp.float32)[None], t[None], ks[None])[0], np.float64
    )


def case():
    """A nonlinear Tiny model, 3 images, their gradient x input maps: shared by the naive-loop
    and batch tests so that each metric compiles once per batch size."""
    model, x = tiny(3), images(3, seed=7)
    t, k = jnp.array([2, 0, 1], jnp.int32), keys_of(3)
    return model, x, t, k, model_gradient(model, x, t, k)


RS = dict(samples=6, lower_bound=-0.3, upper_bound=0.3, layer="r")
CONFIGS = {
    "avg": lambda m, x, a, t, k: avg_sensitivity(model_gradient, m, x, a, t, key=k, samples=3),
    "lip": lambda m, x, a, t, k: local_lipschitz(model_gradient, m, x, a, t, key=k, samples=3),
    "cont": lambda m, x, a, t, k: continuity(model_gradient, m, x, a, t, key=k, steps=5),
    "rs": lambda m, x, a, t, k: relative_stability(model_gradient, m, x, a, t, key=k, **RS),
}


def test_sensitivities_and_lipschitz_equal_a_naive_loop():
    model, x, t, k, a = case()
    n = 3
    # the draws are documented: sample s of example i from fold_in(key_i, s), then clipped
    sens, lip = np.zeros((3, n)), np.zeros((3, n))
    for i in range(3):
        xi, e0 = np.asarray(x[i]), _by_max(np.asarray(a[i], np.float64))
        for s in range(n):
            xp = np.clip(xi + np.asarray(_uniform(k[i], s, -0.2, 0.2)), 0, 1)
            e = _by_max(_map(model, xp, t[i], k[i], s))
            sens[i, s] = np.linalg.norm(e - e0) / np.linalg.norm(e0)
            xp = np.clip(xi + 0.1 * np.asarray(_normal(k[i], s)), 0, 1)
            e = _by_max(_map(model, xp, t[i], k[i], s))
            lip[i, s] = np.linalg.norm(e - e0) / (np.linalg.norm(xp - xi) + 1e-10)
    np.testing.assert_allclose(CONFIGS["avg"](model, x, a, t, k), sens.mean(1), rtol=1e-4)
    np.testing.assert_allclose(
        max_sensitivity(model_gradient, model, x, a, t, key=k, samples=n), sens.max(1), rtol=1e-4
    )
    np.testing.assert_allclose(CONFIGS["lip"](model, x, a, t, k), lip.max(1), rtol=1e-4)
    assert np.all(sens.max(1) > sens.mean(1))  # the mean and the max differ here


# ---- continuity ----


def test_continuity_of_a_single_pixel_is_sqrt2():
    # e(x) = x, one bright pixel: a shift that keeps it inside moves mass 1 -> L1 2, L2 sqrt(2);
    # one that pushes it out: L1 1, L2 1. The max over shifts is sqrt(2).
    x = jnp.zeros((2, H, W, 1)).at[0, 3, 4, 0].set(1.0).at[1, 6, 1, 0].set(0.5)
    t, k = jnp.zeros(2, jnp.int32), keys_of(2)
    identity = lambda m, z, tt, kk: z[..., 0]
    got = continuity(identity, None, x, x[..., 0], t, key=k, steps=6)
    np.testing.assert_allclose(got, [np.sqrt(2), np.sqrt(2) / 0.5], rtol=1e-6)


def _quantus_translate(img, dx, axis, fill):
    """Quantus's batched_translation of one (H, W, C) image: pad |dx| fill values on one side,
    keep the image's extent."""
    n = img.shape[axis]
    pad = np.full(img.shape[:axis] + (abs(dx),) + img.shape[axis + 1 :], fill)
    if dx < 0:
        return np.take(np.concatenate([img, pad], axis), np.arange(-n, 0), axis=axis)
    return np.take(np.concatenate([pad, img], axis), np.arange(n), axis=axis)


def test_continuity_equals_a_naive_loop_and_shifts_follow_quantus():
    model, x, t, k, a = case()
    assert [d for _, d in shifts(28, 10)] == [-23, -18, -13, -8, -3, 2, 7, 12, 17, 22]
    assert len(shifts(28, 28)) == 27 and 0 not in [d for _, d in shifts(28, 28)]
    for steps, direction in ((5, "x"), (17, "y")):  # 17 on 8 pixels: shifts -7..9, 0 left out
        axis = 1 if direction == "x" else 0
        dx = (2 * W + 1) // steps
        want = np.zeros(3)
        for i in range(3):
            xi = np.asarray(x[i], np.float64)
            a0 = _by_max(np.abs(np.asarray(a[i], np.float64)))
            for s in range(steps):
                shift = -W + dx * (s + 1)
                if shift == 0:
                    continue
                xp = _quantus_translate(xi, shift, axis, xi.min())
                num = np.abs(_by_max(np.abs(_map(model, xp, t[i], k[i], s))) - a0).sum()
                want[i] = max(want[i], num / (np.linalg.norm(xp - xi) + 1e-9))
        if direction == "x":
            got = CONFIGS["cont"](model, x, a, t, k)
        else:
            got = continuity(model_gradient, model, x, a, t, key=k, steps=steps, direction="y")
        np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=direction)


# ---- relative stability ----


def _relative(new, old):
    return (new - old) / np.where(old == 0, EPS, old)


def test_relative_stability_closed_form_with_a_fixed_perturbation():
    # delta ~ U[0.1, 0.1 + 1e-7): x' = x + 0.1 everywhere; e(x) = x^2; x has zeros (-> eps_min)
    d = 0.1
    model = tiny(1, positive=True)
    model = model.replace(u=jnp.zeros_like(model.u).at[:, 0].set(1.0))  # class 0 always wins
    x = images(2, seed=3).at[:, :3, :, :].set(0.0)
    t, k = jnp.zeros(2, jnp.int32), keys_of(2)
    got = relative_stability(
        squared, model, x, squared(model, x, t, k), t, key=k, samples=3,
        lower_bound=d, upper_bound=d + 1e-7, clip=None, layer="any",
    )  # fmt: skip
    x64 = np.asarray(x, np.float64)
    xp = x64 + d
    num = np.linalg.norm(_relative(xp**2, x64**2).reshape(2, -1), axis=1)
    v = np.asarray(model.v, np.float64)
    feats = lambda z: np.maximum(np.einsum("bhwc,rhwc->br", z, v), 0)
    u = np.asarray(model.u, np.float64)
    ris = num / np.linalg.norm(_relative(xp, x64).reshape(2, -1), axis=1)
    ros = num / np.linalg.norm(feats(xp) @ u - feats(x64) @ u, axis=1)
    rrs = num / np.linalg.norm(_relative(feats(xp), feats(x64)), axis=1)
    np.testing.assert_allclose(got["relative_input_stability"], ris, rtol=1e-4)
    np.testing.assert_allclose(got["relative_output_stability"], ros, rtol=1e-4)
    np.testing.assert_allclose(got["relative_representation_stability"], rrs, rtol=1e-4)
    np.testing.assert_array_equal(got["relative_stability_kept"], [3, 3])
    assert np.all(np.isfinite(ris)) and ris.min() > 0


def test_relative_stability_leaves_out_changed_predictions_like_a_naive_loop():
    model, x, t, k, a = case()
    n, lo, hi = RS["samples"], RS["lower_bound"], RS["upper_bound"]
    got = CONFIGS["rs"](model, x, a, t, k)
    want = {c: np.full(3, -np.inf) for c in ("input", "output", "representation")}
    kept = np.zeros(3, int)
    for i in range(3):
        xi = np.asarray(x[i], np.float64)
        h0 = np.asarray(_logits(model, x[i : i + 1])[0], np.float64)
        l0 = np.asarray(_features(model, x[i : i + 1])[0], np.float64)
        for s in range(n):
            xp = np.clip(np.asarray(x[i]) + np.asarray(_uniform(k[i], s, lo, hi)), 0, 1)
            xpj = jnp.asarray(xp)[None]
            h = np.asarray(_logits(model, xpj)[0], np.float64)
            if h.argmax() != h0.argmax():
                continue
            kept[i] += 1
            num = np.linalg.norm(
                _relative(_map(model, xp, t[i], k[i], s), np.asarray(a[i], np.float64))
            )
            rep = np.asarray(_features(model, xpj)[0], np.float64)
            for c, den in (
                ("input", np.linalg.norm(_relative(xp.astype(np.float64), xi))),
                ("output", np.linalg.norm(h - h0)),
                ("representation", np.linalg.norm(_relative(rep, l0))),
            ):
                want[c][i] = max(want[c][i], num / max(den, EPS))
    assert 0 < kept.sum() < 3 * n  # the case exercises the mask
    np.testing.assert_array_equal(got["relative_stability_kept"], kept)
    for c, w in want.items():
        w = np.where(kept > 0, w, np.nan)
        np.testing.assert_allclose(got[f"relative_{c}_stability"], w, rtol=1e-4, err_msg=c)


@struct.dataclass
class Threshold:
    """logits (sum of relu(V x), c): class 1 wins while the features sum stays below c."""

    v: jax.Array
    c: jax.Array

    def logits(self, x):
        a = jax.nn.relu(jnp.einsum("bhwc,rhwc->br", x, self.v)).sum(-1, keepdims=True)
        return jnp.concatenate([a, jnp.broadcast_to(self.c, a.shape)], -1)


def test_relative_stability_is_nan_only_where_every_sample_flips():
    v = tiny(1, positive=True).v
    x, t, k = images(1, seed=3), jnp.ones(1, jnp.int32), keys_of(1)
    total = Threshold(v, jnp.zeros(())).logits(x)[0, 0]
    # V > 0 and x' = x + U[0.02, 0.2]: the sum rises above c just over it, never above 10 x it
    for c, kept in ((total * 1.0001, 0), (total * 10.0, 10)):
        model = Threshold(v, c)
        got = relative_stability(squared, model, x, squared(model, x, t, k), t, key=k, layer=None)
        assert int(got["relative_stability_kept"][0]) == kept
        for column in ("relative_input_stability", "relative_output_stability"):
            assert np.isnan(got[column][0]) == (kept == 0), (c, column)
            assert not np.isinf(got[column][0])


# ---- shared contracts ----


def test_each_example_depends_on_its_own_image_and_key_only():
    # the naive loops above already run one example at a time; here the batch is reordered and
    # one of its images replaced, in the shape already compiled: the others' values stay put
    model, x, t, k, a = case()
    order = jnp.array([2, 0, 1])
    other = images(1, seed=11)
    xr, ar = x.at[1].set(other[0]), a.at[1].set(_map(model, other[0], t[1], k[1], 0))
    for name, metric in CONFIGS.items():
        base = metric(model, x, a, t, k)
        moved = metric(model, x[order], a[order], t[order], k[order])
        replaced = metric(model, xr, ar, t, k)
        for column in base if isinstance(base, dict) else [None]:
            pick = (lambda r: r[column]) if column else (lambda r: r)
            b, m, r = (np.asarray(pick(v)) for v in (base, moved, replaced))
            np.testing.assert_allclose(m, b[np.asarray(order)], rtol=1e-5, err_msg=column)
            np.testing.assert_allclose(r[[0, 2]], b[[0, 2]], rtol=1e-5, err_msg=column)


def test_bad_input_raises_input_error():
    model, x = tiny(), images(2)
    t, k = jnp.zeros(2, jnp.int32), keys_of(2)
    a = x[..., 0]
    f = model_gradient
    bad = [
        lambda: avg_sensitivity(f, model, x, a[:, :4], t, key=k),
        lambda: avg_sensitivity(f, model, x, a, t, key=k, samples=0),
        lambda: avg_sensitivity(f, model, x, a, t, key=k, radius=0.0),
        lambda: avg_sensitivity(f, model, x.at[0, 0, 0, 0].set(jnp.nan), a, t, key=k),
        lambda: avg_sensitivity(f, model, x, a, t, key=None),
        lambda: local_lipschitz(f, model, x, a, t, key=k, std=-0.1),
        lambda: local_lipschitz(f, model, x, a, t, key=k, clip=(1.0, 0.0)),
        lambda: local_lipschitz(f, model, x, a, t, key=k, normalise="yes"),
        lambda: continuity(f, model, x, a, t, key=k, steps=2 * W + 2),
        lambda: continuity(f, model, x, a, t, key=k, direction="z"),
        lambda: continuity(f, model, x[0], a, t, key=k),
        lambda: relative_stability(f, model, x, a, t, key=k, lower_bound=0.3, upper_bound=0.2),
        lambda: relative_stability(f, model, x, a, t, key=k, eps_min=0.0),
        lambda: relative_stability(f, model, x, a, t.astype(jnp.float32), key=k),
        lambda: relative_stability(f, {"w": 1}, x, a, t, key=k, layer="dense"),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(InputError):
            call()
            pytest.fail(f"case {i} did not raise")
    with pytest.raises(InputError):
        M.METRICS["continuity"].parse({"steps": 58})
    with pytest.raises(InputError):
        M.METRICS["relative_stability"].parse({"lower_bound": 0.5})


def test_float64_closed_forms():
    with jax.enable_x64(True):
        x = images(2).astype(jnp.float64)
        t, k = jnp.zeros(2, jnp.int32), keys_of(2)
        const = Linear(jnp.full((1, H, W, 1), 0.75, jnp.float64))
        a = grad_x_input(const, x, t, k)
        lip = local_lipschitz(grad_x_input, const, x, a, t, key=k, normalise=False, samples=2)
        assert lip.dtype == jnp.float64
        np.testing.assert_allclose(lip, 0.75, rtol=1e-9)  # 0.75 d / (d + 1e-10), d = |x' - x|
        one = jnp.zeros((1, H, W, 1), jnp.float64).at[0, 2, 2, 0].set(1.0)
        ident = lambda m, z, tt, kk: z[..., 0]
        c = continuity(ident, None, one, one[..., 0], t[:1], key=k[:1], steps=3, direction="y")
        assert c.dtype == jnp.float64
        np.testing.assert_allclose(c, np.sqrt(2) / (1 + 1e-9 / np.sqrt(2)), rtol=1e-14)
        avg = avg_sensitivity(grad_x_input, const, x, a, t, key=k, samples=2)
        assert avg.dtype == jnp.float64 and np.all(np.isfinite(avg))
        model = tiny(1, positive=True)
        model = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), model)
        rs = relative_stability(squared, model, x, squared(model, x, t, k), t, key=k, layer="r")
        assert rs["relative_input_stability"].dtype == jnp.float64


# ---- the leaderboard entries, on real digits and the random-init CNN ----


def test_leaderboard_entries_on_real_digits(random_classifier):
    from mnistxai.pipelines.evaluate import method_explain_fn

    images_u8, _ = data.load("mnist", "test", data_dir=os.environ["MNISTXAI_DATA_DIR"])
    x = jnp.asarray(data.to_model_input(images_u8[:3]))
    e = explain("saliency", random_classifier, x)
    sobel = M.sobel_attribution(x)
    saliency_fn = method_explain_fn("saliency", {}, random_classifier, 3)
    expect = {  # metric: (in the default set, explain_fn, maps); the Sobel baseline compiles fast
        "avg_sensitivity": (True, M.baseline_explain_fn("sobel"), sobel),
        "local_lipschitz": (True, M.baseline_explain_fn("sobel"), sobel),
        "continuity": (True, M.baseline_explain_fn("sobel"), sobel),
        "relative_stability": (False, saliency_fn, e.attributions),
    }
    for name, (default, fn, maps) in expect.items():
        m = M.METRICS[name]
        assert m.reexplains and m.category == "robustness" and m.default_set is default
        batch = M.Batch(
            x=x,
            maps=maps,
            targets=e.targets,
            keys=keys_of(3),
            probabilities=random_classifier.probabilities,
            logits=random_classifier.logits,
            chunk_size=64,
            explain_fn=fn,
            classifier=random_classifier,
        )
        out = m.fn(batch, **m.parse({"samples": 3} if "samples" in m.options else {"steps": 3}))
        for column in m.columns:
            v = np.asarray(out[column])
            assert v.shape == (3,) and not np.any(np.isinf(v)), (name, column)
            assert np.all(v[np.isfinite(v)] >= 0), (name, column)
            if name != "relative_stability":
                assert np.all(np.isfinite(v)) and np.all(v > 0), (name, column)
    kept = np.asarray(out["relative_stability_kept"])
    assert np.array_equal(np.isnan(out["relative_input_stability"]), kept == 0)
    assert np.all((kept >= 0) & (kept <= 3))
    assert "max_sensitivity" in M.default_metrics()
