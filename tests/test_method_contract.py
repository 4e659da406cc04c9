"""The contract every registered method keeps, checked for each entry of the registry: a new
method is tested here the day it is added, with no test written for it.

Each method runs with its registered ``smoke`` options (its lightest settings) on real MNIST
digits, whose flat background ties activations as user data does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import data
from mnistxai.xai import METHODS, api, explain

NAMES = list(METHODS)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return data.load("mnist", "test", mnist_dir)[0][:3]


def options_for(name, images):
    spec = METHODS[name]
    options = dict(spec.smoke)
    if spec.background:
        options["background"] = images[:2]
    return options


def compiled():
    return sum(run._cache_size() for run in api._RUN.values())


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_batch_chunking_keys_and_no_retrace(random_classifier, digits, name):
    spec = METHODS[name]
    options = options_for(name, digits)
    key = jax.random.key(3)
    res = explain(name, random_classifier, digits, key=key, **options)
    maps = np.asarray(res.attributions)
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32, name
    assert res.targets.shape == (3,) and res.targets.dtype == jnp.int32
    assert np.isfinite(maps).all(), name
    for k, v in res.extras.items():
        assert np.shape(v)[0] == 3 and np.isfinite(np.asarray(v)).all(), (name, k)
    np.testing.assert_array_equal(
        res.targets, jnp.argmax(random_classifier.logits(data.to_model_input(digits)), -1)
    )
    scale = float(np.abs(maps).max()) or 1.0

    # batch equals per example (a stochastic method: example i's draws come from split(key)[i])
    if not spec.needs_key(spec.parse(options, 3, random_classifier)):
        for i in range(3):
            one = explain(name, random_classifier, digits[i], key=key, **options)
            np.testing.assert_allclose(
                one.attributions[0],
                maps[i],
                rtol=1e-4,
                atol=1e-5 * scale,
                err_msg=f"{name}: example {i} alone",
            )
    # the chunk size bounds memory and changes nothing else
    small = explain(name, random_classifier, digits, key=key, **options, chunk_size=2)
    np.testing.assert_allclose(
        small.attributions, maps, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name}: chunk_size=2"
    )
    # the same key gives the same maps, and new weights of the same shapes reuse the program
    before = compiled()
    again = explain(name, random_classifier, digits, key=key, **options)
    np.testing.assert_array_equal(again.attributions, maps)
    heavier = random_classifier.replace(
        variables=jax.tree_util.tree_map(lambda v: v * 1.01, random_classifier.variables)
    )
    explain(name, heavier, digits, key=key, **options)
    assert compiled() == before, f"{name} recompiled for a second call"
    if spec.needs_key(spec.parse(options, 3, random_classifier)):
        other = explain(name, random_classifier, digits, key=jax.random.key(4), **options)
        assert not np.allclose(other.attributions, maps), f"{name} ignores its key"
        with pytest.raises(ValueError, match="stochastic"):
            explain(name, random_classifier, digits, **options)


BAD_INPUTS = [
    (dict(images=np.zeros((2, 27, 28), np.uint8)), "shape"),
    (dict(images=np.full((1, 28, 28), np.nan, np.float32)), "NaN"),
    (dict(images=np.full((1, 28, 28), 2.0, np.float32)), r"\[0, 1\]"),
    (dict(targets=10), "targets"),
    (dict(targets=[0, 1]), "shape"),
    (dict(options={"no_such_option": 1}), "unknown option"),
    (dict(options={"chunk_size": 0}), "chunk_size"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad, match", BAD_INPUTS)
def test_bad_input_is_a_value_error_before_compiling(random_classifier, digits, name, bad, match):
    images = bad.get("images", digits[:1])
    options = {**options_for(name, digits), **bad.get("options", {})}
    before = compiled()
    with pytest.raises(ValueError, match=match):
        explain(
            name, random_classifier, images, bad.get("targets"), key=jax.random.key(0), **options
        )
    assert compiled() == before


@pytest.mark.parametrize("name", NAMES)
def test_float64_in_float64_out_when_x64_is_on(random_classifier, digits, name):
    """float64 images in, float64 maps out (weights cast to float64 for the call), close to the
    float32 maps of the same images where no random draw is involved."""
    spec = METHODS[name]
    images = digits.astype(np.float64) / 255
    options = options_for(name, images)
    key = jax.random.key(1)
    with jax.enable_x64(True):
        res = explain(name, random_classifier, images, key=key, **options)
        assert res.attributions.dtype == jnp.float64
        assert all(v.dtype != jnp.float32 for v in res.extras.values())
        maps64 = np.asarray(res.attributions)
        assert np.isfinite(maps64).all()
    if spec.needs_key(spec.parse(options, 3, random_classifier)):
        return  # random draws depend on their dtype: float64 noise is other noise
    maps32 = np.asarray(
        explain(name, random_classifier, images.astype(np.float32), key=key, **options).attributions
    )
    np.testing.assert_allclose(maps32, maps64, atol=1e-3 * np.abs(maps64).max())


def test_every_method_documents_itself_and_its_cost():
    for name, spec in METHODS.items():
        assert spec.cost({}) in ("cheap", "costly", "heavy"), name  # defaults fill the rest
        assert spec.summary and spec.paper, name
        assert spec.fn.__doc__ and len(spec.fn.__doc__.splitlines()) >= 1, name
        assert all(
            opt in (spec.fn.__doc__ or "") or opt in ("chunk_size", "layer") for opt in spec.options
        ), (name, list(spec.options))


def test_the_leaderboard_sizes_every_methods_robustness_subset_from_its_cost():
    from mnistxai.pipelines.evaluate import EvalConfig, robustness_images

    config = EvalConfig(
        robustness_images=32, costly_robustness_images=16, heavy_robustness_images=8
    )
    sizes = {name: robustness_images(config, name, {}) for name in NAMES}
    assert sizes["saliency"] == 32 and sizes["integrated_gradients"] == 16 and sizes["rise"] == 8
    assert robustness_images(config, "integrated_gradients", {"steps": 8}) == 32
