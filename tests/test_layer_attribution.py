"""Layer and neuron attributions (``xai.layer_attribution``) against independent references.

Real MNIST test digits through the trained CNN fixture, in float64: layer IG at ``input`` is IG;
gradient x activation and conductance equal naive re-implementations from ``classifier.features``
/ ``classifier.head`` and ``jax.grad``; completeness against logits computed here; the dense layer,
whose head is affine, has closed-form answers; neuron gradients obey central finite differences
along directions that keep the input's ties; neuron guided backprop equals a layer-by-layer guided
backward pass over the BatchNorm-folded network. Hand-built inputs (constant images) give the
first conv's neuron gradient in closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.data import load, to_model_input
from mnistxai.models.cnn import max_pool_2x2
from mnistxai.models.spec import BN_EPSILON, folded_layers
from mnistxai.training.checkpoint import load_classifier
from mnistxai.util.errors import InputError
from mnistxai.xai.layer_attribution import layer_attribution, neuron_attribution

DIGITS = 4
STEPS = 16


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def uint8_digits(mnist_dir):
    return load("mnist", "test", data_dir=mnist_dir)[0][:DIGITS]


@pytest.fixture(scope="module")
def digits(uint8_digits):
    return np.asarray(to_model_input(uint8_digits), np.float64)


@pytest.fixture(scope="module")
def targets(classifier, digits):
    return np.asarray(jnp.argmax(classifier.logits(jnp.asarray(digits, jnp.float32)), -1))


def rel(a, ref):
    """max |a - ref| / max |ref| over everything."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-300)


# the references run jitted: op-by-op float64 convolutions cost seconds each time
@jax.jit
def target_logits(clf, x, t):
    return jnp.take_along_axis(clf.logits(x), t[:, None], 1)[:, 0]


@jax.jit
def predicted(clf, x):
    return jnp.argmax(clf.logits(x), -1)


@functools.partial(jax.jit, static_argnames="layer")
def features(clf, x, layer):
    return clf.features(x, layer)


@functools.partial(jax.jit, static_argnames="layer")
def head_grads(clf, acts, layer, t):
    """d logit_t / dA for a batch of activations: the examples are independent (inference mode),
    so the gradient of the sum of their target logits is each example's own."""
    onehot = jax.nn.one_hot(t, 10, dtype=acts.dtype)
    return jax.grad(lambda a: (clf.head(a, layer) * onehot).sum())(acts)


def test_layer_integrated_gradients_at_the_input_is_integrated_gradients(
    classifier, digits, targets
):
    with jax.enable_x64(True):
        ig = xai.explain("integrated_gradients", classifier, digits, targets, steps=STEPS)
        layer_ig = layer_attribution(
            "integrated_gradients", classifier, digits, targets, layer="input", steps=STEPS
        )
    assert layer_ig.attributions.shape == (DIGITS, 28, 28, 1)
    assert layer_ig.attributions.dtype == jnp.float64 and layer_ig.layer == "input"
    assert rel(layer_ig.attributions[..., 0], ig.attributions) < 1e-10
    np.testing.assert_allclose(
        layer_ig.extras["convergence_delta"], ig.extras["convergence_delta"], atol=1e-10
    )
    np.testing.assert_array_equal(layer_ig.targets, targets)


def test_gradient_x_activation_is_activation_times_the_head_gradient(classifier, digits):
    with jax.enable_x64(True):
        out = layer_attribution("gradient_x_activation", classifier, digits, layer="block1")
        clf = classifier.astype(jnp.float64)
        acts = features(clf, jnp.asarray(digits), "conv2")
        t = np.asarray(predicted(clf, jnp.asarray(digits)))
        ref = acts * head_grads(clf, acts, "conv2", t)
    assert out.attributions.shape == (DIGITS, 28, 28, 32) and out.layer == "conv2"
    np.testing.assert_array_equal(out.targets, t)  # None: the predicted class
    assert rel(out.attributions, ref) < 1e-10
    assert np.abs(out.attributions).max() > 0


def test_conductance_equals_a_naive_step_loop_and_layer_paths_are_complete(
    classifier, digits, targets
):
    """Captum's scheme: the rule's nodes for steps + 1 points (Gauss-Legendre: 0 and 1 are not
    among them), gradient at each interval's left node. Measured on these 4 digits (16 steps):
    |delta| of layer IG <= 0.034, of conductance <= 0.23, with |F(x) - F(0)| up to 8.5."""
    layer = "conv6"
    with jax.enable_x64(True):
        cond = layer_attribution("conductance", classifier, digits, targets, steps=STEPS)
        lig = layer_attribution("integrated_gradients", classifier, digits, targets, steps=STEPS)
        clf = classifier.astype(jnp.float64)
        x = jnp.asarray(digits)
        nodes = 0.5 * (1 + np.polynomial.legendre.leggauss(STEPS + 1)[0])
        # every node's activations in one batch: (STEPS + 1, B, 7, 7, 128)
        path = jnp.asarray(nodes)[:, None, None, None, None] * x[None]
        acts = features(clf, path.reshape((-1,) + x.shape[1:]), layer)
        grads = head_grads(clf, acts, layer, jnp.tile(jnp.asarray(targets), STEPS + 1))
        acts, grads = (a.reshape((STEPS + 1, DIGITS) + a.shape[1:]) for a in (acts, grads))
        ref = (grads[:-1] * (acts[1:] - acts[:-1])).sum(0)
        t = jnp.asarray(targets)
        gap = np.asarray(target_logits(clf, x, t) - target_logits(clf, 0 * x, t))
    assert cond.attributions.shape == (DIGITS, 7, 7, 128) and cond.layer == "conv6"
    assert rel(cond.attributions, ref) < 1e-10
    for out, bound in ((lig, 0.08), (cond, 0.4)):
        total = np.asarray(out.attributions).sum((1, 2, 3))
        np.testing.assert_allclose(out.extras["convergence_delta"], total - gap, atol=1e-10)
        assert np.abs(total - gap).max() < bound, (total - gap, gap)
    # the mistakes this catches are O(|gap|): a missing (A(x) - A(b)) factor, a wrong target
    assert np.abs(gap).max() > 5


def test_the_dense_layer_has_closed_form_answers(classifier, digits, targets):
    """After the dense layer's ReLU the head is affine (dropout off, output layer): F = A . w_t +
    c_t. So layer IG is (A(x) - A(0)) * w_t for any steps and rule, and so is conductance on
    trapezoid nodes (0 and 1 included: the sum telescopes). Small chunks run the examples in a
    ``lax.map`` and the steps in a scan."""
    with jax.enable_x64(True):
        kw = dict(layer="dense", steps=STEPS)
        lig = layer_attribution(
            "integrated_gradients", classifier, digits, targets, chunk_size=2, **kw
        )
        cond = layer_attribution(
            "conductance", classifier, digits, targets, rule="trapezoid", chunk_size=5, **kw
        )
        clf = classifier.astype(jnp.float64)
        x = jnp.asarray(digits)
        w = np.asarray(clf.params["out"]["kernel"])[:, targets].T  # (B, 256)
        a, a0 = np.asarray(features(clf, x, "dense")), np.asarray(features(clf, 0 * x, "dense"))
    for out in (lig, cond):
        assert rel(out.attributions, (a - a0) * w) < 1e-10
        assert np.abs(out.extras["convergence_delta"]).max() < 1e-10


def tie_keeping_direction(uint8_images, seed=0):
    """A random direction that is a function of each pixel's value: inputs equal anywhere stay
    equal along it, so no tie of the network (flat background, saturated strokes) is broken and
    the directional derivative is <gradient, d> for JAX's tie-splitting gradient as well."""
    levels = np.random.default_rng(seed).normal(size=256)
    return levels[uint8_images][..., None]


def block3_neuron(clf, x):
    """(i, j, k) of conv6 active on every digit (its largest minimum over the central 3x3)."""
    acts = np.asarray(features(clf, x, "conv6"))[:, 2:5, 2:5].min(0)
    i, j, k = np.unravel_index(np.argmax(acts), acts.shape)
    assert acts[i, j, k] > 0.5
    return int(i) + 2, int(j) + 2, int(k)


@pytest.fixture(scope="module")
def neuron(classifier, digits):
    with jax.enable_x64(True):
        return block3_neuron(classifier.astype(jnp.float64), jnp.asarray(digits))


@pytest.fixture(scope="module")
def neuron_gradient(classifier, digits, neuron):
    with jax.enable_x64(True):
        return neuron_attribution("gradient", classifier, digits, layer="block3", neuron=neuron)


def test_neuron_gradient_obeys_central_finite_differences(
    classifier, digits, uint8_digits, neuron, neuron_gradient
):
    """Measured: relative error <= 1e-8 at h = 1e-6 (float64 rounding), ~3e-2 at h = 1e-4 (ReLU
    kinks crossed), so a wrong gradient cannot pass."""
    d = tie_keeping_direction(uint8_digits)
    h = 1e-6
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        # a whole conv2 channel summed over space: the one with the largest smallest sum
        k = int(np.argmax(np.asarray(features(clf, digits, "conv2")).sum((1, 2)).min(0)))
        by_channel = neuron_attribution(
            "gradient", classifier, digits, layer="block1", neuron=("channel", k)
        )
        cases = (
            (
                neuron_gradient,
                lambda z: np.asarray(features(clf, z, "conv6"))[(slice(None),) + neuron],
            ),
            (by_channel, lambda z: np.asarray(features(clf, z, "conv2"))[..., k].sum((1, 2))),
        )
        for out, unit in cases:
            fd = (unit(digits + h * d) - unit(digits - h * d)) / (2 * h)
            dot = (np.asarray(out.attributions) * d[..., 0]).sum((1, 2))
            assert out.attributions.shape == (DIGITS, 28, 28)
            np.testing.assert_allclose(out.extras["activation"], unit(digits), rtol=1e-12)
            assert (np.abs(dot - fd) / np.abs(fd)).max() < 1e-6, (dot, fd)
    assert neuron_gradient.layer == "conv6" and neuron_gradient.neuron == ("index", neuron)


def test_neuron_integrated_gradients_is_complete(classifier, digits, neuron):
    """Measured at 16 steps on these digits: |delta| <= 0.09 with A_n(x) - A_n(0) in 0.76..1.93."""
    with jax.enable_x64(True):
        out = neuron_attribution(
            "integrated_gradients", classifier, digits, layer="conv6", neuron=neuron, steps=STEPS
        )
        clf = classifier.astype(jnp.float64)
        unit = lambda z: np.asarray(features(clf, z, "conv6"))[(slice(None),) + neuron]
        gap = unit(digits) - unit(0 * digits)
    total = np.asarray(out.attributions).sum((1, 2))
    np.testing.assert_allclose(out.extras["convergence_delta"], total - gap, atol=1e-10)
    assert np.abs(total - gap).max() < 0.2 and np.abs(gap).min() > 0.5, (total, gap)


@functools.partial(jax.jit, static_argnames=("name", "neuron"))
def naive_guided_backprop(clf, x, name, neuron):
    """Guided backprop written out over the BatchNorm-folded layers: convs and pools by their own
    jax.vjp, each ReLU passing g only where its input > 0 and g > 0."""
    spec = clf.model.spec
    below = spec.layers[: spec.point(name)]
    count = sum(1 for e in below if e.kind not in ("batchnorm", "dropout"))
    layers = folded_layers(spec, clf.variables)[:count]

    def apply(layer, a):
        if layer.kind == "conv":
            dn = ("NHWC", "HWIO", "NHWC")
            conv = jax.lax.conv_general_dilated(
                a, layer.kernel, (1, 1), "SAME", dimension_numbers=dn
            )
            return conv + layer.bias
        return max_pool_2x2(a) if layer.kind == "maxpool" else jax.nn.relu(a)

    inputs, a = [], x
    for layer in layers:
        inputs.append(a)
        a = apply(layer, a)
    g = jnp.zeros_like(a).at[(slice(None),) + neuron].set(1.0)
    for layer, z in zip(reversed(layers), reversed(inputs)):
        if layer.kind == "relu":
            g = jnp.where((z > 0) & (g > 0), g, 0.0)
        else:
            g = jax.vjp(functools.partial(apply, layer), z)[1](g)[0]
    return g[..., 0]


def test_neuron_guided_backprop_equals_a_naive_guided_pass(
    classifier, digits, neuron, neuron_gradient
):
    with jax.enable_x64(True):
        out = neuron_attribution(
            "guided_backprop", classifier, digits, layer="block3", neuron=neuron
        )
        ref = naive_guided_backprop(
            classifier.astype(jnp.float64), jnp.asarray(digits), "conv6", neuron
        )
    assert rel(out.attributions, ref) < 1e-9
    # the ReLUs below drop the negative gradients the plain gradient keeps
    assert rel(out.attributions, neuron_gradient.attributions) > 0.1
    np.testing.assert_allclose(out.extras["activation"], neuron_gradient.extras["activation"])


def test_first_conv_neuron_gradient_on_constant_images_is_its_folded_kernel(classifier):
    """conv1 unit (14, 14, k) is relu(s_k (w_k * x)(14, 14) + c_k): its gradient is s_k w_k on the
    3x3 window when the unit is active and zero when not. Constant images v in [0, 1] make it
    active or not through the sign of v s_k sum(w_k) + c_k; k is chosen so both happen."""
    values = np.linspace(0, 1, 5)
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        w = np.asarray(clf.params["conv1"]["kernel"])[:, :, 0]  # (3, 3, 32)
        p, s = clf.params["bn1"], clf.batch_stats["bn1"]
        scale = np.asarray(p["scale"] / np.sqrt(s["var"] + BN_EPSILON))
        shift = np.asarray(p["bias"]) - np.asarray(s["mean"]) * scale
        pre = values[:, None] * scale * w.sum((0, 1)) + shift  # (5, 32)
        k = int(np.argmax(((pre > 0).any(0) & (pre < 0).any(0)) * np.abs(pre).min(0)))
        active = pre[:, k] > 0
        assert active.any() and not active.all()
        images = np.broadcast_to(values[:, None, None], (5, 28, 28)).copy()
        grad = neuron_attribution("gradient", classifier, images, layer="conv1", neuron=(14, 14, k))
    ref = np.zeros((5, 28, 28))
    ref[active, 13:16, 13:16] = scale[k] * w[:, :, k]
    assert rel(grad.attributions, ref) < 1e-10


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c, x: layer_attribution("deconvnet", c, x), "kind"),
        (lambda c, x: layer_attribution("conductance", c, x, layer="pool2"), "unknown layer"),
        (lambda c, x: layer_attribution("conductance", c, x, layer="out"), "unknown layer"),
        (lambda c, x: layer_attribution("conductance", c, x, steps=0), "steps"),
        (lambda c, x: layer_attribution("conductance", c, x, baseline="grey"), "baseline"),
        (lambda c, x: layer_attribution("conductance", c, x, rule="simpson"), "rule"),
        (lambda c, x: layer_attribution("conductance", c, x, baseline="uniform"), "key"),
        (lambda c, x: layer_attribution("conductance", c, x, targets=10), "targets"),
        (lambda c, x: layer_attribution("conductance", c, x, chunk_size=0), "chunk_size"),
        (lambda c, x: layer_attribution("conductance", c, x[:, :20]), "shape"),
        (lambda c, x: layer_attribution("conductance", "model", x), "Classifier"),
        (
            lambda c, x: layer_attribution("integrated_gradients", c, x, rule="trapezoid", steps=1),
            "trapezoid",
        ),
        (lambda c, x: neuron_attribution("conductance", c, x, layer="conv1", neuron=0), "kind"),
        (lambda c, x: neuron_attribution("gradient", c, x, layer="conv9", neuron=0), "layer"),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=(7, 0, 0)),
            r"\[0, 6\]",
        ),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=(0, 0, 128)),
            r"\[0, 127\]",
        ),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=(-1, 0, 0)),
            "lie in",
        ),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=(0, 0)),
            "3 indices",
        ),
        (lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=5), "3 indices"),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv6", neuron=(0, 0.5, 1)),
            "integer",
        ),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="dense", neuron=256),
            r"\[0, 255\]",
        ),
        (lambda c, x: neuron_attribution("gradient", c, x, layer="dense", neuron=True), "integer"),
        (
            lambda c, x: neuron_attribution(
                "gradient", c, x, layer="conv4", neuron=("channel", 64)
            ),
            "channel",
        ),
        (
            lambda c, x: neuron_attribution("gradient", c, x, layer="conv4", neuron=("row", 3)),
            "channel",
        ),
        (lambda c, x: neuron_attribution("gradient", c, x, layer="conv4", neuron="a"), "neuron"),
    ],
)
def test_bad_input_is_an_input_error(random_classifier, call, match):
    x = np.zeros((2, 28, 28), np.float32)
    with pytest.raises(InputError, match=match):
        call(random_classifier, x)
