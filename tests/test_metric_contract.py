"""The contract every registered leaderboard metric keeps, checked for each entry of the metric
registry: a new metric is tested here the day it is added, with no test written for it.

Each metric scores saliency maps of three real MNIST digits (whose flat background ties pixels as
user data does) the way the leaderboard calls it (``evaluate_method``'s ``Batch``): every
declared column comes back, one finite value per image, and the same on a second call (each
metric's own tests check chunking and batch-equals-per-example). The metrics that re-explain (or
prepare models in ``setup``) score the random-weight CNN; the others a small ReLU network on the
same digits, which compiles in a fraction of the CNN's time inside each metric's loops.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import data
from mnistxai.pipelines.evaluate import image_keys, method_explain_fn, score_fns
from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai import explain
from mnistxai.xai.metrics import METRICS
from mnistxai.xai.metrics.registry import CATEGORIES, Batch

NAMES = list(METRICS)
B = 3
# metrics whose per-image value is NaN by definition in some cases: no ground truth for the
# image (the empty mask given to the third digit below), or no other image in the batch to
# compare with (the batch-level definitions, made per example; focus: no digit of another
# class to build a mosaic with)
NAN_WHERE_UNDEFINED = {"consistency", "sufficiency", "focus"}


@pytest.fixture(scope="module")
def case(random_classifier, mnist_dir):
    images = data.load("mnist", "test", mnist_dir)[0][:B]
    x = jnp.asarray(data.to_model_input(images))
    res = explain("saliency", random_classifier, images)
    masks = np.zeros((B, 28, 28), bool)
    masks[0, 4:10, 4:10] = True
    masks[1, 10:20, 8:14] = True  # the third image has no ground truth: all False
    return x, res.attributions, res.targets, jnp.asarray(masks)


def _mlp_logits(z):
    k1, k2 = jax.random.split(jax.random.key(7))
    w1 = jax.random.normal(k1, (784, 32), z.dtype) / 28
    w2 = jax.random.normal(k2, (32, 10), z.dtype) / 4
    return jax.nn.relu(z.reshape(len(z), -1) @ w1) @ w2


def _mlp_probabilities(z):
    return jax.nn.softmax(_mlp_logits(z))


def uses_the_cnn(metric) -> bool:
    return metric.reexplains or metric.setup is not None


def batch_for(metric, classifier, case, chunk_size=256):
    x, maps, targets, masks = case
    keys = streams.fold(image_keys(0, 0, B), metric.name)
    if uses_the_cnn(metric):
        probabilities, logits = score_fns(classifier)
    else:
        probabilities, logits = _mlp_probabilities, _mlp_logits
    batch = Batch(x, maps, targets, keys, probabilities, logits, chunk_size, masks=masks)
    if metric.reexplains:
        explain_fn = method_explain_fn("saliency", {}, classifier, B)
        batch = dataclasses.replace(batch, explain_fn=explain_fn, classifier=classifier)
    if metric.setup is not None:
        batch = dataclasses.replace(batch, state=metric.setup(classifier, jax.random.key(1)))
    options = metric.parse({})
    if metric.shared is not None:
        batch = dataclasses.replace(batch, shared=metric.shared(batch, **options))
    return batch, options


@pytest.mark.parametrize("name", NAMES)
def test_columns_values_and_determinism(random_classifier, case, name):
    metric = METRICS[name]
    assert metric.category in CATEGORIES, (name, metric.category)
    assert metric.columns, name
    for column, (better, description) in metric.columns.items():
        assert better in ("higher", "lower")
        # every column cites its source: an author and a year, e.g. "(Samek 2017)"
        assert re.search(r"[A-Z][a-z]+.*(19|20)\d\d", description), (column, description)

    batch, options = batch_for(metric, random_classifier, case)
    values = jax.device_get(metric.fn(batch, **options))
    again = jax.device_get(metric.fn(batch, **options))
    for column in metric.columns:
        v = np.asarray(values[column])
        assert v.shape == (B,) and np.issubdtype(v.dtype, np.floating), (column, v.shape, v.dtype)
        undefined = ~np.isfinite(v)
        if metric.needs_masks:
            np.testing.assert_array_equal(undefined, [False, False, True], err_msg=column)
        elif name not in NAN_WHERE_UNDEFINED:
            assert not undefined.any(), (column, v)
        np.testing.assert_array_equal(v, np.asarray(again[column]), err_msg=column)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_checked_before_any_work(name):
    metric = METRICS[name]
    with pytest.raises(InputError, match="unknown"):
        metric.parse({"no_such_option": 1})
    for option, spec in metric.options.items():
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            with pytest.raises(InputError):
                metric.parse({option: float("nan")})
