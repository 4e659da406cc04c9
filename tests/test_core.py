"""The loops every method and metric shares: flat batches under vmap, groups of examples."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import flat_batch, over_groups


def _model(w):
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w)  # (N, 4, 3) -> (N, 2)


def test_flat_batch_under_vmap_equals_plain_vmap():
    w = jax.random.normal(jax.random.key(0), (12, 2))
    x = jax.random.normal(jax.random.key(1), (5, 6, 4, 3))  # 5 examples x 6 perturbed copies
    model = _model(w)
    expected = jax.vmap(model)(x)
    np.testing.assert_allclose(jax.vmap(flat_batch(model))(x), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(flat_batch(model)))(x), expected, rtol=1e-6)
    x2 = x.reshape(5, 2, 3, 4, 3)  # vmapped twice: both batch axes folded into one flat batch
    np.testing.assert_allclose(jax.vmap(jax.vmap(flat_batch(model)))(x2), expected.reshape(5, 2, 3, 2), rtol=1e-6)
    jaxpr = str(jax.make_jaxpr(jax.vmap(flat_batch(model)))(x))
    assert "f32[30,12]" in jaxpr and "f32[5,6,12]" not in jaxpr  # the model ran on one flat batch
    unbatched = jax.vmap(lambda _: flat_batch(model)(x[0]))(jnp.arange(3))
    np.testing.assert_allclose(unbatched, jnp.broadcast_to(expected[0], (3, 6, 2)), rtol=1e-6)


def test_flat_batch_of_a_model_with_traced_weights_falls_back_to_vmap():
    x = jax.random.normal(jax.random.key(1), (5, 6, 4, 3))
    w = jax.random.normal(jax.random.key(0), (12, 2))
    run = jax.jit(lambda w, x: jax.vmap(flat_batch(_model(w)))(x))  # w is a tracer inside
    np.testing.assert_allclose(run(w, x), jax.vmap(_model(w))(x), rtol=1e-6)


def test_over_groups_equals_one_batch_with_a_remainder_group():
    x = jnp.arange(7 * 3, dtype=jnp.float32).reshape(7, 3)
    t = jnp.arange(7)
    seen = []

    def fn(args):
        xs, ts = args
        seen.append(xs.shape[0])
        return xs.sum(1) * ts, ts + 1
    out, t1 = over_groups(fn, (x, t), 3)
    np.testing.assert_array_equal(out, x.sum(1) * t)
    np.testing.assert_array_equal(t1, t + 1)
    assert seen == [3, 1]  # full groups traced once (in lax.map), the remainder once
