"""FLOPs per image from XLA's cost analysis (``mnistxai.xai.cost``): loop bodies counted
trip-count times (against the loop-free program and closed forms), and the methods' costs in
forward passes of the random-init CNN (saliency ~2-3, IG linear in its steps, Grad-CAM below
saliency)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai.util.errors import InputError
from mnistxai.xai.cost import forward_flops, method_cost, program_cost


def _cost(fn, *args):
    return program_cost(jax.jit(fn).lower(*args).compile())


def test_loop_bodies_count_once_per_trip():
    """A matmul per row: lax.map (a while loop of 8 trips) costs what the vmapped, loop-free
    program costs, which is 8 x 2 n^3; XLA's own count has the body once."""
    x = jnp.ones((8, 16, 16))
    row = lambda r: r @ r.T
    mapped = _cost(lambda a: jax.lax.map(row, a), x)
    vmapped = _cost(jax.vmap(row), x)
    want = 8 * 2 * 16**3
    assert vmapped["loops"] == 0 and vmapped["flops"] == pytest.approx(want, rel=1e-3)
    assert mapped["loops"] == 1 and mapped["unknown_trip_loops"] == 0
    assert mapped["flops"] == pytest.approx(want, rel=1e-3)
    assert mapped["xla_flops"] == pytest.approx(want / 8, rel=0.01)
    # batched lax.map (3 rows a trip, a remainder after the loop) changes nothing
    chunked = _cost(lambda a: jax.lax.map(row, a, batch_size=3), x)
    assert chunked["flops"] == pytest.approx(want, rel=1e-3)


def test_nested_loops_multiply():
    """A scan of 5 matmuls inside a map over 4 rows: 20 matmuls."""
    x = jnp.ones((4, 12, 12))

    def inner(r):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ r), None), r, None, length=5)[0]

    got = _cost(lambda a: jax.lax.map(inner, a), x)
    assert got["loops"] == 2 and got["unknown_trip_loops"] == 0
    assert got["flops"] == pytest.approx(20 * 2 * 12**3, rel=0.05)
    assert got["transcendentals"] == pytest.approx(20 * 12 * 12, rel=1e-3)
    assert got["xla_flops"] < got["flops"] / 10


def test_a_data_dependent_trip_count_is_reported():
    def fn(x, n):
        return jax.lax.fori_loop(0, n, lambda i, c: c @ x, x)

    got = _cost(fn, jnp.ones((8, 8)), 3)
    assert got["unknown_trip_loops"] == 1
    assert got["flops"] == pytest.approx(2 * 8**3, rel=0.05)  # counted once, as XLA does


@pytest.fixture(scope="module")
def forward(random_classifier):
    return forward_flops(random_classifier, images=4)


def test_forward_flops_are_per_image_and_near_the_hand_count(random_classifier, forward):
    # XLA counts a SAME convolution's taps inside the image only: 25.8 M multiply-adds of the
    # convs (of 29.1 M with the padding) and 33 k of the dense layers, ~2 FLOPs each
    assert 2 * 25.8e6 < forward < 2 * 26.4e6
    assert forward_flops(random_classifier, images=1) == pytest.approx(forward, rel=1e-3)


def test_method_costs_in_forward_passes(random_classifier, forward):
    sal = method_cost("saliency", random_classifier, images=4)
    assert sal["forward_flops"] == pytest.approx(forward, rel=1e-6)
    assert sal["forward_equivalents"] == pytest.approx(sal["flops_per_image"] / forward)
    # a forward pass plus an input-only backward (the ~3x rule of thumb adds the weight
    # gradients, which saliency does not compute): measured 2.02
    assert 1.9 <= sal["forward_equivalents"] <= 3.1, sal
    assert sal["model_passes"] == [1.0, 0.0] and sal["unknown_trip_loops"] == 0
    ig = {
        s: method_cost("integrated_gradients", random_classifier, {"steps": s}, images=4)
        for s in (4, 16)
    }
    # one gradient per step, plus the end points' forward passes (convergence delta)
    slope = (ig[16]["flops_per_image"] - ig[4]["flops_per_image"]) / 12
    assert slope == pytest.approx(sal["flops_per_image"], rel=0.05)
    for s, c in ig.items():
        assert s <= c["flops_per_image"] / sal["flops_per_image"] <= s + 1.5, (s, c)
    gradcam = method_cost("gradcam", random_classifier, images=4)
    assert gradcam["flops_per_image"] < 0.6 * sal["flops_per_image"]
    assert 0.95 <= gradcam["forward_equivalents"] <= 1.2


def test_bad_input(random_classifier):
    with pytest.raises(InputError, match="unknown method"):
        method_cost("magic", random_classifier)
    with pytest.raises(InputError, match="images"):
        method_cost("saliency", random_classifier, images=0)
    with pytest.raises(InputError, match="targets"):
        method_cost("saliency", random_classifier, targets="labels")
    with pytest.raises(InputError, match="unknown option"):
        method_cost("saliency", random_classifier, {"stepz": 3})
    assert np.isfinite(forward_flops(random_classifier, images=2))
