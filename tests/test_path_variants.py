"""Guided IG and Blur IG: completeness on real digits of the trained CNN, known answers on a
hand-built linear model, and independent NumPy loops written after PAIR saliency's
(``guided_ig_impl``, ``BlurIG.GetMask``) on real digits in float64.

Every method run here is float64 (``jax_enable_x64``), so a reference agrees to rounding. The
trained CNN's references use the plain Flax model's gradient (``classifier.logits``), the
methods the fast twin's.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from mnistxai import xai
from mnistxai.data import load, to_model_input
from mnistxai.training.checkpoint import load_classifier
from mnistxai.xai import METHODS
from mnistxai.xai.methods.blur_ig import gaussian_blur

DIGITS = 4


@pytest.fixture(scope="module")
def classifier(trained_run):
    with jax.enable_x64(True):
        return load_classifier(trained_run[0]).astype(jnp.float64)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """float64 (4, 28, 28, 1) real test digits (116, 165, 64 and 193 lit pixels)."""
    return np.asarray(to_model_input(load("mnist", "test", mnist_dir)[0][:DIGITS]), np.float64)


@pytest.fixture(scope="module")
def noise_baseline(digits):
    """U[0, 1] noise: every pixel differs from the digit, so Guided IG's selection is active."""
    return np.random.default_rng(0).uniform(size=digits.shape)


@pytest.fixture(scope="module")
def targets(classifier, digits):
    with jax.enable_x64(True):
        return np.asarray(jnp.argmax(classifier.logits(jnp.asarray(digits)), -1))


@pytest.fixture(scope="module")
def flax_grad(classifier):
    """grad_x of logit t of the plain Flax model for one image (28, 28, 1), as NumPy float64."""
    with jax.enable_x64(True):
        grad = jax.jit(jax.grad(lambda z, t: classifier.logits(z[None])[0, t]))

    def at(z, t):
        with jax.enable_x64(True):
            return np.asarray(grad(jnp.asarray(z), t))

    return at


def explain64(name, classifier, digits, **options):
    with jax.enable_x64(True):
        res = xai.explain(name, classifier, digits, **options)
        assert res.attributions.dtype == jnp.float64
        return jax.tree_util.tree_map(np.asarray, res)


def gaps(res):
    """(F(x) - F(path start), |convergence_delta|) per digit."""
    delta = res.extras["convergence_delta"]
    return res.attributions.sum((1, 2)) - delta, np.abs(delta)


def max_relative(a, ref):
    return np.abs(a - ref).max() / np.abs(ref).max()


# ---- Guided IG ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guided(classifier, digits, noise_baseline):
    """Guided IG at PAIR's fraction and max_dist: black baseline (16 steps), noise (16, 64)."""
    runs = {("black", 16): explain64("guided_ig", classifier, digits, steps=16)}
    for steps in (16, 64):
        runs["noise", steps] = explain64(
            "guided_ig", classifier, digits, baseline=noise_baseline, steps=steps
        )
    return runs


def test_guided_ig_is_complete_on_real_digits(guided):
    """sum(attr) = F(x) - F(b) (Kapishnikov et al. 2021, section 3) up to the discretisation.
    Measured |delta| / max(|F(x) - F(b)|, 1): <= 0.19 (black, 16 steps); with the noise baseline
    <= 0.17 at 16 steps and <= 0.052 at 64, the mean |delta| 2.5x smaller. (It then levels off:
    within a step a feature may jump 2 max_dist of the way on the gradient taken at the step's
    start, so only a smaller max_dist tightens it further.)"""
    gap, err = gaps(guided["black", 16])
    assert (err / np.maximum(np.abs(gap), 1)).max() < 0.25, (err, gap)
    gap, err16 = gaps(guided["noise", 16])
    gap64, err64 = gaps(guided["noise", 64])
    np.testing.assert_allclose(gap, gap64, rtol=1e-12)  # both paths start and end alike
    assert (err64 / np.maximum(np.abs(gap), 1)).max() < 0.08, (err64, gap)
    assert err64.mean() < 0.6 * err16.mean(), (err16, err64)


def test_guided_ig_with_a_black_baseline_is_ig_on_digits_of_few_lit_pixels(
    digits, targets, flax_grad, guided
):
    """PAIR takes the ``fraction`` quantile of |gradient| over all 784 pixels, those that
    cannot move (at their bound: every unlit pixel, for a black baseline) counting as +inf. Below
    196 = 784/4 lit pixels the threshold is +inf, every lit pixel moves together, and the path
    is the straight line: IG with the left Riemann rule, here summed in NumPy."""
    assert ((digits > 0).sum((1, 2, 3)) < 196).all()
    for i in range(DIGITS):
        grads = [flax_grad(k / 16 * digits[i], targets[i]) for k in range(16)]
        ig = (digits[i] * np.mean(grads, 0)).sum(-1)
        assert max_relative(guided["black", 16].attributions[i], ig) < 1e-10, i


def naive_guided_ig(grad, x_in, b, steps, fraction=0.25, max_dist=0.02):
    """PAIR's loop (``guided_ig_impl``) in NumPy, one feature at a time where it clamps the
    laggards: (attribution, rounds that moved only some of the movable features)."""
    diff = x_in - b
    x, attr = b.copy(), np.zeros_like(x_in)
    l1_total = np.abs(diff).sum()
    partial = 0
    for k in range(1, steps + 1):
        g = grad(x)
        alpha = k / steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_lo, x_hi = b + diff * lo, b + diff * hi
        target = l1_total * (1 - alpha)
        while True:
            start = x.copy()
            for i in np.ndindex(x.shape):
                position = (x[i] - b[i]) / diff[i] if diff[i] != 0 else hi
                if position < lo:
                    x[i] = x_lo[i]
            now = np.abs(x - x_in).sum()
            if math.isclose(target, now, rel_tol=1e-9, abs_tol=1e-9):
                attr += (x - start) * g
                break
            size = np.where(x == x_hi, np.inf, np.abs(g))
            pick = (size <= np.quantile(size, fraction, method="lower")) & (size != np.inf)
            room = np.abs(x - x_hi)[pick].sum()
            gamma = (now - target) / room if room > 0 else np.inf
            x[pick] = x_hi[pick] if gamma > 1 else x[pick] + (x_hi[pick] - x[pick]) * gamma
            attr += (x - start) * g
            partial += int(pick.sum() < (size != np.inf).sum())
            if gamma <= 1:
                break
    return attr, partial


def test_guided_ig_equals_a_naive_numpy_loop_on_real_digits(
    digits, targets, noise_baseline, flax_grad, guided
):
    """PAIR's defaults (fraction 0.25, max_dist 0.02), 16 steps, black and noise baselines."""
    for name, baseline in (("black", np.zeros_like(digits)), ("noise", noise_baseline)):
        for i in range(2):
            ref, partial = naive_guided_ig(
                lambda z: flax_grad(z, targets[i]), digits[i], baseline[i], 16
            )
            # with noise the lowest-|gradient| pixels move first (rounds that move only some)
            assert (partial > 0) == (name == "noise"), (name, i, partial)
            err = max_relative(guided[name, 16].attributions[i], ref.sum(-1))
            assert err < 1e-10, (name, i, err)


def linear_logits(seed=0, classes=10):
    r = np.random.default_rng(seed)
    w, c = jnp.asarray(r.normal(size=(784, classes))), jnp.asarray(r.normal(size=classes))
    return (lambda x: x.reshape(x.shape[0], -1) @ w + c), w


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"baseline": "noise", "fraction": 0.1, "max_dist": 0.1},
        {"baseline": "white", "fraction": 1.0, "max_dist": 0.0},
        {"baseline": "x"},
    ],
)
def test_guided_ig_equals_ig_on_a_linear_model(digits, noise_baseline, options):
    """F linear: its gradient is constant, so any path from b to x gives (x - b) * w, IG (left
    Riemann, same steps) too; a path that missed x, or a wrong gradient, would not."""
    options = dict(options)
    name = options.pop("baseline", "black")
    baseline = {"noise": noise_baseline, "x": digits}.get(name, name)
    logits_fn, w = linear_logits()
    t = jnp.arange(DIGITS)
    with jax.enable_x64(True):
        x = jnp.asarray(digits)
        gig = METHODS["guided_ig"].fn(logits_fn, x, t, baseline=baseline, steps=16, **options)
        ig = METHODS["integrated_gradients"].fn(
            logits_fn, x, t, baseline=baseline, steps=16, rule="left"
        )
        b = np.broadcast_to(
            np.asarray(0.0 if name == "black" else 1.0 if name == "white" else baseline),
            digits.shape,
        )
        exact = (digits - b)[..., 0] * np.asarray(w).T[:DIGITS].reshape(DIGITS, 28, 28)
        assert gig.attributions.dtype == jnp.float64
        scale = max(np.abs(exact).max(), 1.0)
        assert np.abs(gig.attributions - ig.attributions).max() / scale < 1e-10
        assert np.abs(gig.attributions - exact).max() / scale < 1e-10
        assert np.abs(gig.extras["convergence_delta"]).max() < 1e-10


# ---- Blur IG --------------------------------------------------------------------------------


def test_the_blur_is_scipys_gaussian_filter_with_pairs_settings(digits):
    """PAIR's gaussian_blur: ndimage.gaussian_filter(image, [s, s, 0], mode="constant")
    (truncate 4.0), on real digits and on a non-square noise image, across the kernel's radius
    changes (0 below sigma 0.125) and kernels wider than the image."""
    noise = np.random.default_rng(1).uniform(size=(20, 28, 2))
    with jax.enable_x64(True):
        for image in (digits[0], digits[3], noise):
            for sigma in (0.0, 0.01, 0.1, 0.124, 0.126, 0.3, 0.5, 1.0, 2.7, 6.9, 12.5, 50.0):
                ref = ndimage.gaussian_filter(image, [sigma, sigma, 0], mode="constant")
                ours = np.asarray(gaussian_blur(jnp.asarray(image), sigma))
                assert ours.dtype == np.float64
                err = np.abs(ours - ref).max() / np.abs(ref).max()
                assert err < 1e-10, (image.shape, sigma, err)


@pytest.fixture(scope="module")
def blurred(classifier, digits):
    """Blur IG up to sigma 10 (16 and 64 steps) and PAIR's sqrt spacing (max_sigma 50, 8
    steps)."""
    runs = {
        steps: explain64("blur_ig", classifier, digits, max_sigma=10.0, steps=steps)
        for steps in (16, 64)
    }
    runs["sqrt"] = explain64("blur_ig", classifier, digits, steps=8, sqrt=True, grad_step=0.05)
    return runs


def test_blur_ig_is_complete_on_real_digits(blurred, classifier, digits, targets):
    """sum(attr) = F(x) - F(blur(x, max_sigma)) (Xu et al. 2020) up to the left Riemann sum in
    sigma. Measured |delta| / max(|gap|, 1) at 64 steps <= 0.078; the mean |delta| 0.048 at 64
    steps, 0.27 at 16. The gap is F(x) minus F of the digit blurred by scipy at sigma 10."""
    gap, err16 = gaps(blurred[16])
    gap64, err64 = gaps(blurred[64])
    with jax.enable_x64(True):
        logits = lambda z: np.asarray(classifier.logits(jnp.asarray(z)))[np.arange(DIGITS), targets]
        end = np.stack(
            [ndimage.gaussian_filter(d, [10.0, 10.0, 0], mode="constant") for d in digits]
        )
        np.testing.assert_allclose(gap, logits(digits) - logits(end), rtol=1e-10)
    np.testing.assert_allclose(gap, gap64, rtol=1e-12)
    assert (err64 / np.maximum(np.abs(gap), 1)).max() < 0.12, (err64, gap)
    assert err64.mean() < 0.25 * err16.mean(), (err16, err64)


def naive_blur_ig(grad, image, max_sigma, steps, grad_step, sqrt):
    """PAIR's BlurIG.GetMask (batch_size 1) in NumPy with scipy's blur, step by step."""
    blur = lambda s: image if s == 0 else ndimage.gaussian_filter(image, [s, s, 0], mode="constant")
    sigmas = [(i * max_sigma / steps) ** (0.5 if sqrt else 1.0) for i in range(steps + 1)]
    total = np.zeros_like(image)
    for i in range(steps):
        here = blur(sigmas[i])
        slope = (blur(sigmas[i] + grad_step) - here) / grad_step
        total += (sigmas[i + 1] - sigmas[i]) * slope * grad(here)
    return -total


def test_blur_ig_equals_a_naive_numpy_loop_on_real_digits(blurred, digits, targets, flax_grad):
    """Linear widths up to 10 (kernels wider than the digit) and PAIR's sqrt widths."""
    cases = {16: (10.0, 16, 0.01, False), "sqrt": (50.0, 8, 0.05, True)}
    for run, (max_sigma, steps, grad_step, sqrt) in cases.items():
        for i in range(2):
            ref = naive_blur_ig(
                lambda z: flax_grad(z, targets[i]), digits[i], max_sigma, steps, grad_step, sqrt
            )
            err = max_relative(blurred[run].attributions[i], ref.sum(-1))
            assert err < 1e-10, (run, i, err)


def test_blur_igs_sqrt_path_ends_at_the_square_root_of_max_sigma(
    blurred, classifier, digits, targets
):
    """PAIR's sqrt spacing sigma_i = sqrt(i max_sigma / steps) ends at sqrt(max_sigma): the
    convergence delta is measured against F of that blur."""
    gap, _ = gaps(blurred["sqrt"])
    end = np.stack(
        [ndimage.gaussian_filter(d, [math.sqrt(50.0)] * 2 + [0], mode="constant") for d in digits]
    )
    with jax.enable_x64(True):
        logit = lambda z: np.asarray(classifier.logits(jnp.asarray(z)))[np.arange(DIGITS), targets]
        np.testing.assert_allclose(gap, logit(digits) - logit(end), rtol=1e-10)
