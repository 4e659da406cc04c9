"""FullGrad: the full-gradient representation's completeness on a known bias-only answer and on
real digits, and the map against an independent reference (gradients of the plain Flax model at
each BatchNorm's output, post-processed in NumPy as pytorch-grad-cam does)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import xai
from mnistxai.data import load, to_model_input
from mnistxai.models.spec import BN_EPSILON, Folded, folded_layers
from mnistxai.training.checkpoint import load_classifier
from mnistxai.xai.methods.fullgrad import full_gradient, fullgrad


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """float64 (16 + 2, 28, 28, 1): real test digits, then a black and a grey image."""
    real = np.asarray(to_model_input(load("mnist", "test", data_dir=mnist_dir)[0][:16]), np.float64)
    return np.concatenate([real, np.zeros((1, 28, 28, 1)), np.full((1, 28, 28, 1), 0.5)])


def flax_full_gradients(clf, x, targets):
    """(logits, dF/dx, {BatchNorm or Dense name: dF/d its output}) of each example's target
    logit: jax.vjp of the plain Flax model (BatchNorm unfolded) with zeros added to every
    BatchNorm and Dense output through a Flax method interceptor."""
    shapes = {}

    def record(f, args, kwargs, context):
        out = f(*args, **kwargs)
        if type(context.module) in (nn.BatchNorm, nn.Dense):
            shapes[context.module.name] = out.shape
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(clf.logits, x)
    out, gx, grads = _flax_vjp(
        clf, x, targets, {k: jnp.zeros(v, x.dtype) for k, v in shapes.items()}
    )
    return np.asarray(out), np.asarray(gx), {k: np.asarray(v) for k, v in grads.items()}


@jax.jit
def _flax_vjp(clf, x, targets, probes):
    def logits(v, probes):
        def add(f, args, kwargs, context):
            out = f(*args, **kwargs)
            return out + probes[context.module.name] if context.module.name in probes else out

        with nn.intercept_methods(add):
            return clf.logits(v)

    out, vjp = jax.vjp(logits, x, probes)
    return (out, *vjp(jax.nn.one_hot(targets, out.shape[-1], dtype=out.dtype)))


def effective_biases(clf):
    """{name: bias} of every BatchNorm (beta - mu gamma / sqrt(var + eps), pytorch-grad-cam's
    get_bias_data) and Dense layer, from the Flax variables in NumPy."""
    out = {}
    for layer in clf.model.spec.layers:
        p = {k: np.asarray(v) for k, v in clf.params.get(layer.name, {}).items()}
        if layer.kind == "batchnorm":
            s = {k: np.asarray(v) for k, v in clf.batch_stats[layer.name].items()}
            out[layer.name] = p["bias"] - s["mean"] * p["scale"] / np.sqrt(s["var"] + BN_EPSILON)
        elif layer.kind == "dense":
            out[layer.name] = p["bias"]
    return out


def cv2_linear(n_in, n_out):
    """(n_out, n_in) matrix of cv2.resize's INTER_LINEAR along one axis (resizeGeneric's
    coordinates: half-pixel centres, clamped to the edge pixels)."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        f = (d + 0.5) * n_in / n_out - 0.5
        s = int(np.floor(f))
        f -= s
        if s < 0:
            f, s = 0.0, 0
        if s >= n_in - 1:
            f, s = 0.0, n_in - 1
        m[d, s] += 1 - f
        if f:
            m[d, s + 1] += f
    return m


def resize(img, size):
    """cv2.resize(img, size[::-1]) with INTER_LINEAR, for an (h, w) map."""
    return cv2_linear(img.shape[0], size[0]) @ img @ cv2_linear(img.shape[1], size[1]).T


def scale_cam_image(cams, size=None):
    """pytorch-grad-cam's scale_cam_image on (N, h, w) maps: each min-max scaled, then resized."""
    out = []
    for img in cams:
        img = img - img.min()
        img = img / (1e-7 + img.max())
        if size is not None:
            img = resize(img, size)
        out.append(img)
    return np.stack(out)


def scale_across_batch_and_channels(t, size):
    b, c = t.shape[:2]
    return scale_cam_image(t.reshape((b * c,) + t.shape[2:]), size).reshape(b, c, *size)


def grad_cam_fullgrad(x, gx, grads, biases):
    """pytorch-grad-cam's FullGrad.compute_cam_per_layer and aggregate_multi_layers, in NCHW,
    over the BatchNorm layers (the only Conv2d / BatchNorm2d layers with a bias here)."""
    nchw = lambda a: a.transpose(0, 3, 1, 2)
    size = x.shape[1:3]
    parts = [scale_across_batch_and_channels(np.abs(nchw(gx * x)), size)]
    for name, g in grads.items():
        if g.ndim == 4:
            bias_grad = np.abs(biases[name][None, :, None, None] * nchw(g))
            parts.append(scale_across_batch_and_channels(bias_grad, size).sum(1)[:, None])
    per_layer = np.concatenate(parts, 1).sum(1)[:, None]
    return scale_cam_image(per_layer.sum(1))


@pytest.fixture(scope="module")
def float64_run(classifier, digits):
    """FullGrad on ``digits`` in float64 (even examples: the predicted class; odd: another one)
    and the Flax model's gradients for the same targets: (explanation, logits, dF/dx, {layer:
    dF/d output}, effective biases)."""
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        x = jnp.asarray(digits)
        pred = np.asarray(jnp.argmax(clf.logits(x), -1))
        targets = np.where(np.arange(len(x)) % 2, (pred + 3) % 10, pred)
        res = xai.explain("fullgrad", clf, x, targets)
        assert res.attributions.dtype == jnp.float64
        assert all(v.dtype == jnp.float64 for v in res.extras.values())
        return (res, *flax_full_gradients(clf, x, jnp.asarray(targets)), effective_biases(clf))


def test_a_bias_only_network_is_all_bias_part_with_the_hand_computed_logit(
    classifier, digits, float64_run
):
    """The trained CNN with every conv kernel zeroed, float64: F(x) is the bias path only,
    relu(relu(b6) W + b) W' + b' with b6 conv6's folded bias (the GAP of a constant map), so
    dF/dx = 0, the input part is 0 and the bias part is F. Every part of the map is constant, so
    the map is zero."""
    res64 = float64_run[0]  # same shapes and options: the compiled program is reused
    params = {
        k: {**v, "kernel": jnp.zeros_like(v["kernel"])} if k.startswith("conv") else v
        for k, v in classifier.params.items()
    }
    zeroed = classifier.replace(variables={**classifier.variables, "params": params})
    with jax.enable_x64(True):
        clf = zeroed.astype(jnp.float64)
        layers = folded_layers(clf.model.spec, clf.variables)
        res = xai.explain("fullgrad", clf, digits, res64.targets)
        flax_logits = np.asarray(clf.logits(jnp.asarray(digits)))
    b6, (w1, b1), (w2, b2) = (
        np.asarray(layers[-6].bias),
        map(np.asarray, layers[-3][1:]),
        map(np.asarray, layers[-1][1:]),
    )
    logits = np.maximum(np.maximum(b6, 0) @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(flax_logits, np.broadcast_to(logits, flax_logits.shape), 1e-12)
    f = logits[np.asarray(res.targets)]
    assert np.abs(f).min() > 1e-3
    assert not np.asarray(res.extras["input_part"]).any()
    np.testing.assert_allclose(res.extras["bias_part"], f, rtol=1e-12)
    assert np.abs(np.asarray(res.extras["completeness_error"])).max() < 1e-12 * np.abs(f).max()
    assert not np.asarray(res.attributions).any()


def test_a_hand_built_network_with_biases_is_complete():
    """conv relu maxpool conv relu gap dense relu dense with random biases, float64: input part
    plus bias parts equals the logit of every class; the dense biases' share, b' + b . dF/db
    (hand-computed), is far from 0, so completeness needs them."""
    r = np.random.default_rng(3)
    arr = lambda *shape, s=1.0: jnp.asarray(r.normal(size=shape) * s)
    with jax.enable_x64(True):
        layers = [
            Folded("conv", arr(3, 3, 1, 4), arr(4, s=0.3)),
            Folded("relu"),
            Folded("maxpool"),
            Folded("conv", arr(3, 3, 4, 5, s=0.4), arr(5, s=0.3)),
            Folded("relu"),
            Folded("gap"),
            Folded("dense", arr(5, 6), arr(6, s=0.5)),
            Folded("relu"),
            Folded("dense", arr(6, 3), arr(3, s=0.5)),
        ]
        x = jnp.asarray(r.uniform(size=(4, 8, 8, 1)))
        t = jnp.repeat(jnp.arange(3), 4)
        run = jax.jit(lambda v, t: (fullgrad(layers, v, t), full_gradient(layers)[0](v[:4])))
        res, (logits, outputs) = run(jnp.tile(x, (3, 1, 1, 1)), t)
    hidden = np.asarray(outputs[2]) > 0
    assert hidden.any(1).all()  # gradients reach the convs
    logit = np.asarray(logits).T.reshape(-1)
    total = np.asarray(res.extras["input_part"] + res.extras["bias_part"])
    np.testing.assert_allclose(total, logit, rtol=1e-12, atol=1e-12)
    (w2, b2), b1 = map(np.asarray, layers[-1][1:]), np.asarray(layers[-3].bias)
    dense = np.array(
        [b2[c] + (hidden[i] * b1 * w2[:, c]).sum() for c in range(3) for i in range(4)]
    )
    assert np.abs(dense).min() > 1e-2
    assert (np.asarray(res.attributions).max((1, 2)) > 0.99).all()


def test_b_completeness_on_real_digits_in_float64_and_parts_equal_the_flax_gradients(
    classifier, digits, float64_run
):
    """F(x) = sum(x dF/dx) + sum_l sum(b_l dF/db_l) to 1e-10 of the logit on real digits and
    flat images (float64); the two parts equal those of the unfolded Flax model's gradients
    (BatchNorm's shift times the gradient at its output, summed; dense biases times theirs).
    float32: complete to 1e-4, and its maps within 1e-4 of the float64 ones."""
    res, logits, gx, grads, biases = float64_run
    t = np.asarray(res.targets)
    f = logits[np.arange(len(t)), t]
    scale = np.abs(f).max()
    err = np.asarray(res.extras["completeness_error"])
    assert np.abs(err).max() < 1e-10 * scale, np.abs(err).max() / scale
    input_part = (digits * gx).sum((1, 2, 3))
    bias_part = sum((biases[k] * g).reshape(len(t), -1).sum(1) for k, g in grads.items())
    np.testing.assert_allclose(res.extras["input_part"], input_part, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(res.extras["bias_part"], bias_part, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(input_part + bias_part, f, rtol=0, atol=1e-10 * scale)
    assert np.asarray(res.extras["input_part"])[-2] == 0  # black image: all bias
    assert np.abs(bias_part).min() > 1e-3 * scale  # the biases carry a real share
    res32 = xai.explain("fullgrad", classifier, digits.astype(np.float32), t)
    assert np.abs(np.asarray(res32.extras["completeness_error"])).max() < 1e-4 * scale
    # per-channel scaling does not blow up float32 rounding (a flipped near-tie may, rarely)
    gap32 = np.abs(np.asarray(res32.attributions) - np.asarray(res.attributions)).max((1, 2))
    assert (gap32 < 1e-4).sum() >= len(gap32) - 2, gap32


def test_c_the_map_equals_pytorch_grad_cams_post_processing_of_flax_gradients(digits, float64_run):
    """The map of real digits (predicted and other targets) and flat images, float64, equals
    pytorch-grad-cam's FullGrad written out in NumPy (per-channel scale_cam_image with a
    cv2-style resize of every channel, then summed, then scaled) on the Flax model's gradients
    at each BatchNorm's output: to 1e-10."""
    res, _, gx, grads, biases = float64_run
    maps = np.asarray(res.attributions)
    ref = grad_cam_fullgrad(digits, gx, grads, biases)
    assert np.abs(maps - ref).max() < 1e-10, np.abs(maps - ref).max()
    assert (maps.max((1, 2)) > 0.99).all() and (maps.min((1, 2)) == 0).all()
    # the check tells scaling orders apart: one min-max per layer over all its channels (as the
    # paper's own code scales) instead of one per channel gives maps far from these
    total = scale_cam_image(np.abs(gx * digits)[..., 0])
    for name, g in grads.items():
        if g.ndim == 4:
            m = np.abs(biases[name] * g)
            m = scale_cam_image(m.reshape(len(m), -1)).reshape(m.shape).sum(-1)
            total = total + np.stack([resize(a, digits.shape[1:3]) for a in m])
    assert (np.abs(scale_cam_image(total) - maps).max((1, 2)) > 0.05).all()
