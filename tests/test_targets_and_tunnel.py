"""All-class maps, contrastive targets and the noise tunnel over any method, on real digits.

The trained CNN's real digits tie activations and kill units over the black background; every
equality here must hold there, not only on noise.
"""

import jax
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.data import load
from mnistxai.training.checkpoint import load_classifier
from mnistxai.util.errors import InputError
from mnistxai.xai import Contrast, api

# methods of every family whose target enters in a different place (backward cotangent, CAM
# head, perturbed scores, DeepLIFT multipliers), light options
ALL_CLASS_METHODS = {
    "saliency": {},
    "integrated_gradients": {"steps": 4},
    "gradcam": {},
    "occlusion": {"window": 7, "stride": 7},
    "deeplift": {},
    "lrp": {},
}
# maps linear in the target's cotangent: map(logit a - logit b) = map(a) - map(b)
LINEAR_METHODS = {
    "saliency": {"signed": True},
    "grad_x_input": {},
    "integrated_gradients": {"steps": 4},
    "deeplift": {},
}


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load("mnist", "test", mnist_dir)[0][:6]


def close(a, b, scale=None):
    a, b = np.asarray(a), np.asarray(b)
    scale = scale or float(np.abs(b).max()) or 1.0
    np.testing.assert_allclose(a, b, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("name", list(ALL_CLASS_METHODS))
def test_all_classes_equal_ten_single_class_calls_in_one_compiled_call(classifier, digits, name):
    options = ALL_CLASS_METHODS[name]
    before = sum(run._cache_size() for run in api._RUN_ALL.values())
    every = xai.explain(name, classifier, digits, "all", **options)
    assert sum(run._cache_size() for run in api._RUN_ALL.values()) == before + 1
    assert every.attributions.shape == (6, 10, 28, 28)
    np.testing.assert_array_equal(every.targets, np.tile(np.arange(10), (6, 1)))
    scale = float(np.abs(every.attributions).max())
    for c in range(10):
        one = xai.explain(name, classifier, digits, c, **options)
        close(every.attributions[:, c], one.attributions, scale)
        for k, v in one.extras.items():
            close(every.extras[k][:, c], v, 1.0)  # deltas: the logits' scale
    # the classes differ: a method that ignored the target would pass the equalities above
    # only if every class's map were the same
    assert np.abs(every.attributions[:, 0] - every.attributions[:, 1]).max() > 1e-3 * scale


@pytest.mark.parametrize("name", list(LINEAR_METHODS))
def test_a_contrast_is_the_difference_of_the_two_maps_for_linear_methods(classifier, digits, name):
    options = LINEAR_METHODS[name]
    a, b = 4, 9
    contrast = xai.explain(name, classifier, digits, Contrast(a, b), **options)
    map_a = xai.explain(name, classifier, digits, a, **options).attributions
    map_b = xai.explain(name, classifier, digits, b, **options).attributions
    close(contrast.attributions, np.asarray(map_a) - np.asarray(map_b))
    np.testing.assert_array_equal(contrast.targets, np.full(6, a))
    np.testing.assert_array_equal(contrast.extras["contrast_class"], np.full(6, b))
    if "convergence_delta" in contrast.extras:  # complete for logit a - logit b
        logits = np.asarray(classifier.logits(xai._inputs.as_images(digits)))
        black = np.asarray(classifier.logits(np.zeros((1, 28, 28, 1), np.float32)))[0]
        gap = (logits[:, a] - logits[:, b]) - (black[a] - black[b])
        sums = np.asarray(contrast.attributions).sum((1, 2))
        close(sums - np.asarray(contrast.extras["convergence_delta"]), gap)


def test_contrasts_per_image_equal_one_call_per_pair(classifier, digits):
    a, b = np.array([1, 2, 3, 4, 5, 6]), np.array([7, 7, 0, 0, 0, 9])
    both = xai.explain("gradcam", classifier, digits, Contrast(a, b))
    for i in range(6):
        one = xai.explain("gradcam", classifier, digits[i], Contrast(int(a[i]), int(b[i])))
        close(both.attributions[i], one.attributions[0])
    np.testing.assert_array_equal(both.extras["contrast_class"], b)


def test_bad_targets_are_clear_errors(classifier, digits):
    with pytest.raises(InputError, match="probability"):
        xai.explain("rise", classifier, digits, Contrast(1, 2), key=jax.random.key(0), masks=8)
    with pytest.raises(InputError, match="needs both classes"):
        xai.explain("saliency", classifier, digits, Contrast(None, 3))
    with pytest.raises(InputError, match="two different classes"):
        xai.explain("saliency", classifier, digits, Contrast(3, 3))
    with pytest.raises(InputError, match=r"Contrast.b must lie in \[0, 9\]"):
        xai.explain("saliency", classifier, digits, Contrast(3, 10))
    with pytest.raises(InputError, match="'all'"):
        xai.explain("saliency", classifier, digits, "every")
    with pytest.raises(InputError, match="targets must be integers"):
        xai.explain("saliency", classifier, digits, 2.5)


def test_noise_tunnel_over_saliency_is_the_smoothgrad_family(classifier, digits):
    key = jax.random.key(5)
    family = xai.explain_noise_tunnel(
        ("smoothgrad", "smoothgrad_sq", "vargrad"),
        classifier,
        digits,
        key=key,
        samples=6,
        signed=True,
    )
    for kind, reference in family.items():
        tunnel = xai.explain(
            "noise_tunnel",
            classifier,
            digits,
            key=key,
            method="saliency",
            kind=kind,
            samples=6,
            method_options={"signed": True},
        )
        close(tunnel.attributions, reference.attributions)


def test_noise_tunnel_over_ig_without_noise_is_ig_and_noise_changes_it(classifier, digits):
    ig = xai.explain("integrated_gradients", classifier, digits, steps=8)
    quiet = xai.explain(
        "noise_tunnel",
        classifier,
        digits,
        key=jax.random.key(0),
        noise=0.0,
        samples=3,
        method_options={"steps": 8},
    )
    close(quiet.attributions, ig.attributions)
    close(quiet.extras["convergence_delta"], ig.extras["convergence_delta"], 1.0)
    noisy = xai.explain(
        "noise_tunnel", classifier, digits, key=jax.random.key(0), method_options={"steps": 8}
    )
    assert np.abs(np.asarray(noisy.attributions) - np.asarray(ig.attributions)).max() > 1e-3 * (
        float(np.abs(ig.attributions).max())
    )


def test_noise_tunnel_over_a_cam_and_its_errors(classifier, digits):
    key = jax.random.key(2)
    tunnel = xai.explain(
        "noise_tunnel", classifier, digits, key=key, method="gradcam", noise=0.0, samples=2
    )
    close(tunnel.attributions, xai.explain("gradcam", classifier, digits).attributions)
    with pytest.raises(InputError, match="stochastic"):
        xai.explain("noise_tunnel", classifier, digits, key=key, method="smoothgrad")
    with pytest.raises(InputError, match="registered method"):
        xai.explain("noise_tunnel", classifier, digits, key=key, method="noise_tunnel")
    with pytest.raises(InputError, match="unknown option"):
        xai.explain("noise_tunnel", classifier, digits, key=key, method_options={"window": 3})
    with pytest.raises(InputError, match="array"):
        xai.explain(
            "noise_tunnel", classifier, digits, key=key, method_options={"baseline": digits[:1]}
        )
    with pytest.raises(InputError, match="stochastic"):
        xai.explain("noise_tunnel", classifier, digits)  # no key
