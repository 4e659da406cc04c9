"""Occlusion and RISE against naive Python loops."""

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import xai
from mnistxai.xai.methods.rise import rise_masks
from test_xai_tiny import tiny_fns, tiny_images, tiny_params


def naive_occlusion(logits_fn, x, t, window, stride, baseline):
    _, h, w, _ = x.shape
    total, count = np.zeros((h, w)), np.zeros((h, w))
    full = float(logits_fn(x)[0, t])
    for i in range(0, h - window[0] + 1, stride[0]):
        for j in range(0, w - window[1] + 1, stride[1]):
            occluded = x.at[:, i : i + window[0], j : j + window[1]].set(baseline)
            total[i : i + window[0], j : j + window[1]] += full - float(logits_fn(occluded)[0, t])
            count[i : i + window[0], j : j + window[1]] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def test_occlusion_equals_naive_window_loop():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(3)
    occ = jax.jit(
        lambda x, chunk: xai.occlusion(
            logits_fn, x, window=(2, 2), stride=(2, 3), chunk_size=chunk
        ),
        static_argnums=1,
    )
    res = occ(x, 5)  # 5 windows a pass: a ragged last pass
    for b in range(3):
        t = int(res.targets[b])
        np.testing.assert_allclose(
            res.attributions[b],
            naive_occlusion(logits_fn, x[b : b + 1], t, (2, 2), (2, 3), 0.0),
            rtol=1e-4,
            atol=1e-6,
        )
    # windows wholly on the black border were skipped, exactly
    np.testing.assert_array_equal(res.extras["evaluated"], 12 - 3)
    np.testing.assert_allclose(occ(x, 256).attributions, res.attributions, rtol=1e-5, atol=1e-7)
    grey = xai.occlusion(
        logits_fn, x[:1], res.targets[:1], window=(2, 2), stride=(2, 3), baseline=0.5
    )
    np.testing.assert_allclose(
        grey.attributions[0],
        naive_occlusion(logits_fn, x[:1], int(res.targets[0]), (2, 2), (2, 3), 0.5),
        rtol=1e-4,
        atol=1e-6,
    )


def test_rise_equals_naive_mask_loop():
    logits_fn = tiny_fns(tiny_params())[0]
    x = tiny_images(2)
    key = jax.random.key(7)
    n = 10
    res = jax.jit(lambda x: xai.rise(logits_fn, x, key=key, masks=n, cells=3, p=0.4, chunk_size=8))(
        x
    )
    masks = jax.jit(rise_masks, static_argnums=(2, 3, 4))(key, jnp.arange(n), (8, 8), 3, 0.4)
    probs = jax.jit(
        lambda xb: jax.nn.softmax(logits_fn(xb * masks[..., None]))[:, res.targets]
    )  # (n, 2): every mask on one image at a time; the loop below reads it
    assert masks.shape == (n, 8, 8) and float(masks.min()) >= 0 and float(masks.max()) <= 1
    for b in range(2):
        p = probs(x[b : b + 1])
        expected = sum(p[i, b] * masks[i] for i in range(n)) / (n * 0.4)
        np.testing.assert_allclose(res.attributions[b], expected, rtol=1e-5, atol=1e-7)
