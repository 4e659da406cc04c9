"""The loops every method and metric shares: packed active indices, groups of examples."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.xai._core import over_active, over_groups


def test_over_active_runs_only_active_indices_in_packed_passes():
    passes = []

    def fn(idx, active):
        jax.debug.callback(lambda n: passes.append(int(n)), idx.shape[0])  # one call per pass
        return jnp.where(active[idx], 2.0 * idx + 1.0, jnp.nan)  # NaN if an inactive one leaked

    run = jax.jit(lambda a: over_active(lambda idx: fn(idx, a), a, 16))
    for active in (jnp.arange(40) % 3 == 0, jnp.zeros(40, bool), jnp.ones(40, bool)):
        passes.clear()
        out = run(active)
        jax.effects_barrier()
        np.testing.assert_array_equal(out, np.where(active, 2.0 * np.arange(40) + 1.0, 0.0))
        n = int(active.sum())
        # full passes of 16, then the remainder in passes of 16 // 8 = 2: the data sets the count
        assert passes == [16] * (n // 16) + [2] * -(-(n % 16) // 2), (n, passes)
    passes.clear()  # everything fits in one pass: it runs once, inactive indices masked
    one = jax.jit(lambda a: over_active(lambda idx: fn(idx, a), a, 64))(active)
    jax.effects_barrier()
    np.testing.assert_array_equal(one, 2.0 * np.arange(40) + 1.0)
    assert passes == [40]


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
