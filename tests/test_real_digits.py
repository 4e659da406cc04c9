"""Every gradient method and hand-written VJP against an independent reference, on real digits.

MNIST's flat black background ties activations over whole regions (max-pool windows whose four
inputs are equal, dead ReLUs), and saturated strokes tie too; random inputs have no ties, so a
gradient that is wrong at ties passes every test on them. The reference here is ``jax.vjp`` of
the plain Flax model (``classifier.logits``, whose max-pool gradient is JAX's own: a tied
window's gradient split evenly), per method written out in NumPy-level code from that gradient,
on 32 real test digits and on black, white and constant-grey images (tied everywhere).

float64 (``jax_enable_x64``): equal to 1e-10 relative. float32: rounding of BatchNorm folded into
the convs can flip a near-tie at a stroke edge, so 30 of the 32 digits must agree to 1e-4.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.training.checkpoint import load_classifier
from mnistxai.data import load, to_model_input
from mnistxai.xai._core import at_targets
from mnistxai.xai.methods.integrated_gradients import make_baseline
from mnistxai.xai import deconv_relu, guided_relu

DIGITS = 32


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    images, _ = load("mnist", "test", data_dir=mnist_dir)
    return images


@pytest.fixture(scope="module")
def digits(test_images):
    """float64 (32 + 3, 28, 28, 1): real test digits, then black, white and constant grey."""
    real = np.asarray(to_model_input(test_images[:DIGITS]), np.float64)
    flat = np.stack([np.full((28, 28, 1), v) for v in (0.0, 1.0, 0.5)])
    return np.concatenate([real, flat])


def relative_error(a, ref, scale=None):
    """Per-image max |a - ref| over max |scale| (default: the reference map itself)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = ref if scale is None else np.asarray(scale, np.float64)
    axes = tuple(range(1, ref.ndim))
    return np.abs(a - ref).max(axes) / np.maximum(np.abs(scale).max(axes), 1e-300)


@jax.jit
def flax_grads(classifier, x, targets):
    """Input gradients (B, 28, 28, 1) of each example's target logit: jax.vjp of the Flax model."""
    logits, vjp = jax.vjp(classifier.logits, x)
    return vjp(jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype))[0]


def ig_reference(classifier, x, baseline, targets, steps):
    """IG by Gauss-Legendre quadrature of Flax gradients, one path point at a time."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    total = 0.0
    for a, w in zip((nodes + 1) / 2, weights / 2):
        total = total + w * flax_grads(classifier, baseline + a * (x - baseline), targets)
    return ((x - baseline) * total).sum(-1)


@functools.partial(jax.jit, static_argnames="layer")
def layer_grads(classifier, x, targets, layer):
    """Activations A of ``layer`` and dy/dA by jax.grad of each example's head."""
    a = classifier.features(x, layer)
    head = lambda ai, t: classifier.head(ai[None], layer)[0, t]
    return a, jax.vmap(jax.grad(head))(a, targets)


def cam_reference(classifier, x, targets, layer, weigh):
    """ReLU(weigh(A, dy/dA)) upsampled to 28x28, one example at a time."""
    a, g = (np.asarray(v) for v in layer_grads(classifier, x, jnp.asarray(targets), layer))
    cams = np.maximum(np.stack([weigh(ai, gi) for ai, gi in zip(a, g)]), 0)
    return np.asarray(jax.image.resize(cams, (len(cams), 28, 28), "bilinear"))


def gradcam_weigh(a, g):
    return np.einsum("hwk,k->hw", a, g.mean((0, 1)))


def gradcam_pp_weigh(a, g):
    denom = 2 * g**2 + a.sum((0, 1)) * g**3
    alpha = np.where(g != 0, g**2 / np.where(denom != 0, denom, 1.0), 0.0)
    return np.einsum("hwk,k->hw", a, (alpha * np.maximum(g, 0)).sum((0, 1)))


def layercam_weigh(a, g):
    return (np.maximum(g, 0) * a).sum(-1)


def xgradcam_weigh(a, g):
    mass = a.sum((0, 1))
    w = np.where(mass != 0, (g * a).sum((0, 1)) / np.where(mass != 0, mass, 1.0), 0.0)
    return np.einsum("hwk,k->hw", a, w)


def principal_projection(m):
    """pytorch-grad-cam's get_2d_projection_with_sign_correction, by NumPy's SVD."""
    rows = m.reshape(-1, m.shape[-1])
    rows = rows - rows.mean(0)
    projection = rows @ np.linalg.svd(rows, full_matrices=True)[2][0]
    if abs(projection.min()) > abs(projection.max()):
        projection = -projection
    return projection.reshape(m.shape[:2])


def ablation_reference(classifier, x, targets, layer="block3"):
    """Ablation-CAM by a naive loop: zero one channel at a time and rerun the head."""
    a = np.asarray(classifier.features(jnp.asarray(x), layer))
    head = jax.jit(lambda v: classifier.head(v, layer))
    cams = []
    for ai, t in zip(a, targets):
        score = float(head(ai[None])[0, t])
        ablated = np.repeat(ai[None], ai.shape[-1], 0)
        for k in range(ai.shape[-1]):
            ablated[k, ..., k] = 0
        w = (score - np.asarray(head(ablated))[:, t]) / score if score != 0 else 0 * ai[0, 0]
        cams.append(np.maximum(np.einsum("hwk,k->hw", ai, w), 0))
    return np.asarray(jax.image.resize(np.stack(cams), (len(cams), 28, 28), "bilinear"))


def minmax(maps):
    lo = maps.min((1, 2), keepdims=True)
    span = maps.max((1, 2), keepdims=True) - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 0.0)


def noise_references(classifier, x, targets, key, noise_dtype):
    """The SmoothGrad family's {method: (options, reference maps[, scale])}, from the documented
    draws: example i uses split(key, B)[i], its sample s fold_in(that, s), noise of
    ``noise_dtype``."""
    samples, noise = 3, 0.15
    keys = jax.random.split(key, x.shape[0])
    noisy = []
    for s in range(samples):
        eps = jax.vmap(
            lambda k: jax.random.normal(jax.random.fold_in(k, s), x.shape[1:], noise_dtype)
        )(keys).astype(x.dtype)
        sigma = noise * (x.max((1, 2, 3)) - x.min((1, 2, 3)))[:, None, None, None]
        noisy.append(np.asarray(flax_grads(classifier, x + sigma * eps, targets)))
    mean, mean_sq = sum(noisy) / samples, sum(n * n for n in noisy) / samples
    options = dict(samples=samples, noise=noise)
    return {
        "smoothgrad": (options, np.abs(mean).max(-1)),
        "smoothgrad_sq": (options, mean_sq.sum(-1)),
        # E[g^2] - E[g]^2 is rounding noise where the noise is 0 (a constant image): its scale
        "vargrad": (options, (mean_sq - mean * mean).sum(-1), mean_sq.sum(-1)),
    }


def references(classifier, x, targets):
    """{method: (options, reference maps[, scale])} for every deterministic gradient method;
    errors are measured against the map's scale (or ``scale``'s, where the map may be ~0)."""
    g = np.asarray(flax_grads(classifier, x, targets))
    gb = np.asarray(flax_grads(classifier.with_activation(guided_relu), x, targets)).sum(-1)
    deconv = np.asarray(flax_grads(classifier.with_activation(deconv_relu), x, targets)).sum(-1)
    gradcam = cam_reference(classifier, x, targets, "block3", gradcam_weigh)

    # expected gradients with one background image and fixed path positions is a fixed sum
    background, alphas = x[:1] * 0.5, np.array([0.2, 0.5, 0.9])
    eg = sum(flax_grads(classifier, background + a * (x - background), targets) for a in alphas)
    eg = ((x - background) * eg / len(alphas)).sum(-1)
    return {
        "saliency": ({}, np.abs(g).max(-1)),
        "saliency_signed": ({"signed": True}, g.sum(-1)),
        "grad_x_input": ({}, (g * x).sum(-1)),
        "guided_backprop": ({}, gb),
        "integrated_gradients": ({"steps": 8}, ig_reference(classifier, x, 0 * x, targets, 8)),
        "expected_gradients": ({"background": background, "samples": 3, "alphas": alphas}, eg),
        # epsilon-LRP with epsilon 0 is gradient x input on a ReLU network (Ancona et al. 2018)
        "lrp": ({"epsilon": 0.0, "input_rule": "same"}, (g * x).sum(-1)),
        "gradcam": ({}, gradcam),
        "gradcam_pp": ({}, cam_reference(classifier, x, targets, "block3", gradcam_pp_weigh)),
        "layercam": (
            {"layer": "conv3"},
            cam_reference(classifier, x, targets, "conv3", layercam_weigh),
        ),
        "guided_gradcam": ({}, gb * minmax(gradcam)),
        "deconvnet": ({}, deconv),
        "xgradcam": ({}, cam_reference(classifier, x, targets, "block3", xgradcam_weigh)),
        "eigencam": (
            {},
            cam_reference(classifier, x, targets, "block3", lambda a, g: principal_projection(a)),
        ),
        "eigengradcam": (
            {},
            cam_reference(
                classifier, x, targets, "block3", lambda a, g: principal_projection(g * a)
            ),
        ),
        "ablationcam": ({}, ablation_reference(classifier, x, targets)),
    }


def run(classifier, x, targets, key, name, options):
    method = "saliency" if name == "saliency_signed" else name
    return xai.explain(method, classifier, x, targets, key=key, **options).attributions


KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def targets(classifier, digits):
    return np.asarray(jnp.argmax(classifier.logits(jnp.asarray(digits, jnp.float32)), -1))


@pytest.fixture(scope="module")
def float64_references(classifier, digits, targets):
    """The references of every gradient method, from the float64 Flax model on ``digits``."""
    with jax.enable_x64(True):
        clf, x = classifier.astype(jnp.float64), jnp.asarray(digits)
        return references(clf, x, targets), noise_references(clf, x, targets, KEY, jnp.float64)


def test_every_gradient_method_equals_the_flax_reference_in_float64(
    classifier, digits, targets, float64_references
):
    refs, noisy = float64_references
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        for name, (options, *ref) in {**refs, **noisy}.items():
            maps = run(clf, digits, targets, KEY, name, options)
            assert maps.dtype == jnp.float64, name
            err = relative_error(maps, *ref)
            assert err.max() < 1e-10, (name, err.max(), int(err.argmax()))


def test_every_gradient_method_in_float32_is_near_the_float64_reference(
    classifier, digits, targets, float64_references
):
    """The reference is the float64 Flax model on the same inputs (SmoothGrad's noise drawn in
    float32, as the method draws it). float32 rounding flips near-ties on a few digits: there the
    two float32 computations (BatchNorm folded into the convs or not) disagree with each other."""
    x, t = digits[:DIGITS], targets[:DIGITS]
    with jax.enable_x64(True):
        noisy = noise_references(
            classifier.astype(jnp.float64), jnp.asarray(x), t, KEY, jnp.float32
        )
    refs = {
        name: (options, *(r[:DIGITS] for r in ref))
        for name, (options, *ref) in float64_references[0].items()
    }
    for name, (options, *ref) in {**refs, **noisy}.items():
        if "background" in options:
            options = {**options, "background": np.asarray(options["background"], np.float32)}
        maps = run(classifier, x.astype(np.float32), t, KEY, name, options)
        assert maps.dtype == jnp.float32
        err = relative_error(maps, *ref)
        assert (err < 1e-4).sum() >= DIGITS - 2, (name, np.sort(err)[-4:])


def test_saliency_obeys_directional_finite_differences_that_keep_ties(classifier, digits):
    """Along d = 1[x = 0] every tie stays a tie, so any valid (sub)gradient g must give
    <g, d> = the directional derivative; a pool VJP that counts a tie several times does not."""
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        x = digits[:DIGITS]
        targets = np.asarray(jnp.argmax(clf.logits(x), -1))
        g = xai.explain("saliency", clf, x, targets, signed=True).attributions
        d = (x[..., 0] == 0).astype(np.float64)
        h = 1e-6
        at = lambda z: np.asarray(clf.logits(z))[np.arange(DIGITS), targets]
        fd = (at(x + h * d[..., None]) - at(x - h * d[..., None])) / (2 * h)
        err = np.abs(np.asarray((g * d).sum((1, 2))) - fd) / np.abs(fd)
    # a tie that d breaks after all (a stroke pixel equal to a background one) is a kink where
    # the central difference averages two slopes: allow two such digits, not a wrong gradient
    assert (err < 1e-6).sum() >= DIGITS - 2 and err.max() < 1e-2, np.sort(err)[-4:]


def test_ig_completeness_on_256_real_digits(classifier, test_images):
    """|delta| <= 1% of |F(x) - F(0)| at 128 Gauss-Legendre steps wherever the classifier has a
    clear decision (|F(x) - F(0)| >= 2: the suite's one-epoch CNN leaves some near 0), and small
    in logits everywhere. With a pool gradient that counts ties several times, |delta| reached
    36% of F(x) - F(0) on the trained CNN (benchmarks/gradient_check.py measures it there)."""
    x = test_images[:256]
    res = xai.explain("integrated_gradients", classifier, x, steps=128)
    xf = jnp.asarray(to_model_input(x))
    t = jnp.asarray(res.targets)
    gap = np.asarray(
        at_targets(classifier.logits(xf), t) - at_targets(classifier.logits(jnp.zeros_like(xf)), t)
    )
    delta = np.asarray(res.extras["convergence_delta"])
    np.testing.assert_allclose(
        np.asarray(res.attributions.sum((1, 2))) - gap, delta, atol=1e-4 * float(np.abs(gap).max())
    )
    clear = np.abs(gap) >= 2
    assert clear.sum() >= 128
    assert (np.abs(delta[clear]) <= 0.01 * np.abs(gap[clear])).all(), np.sort(
        np.abs(delta[clear]) / np.abs(gap[clear])
    )[-5:]
    assert np.abs(delta).max() < 0.05


def test_deeplift_sums_to_the_logit_difference_on_real_digits(classifier, digits, test_images):
    """Summation to delta, the rule every DeepLIFT multiplier is built to keep: to 1e-10 of the
    logit scale in float64 on real digits and flat images, for a black and a blurred baseline and
    for DeepLIFT-SHAP over ten training-set references; and in float32 to 1e-4."""
    background = np.asarray(to_model_input(test_images[-10:]), np.float64)
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        x = jnp.asarray(digits)
        scale = float(np.abs(np.asarray(clf.logits(x))).max())
        for name, options in [
            ("deeplift", {}),
            ("deeplift", {"baseline": "blurred"}),
            ("deeplift_shap", {"background": background}),
        ]:
            res = xai.explain(name, clf, x, **options)
            t = jnp.asarray(res.targets)
            if name == "deeplift":
                refs = make_baseline(options.get("baseline", "black"), x, None, 4.0)
                gap = at_targets(clf.logits(x), t) - at_targets(clf.logits(refs), t)
            else:
                ref_logits = np.asarray(clf.logits(jnp.asarray(background)))[:, np.asarray(t)]
                gap = at_targets(clf.logits(x), t) - ref_logits.mean(0)
            total = np.asarray(res.attributions.sum((1, 2)))
            assert np.abs(total - np.asarray(gap)).max() < 1e-10 * scale, name
            delta = np.asarray(res.extras["convergence_delta"])
            assert np.abs(delta).max() < 1e-10 * scale, name
    res = xai.explain("deeplift", classifier, digits[:DIGITS].astype(np.float32))
    assert np.abs(np.asarray(res.extras["convergence_delta"])).max() < 1e-4 * scale


def test_occlusion_covers_every_pixel_when_windows_do_not_tile(classifier, digits):
    """5x5 windows at stride 3 start at 0, 3, ..., 24 (Captum's placement): the last one is
    cropped to rows and columns 24-27, so the border is occluded too."""
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        x = digits[:4]
        res = xai.explain("occlusion", clf, x, window=5, stride=3)
        logits = jax.jit(clf.logits)
        for b in range(4):
            t = int(res.targets[b])
            corners = [(i, j) for i in range(0, 25, 3) for j in range(0, 25, 3)]
            occluded = np.repeat(x[b : b + 1], len(corners), 0)
            for n, (i, j) in enumerate(corners):
                occluded[n, i : i + 5, j : j + 5] = 0.0
            drops = np.asarray(logits(x[b : b + 1]))[0, t] - np.asarray(logits(occluded))[:, t]
            total, count = np.zeros((28, 28)), np.zeros((28, 28))
            for (i, j), drop in zip(corners, drops):
                total[i : i + 5, j : j + 5] += drop
                count[i : i + 5, j : j + 5] += 1
            assert (count > 0).all()
            np.testing.assert_allclose(
                res.attributions[b], total / count, rtol=1e-10, atol=1e-12 * np.abs(total).max()
            )
