"""The loops every method and metric shares: packed active indices, groups of examples."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import over_active, over_groups


def test_over_active_runs_only_active_indices_in_packed_passes():
    active = jnp.array([True, False, True, True, False, False, True, True, False, True, True])
    calls = []

    def fn(idx):
        calls.append(idx.shape[0])
        return jnp.where(active[idx], 2.0 * idx + 1.0, jnp.nan)  # NaN if an inactive one leaked
    out = jax.jit(lambda a: over_active(fn, a, 3))(active)
    np.testing.assert_array_equal(out, np.where(active, 2.0 * np.arange(11) + 1.0, 0.0))
    assert calls == [3]  # traced once: a loop over passes of 3
    count = jax.jit(lambda a: over_active(lambda i: jnp.ones(i.shape[0]), a, 3).sum())
    assert float(count(active)) == 7 and float(count(jnp.zeros(11, bool))) == 0


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
