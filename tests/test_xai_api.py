"""explain(): input handling, validation before compilation, batch consistency, no retracing;
postprocessing and the seed-compatible classes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN
from test_xai_tiny import tiny_images


def counting(classifier):
    """The classifier with a ReLU that counts how often it is traced (6 per forward trace)."""
    calls = []

    def relu(z):
        calls.append(1)
        return jax.nn.relu(z)

    return classifier.with_activation(relu), calls


@pytest.fixture(scope="module")
def digits():
    return (np.asarray(tiny_images(3, size=28, seed=2))[..., 0] * 255).round().astype(np.uint8)


def test_image_formats_and_predicted_targets(random_classifier, digits):
    ref = xai.explain("saliency", random_classifier, digits)
    assert ref.attributions.shape == (3, 28, 28) and ref.attributions.dtype == jnp.float32
    x = digits.astype(np.float32)[..., None] / 255
    np.testing.assert_array_equal(ref.targets, jnp.argmax(random_classifier.logits(x), -1))
    for images in (x, x[..., 0]):
        np.testing.assert_allclose(
            xai.explain("saliency", random_classifier, images).attributions,
            ref.attributions,
            rtol=1e-6,
        )
    for single in (digits[0], digits[0][..., None]):
        one = xai.explain("saliency", random_classifier, single)
        assert one.attributions.shape == (1, 28, 28)
    fixed = xai.explain("saliency", random_classifier, digits, targets=4)
    np.testing.assert_array_equal(fixed.targets, [4, 4, 4])


def test_no_retrace_on_second_call_or_new_weights(random_classifier, digits):
    clf, calls = counting(random_classifier)
    xai.explain("saliency", clf, digits)
    traced = len(calls)
    assert traced > 0
    xai.explain("saliency", clf, digits[::-1])
    new_weights = clf.replace(variables=jax.tree_util.tree_map(lambda v: v * 0.5, clf.variables))
    xai.explain("saliency", new_weights, digits, targets=[1, 2, 3])
    xai.explain("saliency", clf, digits, targets=np.array([1, 2, 3]))
    assert len(calls) == 2 * traced  # only the switch from predicted to given targets traced
    xai.explain("saliency", clf, digits, signed=True)
    assert len(calls) == 3 * traced  # a new static option does retrace


BAD = [
    (dict(images=np.zeros((27, 27))), "shape"),
    (dict(images=np.zeros((2, 28, 28, 3))), "shape"),
    (dict(images=np.zeros((0, 28, 28))), "empty"),
    (dict(images=np.full((28, 28), np.nan)), "NaN"),
    (dict(images=np.full((28, 28), np.inf)), "NaN or inf"),
    (dict(images=np.full((28, 28), 2.0)), r"\[0, 1\]"),
    (dict(images=np.zeros((28, 28), np.int64)), "ambiguous"),
    (dict(images=np.zeros((28, 28), bool)), "dtype"),
    (dict(targets=10), "targets must lie"),
    (dict(targets=-1), "targets must lie"),
    (dict(targets=1.0), "integers"),
    (dict(targets=[1, 2]), "shape"),
    (dict(method="shap"), "unknown method"),
    (dict(method="gradcam", layer="conv9"), "unknown layer"),
    (dict(method="gradcam", layer="dense"), "convolutional"),
    (dict(stepz=3), "unknown option"),
    (dict(method="integrated_gradients", steps=0), "steps"),
    (dict(method="integrated_gradients", steps=2.5), "steps must be an integer"),
    (dict(method="integrated_gradients", rule="simpson"), "unknown rule"),
    (dict(method="integrated_gradients", rule="trapezoid", steps=1), "steps >= 2"),
    (dict(method="integrated_gradients", baseline="grey"), "unknown baseline"),
    (dict(method="integrated_gradients", baseline=np.zeros((2, 28, 28))), "1 or 3"),
    (dict(method="integrated_gradients", baseline="uniform"), "key"),
    (dict(method="smoothgrad"), "stochastic"),
    (dict(method="smoothgrad", key=5), "key must be"),
    (dict(method="smoothgrad", key=jax.random.key(0), noise=-0.1), "noise"),
    (dict(method="smoothgrad", key=jax.random.key(0), samples=0), "samples"),
    (dict(method="expected_gradients", key=jax.random.key(0)), "background"),
    (dict(method="occlusion", window=(0, 4)), "window"),
    (dict(method="occlusion", stride=29), "stride"),
    (dict(method="occlusion", baseline=1.5), "baseline"),
    (dict(method="rise", key=jax.random.key(0), p=0.0), "p must"),
    (dict(method="rise", key=jax.random.key(0), p=1e-30), r"p must be in \[0.01, 0.99\]"),
    (dict(method="occlusion", window=4, stride=28), "must not exceed the window"),
    (
        dict(method="smoothgrad", key=jax.random.key(0), noise=1e38),
        r"noise must be in \[0.0, 1.0\]",
    ),
    (
        dict(
            method="expected_gradients",
            key=jax.random.key(0),
            background=np.zeros((2, 28, 28)),
            samples=2,
            alphas=[0.5, 1.5],
        ),
        r"alphas .* \[0, 1\]",
    ),
    (dict(method="lrp", rule="alpha_beta", alpha=1.0, beta=1.0), "alpha - beta"),
    (dict(method="lrp", rule="z_plus"), "unknown rule"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(signed="yes"), "True or False"),
]


@pytest.mark.parametrize("bad, match", BAD)
def test_bad_input_raises_before_compiling(random_classifier, bad, match):
    clf, calls = counting(random_classifier)
    args = dict(method="saliency", images=np.zeros((3, 28, 28), np.float32), targets=None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        xai.explain(args.pop("method"), clf, args.pop("images"), args.pop("targets"), **args)
    assert not calls


def test_bad_classifier_and_lrp_activation(random_classifier):
    with pytest.raises(ValueError, match="Classifier"):
        xai.explain("saliency", random_classifier.logits, np.zeros((28, 28)))
    with pytest.raises(ValueError, match="ReLU"):
        xai.explain("lrp", random_classifier.with_activation(jnp.tanh), np.zeros((28, 28)))


def test_postprocess():
    maps = jnp.stack([jnp.full((28, 28), 3.0), jnp.arange(784.0).reshape(28, 28) - 100])
    n = xai.normalize(maps)
    np.testing.assert_array_equal(n[0], 0.0)
    assert float(n[1].min()) == 0.0 and float(n[1].max()) == 1.0
    s = xai.normalize_signed(maps)
    assert float(s[1].min()) == pytest.approx(-100 / 683) and float(s[1].max()) == 1.0
    np.testing.assert_array_equal(xai.normalize_signed(jnp.zeros((28, 28))), 0.0)
    c = xai.clip_percentile(maps[1], 10, 90)
    assert float(c.max()) == pytest.approx(float(jnp.percentile(maps[1], 90)))
    np.testing.assert_array_equal(xai.magnitude(-maps), maps * jnp.sign(maps))
    rgb = xai.overlay(np.zeros((28, 28, 1)), maps[1])
    assert rgb.shape == (28, 28, 3) and 0 <= rgb.min() and rgb.max() <= 1
    with pytest.raises(ValueError, match="percentiles"):
        xai.clip_percentile(maps, 90, 10)


def test_seed_compatible_classes(random_classifier, digits):
    p, s = random_classifier.params, random_classifier.batch_stats
    heat, cls, score = xai.GradCAM(CNN(), target_layer="conv3").compute_gradcam(p, s, digits[0])
    ref = xai.explain("gradcam", random_classifier, digits[0], layer="conv3")
    np.testing.assert_allclose(heat, xai.normalize(ref.attributions)[0], rtol=1e-6)
    assert cls == int(ref.targets[0]) and 0 < score < 1
    sal, cls, _ = xai.SaliencyMap(CNN()).compute_saliency(p, s, digits)
    assert sal.shape == (3, 28, 28) and cls.shape == (3,)
    smooth, _, _ = xai.SaliencyMap(CNN()).compute_smooth_saliency(p, s, digits[0], n_samples=3)
    assert smooth.shape == (28, 28) and 0 <= smooth.min() and smooth.max() <= 1
    with pytest.raises(ValueError, match="unknown layer"):
        xai.GradCAM(CNN(), target_layer="conv7")
    assert isinstance(random_classifier, Classifier)


def test_fast_twin_matches_flax_model_and_its_input_gradient(random_classifier):
    from mnistxai.xai._fast import fast_logits

    # perturb weights and BatchNorm statistics so that folding them matters
    clf = random_classifier.replace(
        variables=jax.tree_util.tree_map(lambda v: v * 1.3 + 0.05, random_classifier.variables)
    )
    x = jnp.asarray(tiny_images(4, size=28))
    fast = fast_logits(clf)
    np.testing.assert_allclose(jax.jit(fast)(x), jax.jit(clf.logits)(x), rtol=1e-4, atol=1e-5)
    grad = lambda f: jax.jit(jax.grad(lambda z: f(z)[:, 3].sum()))(x)
    expected = grad(clf.logits)
    np.testing.assert_allclose(grad(fast), expected, atol=1e-4 * float(jnp.abs(expected).max()))


def test_the_default_set_leaves_out_only_the_opt_out_methods():
    from mnistxai.xai import METHODS, parse_methods

    default, every = parse_methods(None), parse_methods("all")
    assert every == tuple(METHODS) and "exact_shapley" in every
    assert set(every) - set(default) == {n for n, m in METHODS.items() if not m.default_set}
    assert "exact_shapley" not in default and "saliency" in default
