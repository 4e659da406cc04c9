"""The random logit test (Sixt et al. 2020, "When Explanations Lie: Why Many Modified BP
Attributions Fail", arXiv:1912.09818): a map that explains the target class should differ from
the map of another class. Methods whose maps ignore the class (several modified backpropagation
rules converge to the same image-dependent map whatever the logit) score high here.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai.metrics._common import (
    check_inputs,
    example_keys,
    normalize_by_max,
    structural_similarity,
)
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import ExplainFn

WINDOW = 7  # SSIM's window (skimage's default, as Quantus)
COLUMN = "random_logit_ssim"


def off_targets(keys: jax.Array, targets: jax.Array, num_classes: int) -> jax.Array:
    """One class per example drawn uniformly from the ``num_classes - 1`` classes other than its
    target, from that example's key (stream ``"random_logit_class"``)."""

    def draw(k, t):
        r = jax.random.randint(
            streams.fold(k, "random_logit_class"), (), 0, num_classes - 1, dtype=jnp.int32
        )
        return ((t + 1 + r) % num_classes).astype(t.dtype)

    return jax.vmap(draw)(keys, targets)


def _similarity(a, b, win=WINDOW):
    """SSIM (Wang et al. 2004) of two (H, W) maps as ``randomization.ssim`` (skimage's
    defaults: uniform window, K1 0.01, K2 0.03, sample covariances), with the data range of
    Quantus's ``ssim``: the joint range of the two maps, which makes it scale-free."""
    span = jnp.maximum(a.max(), b.max()) - jnp.minimum(a.min(), b.min())
    return structural_similarity(a, b, jnp.where(span > 0, span, 1.0), win)


@functools.partial(jit, static_argnames=("explain_fn", "num_classes"))
def _random_logit(explain_fn, model, x, attributions, targets, keys, *, num_classes):
    off = off_targets(keys, targets, num_classes)
    other = explain_fn(model, x, off, keys)
    a = normalize_by_max(attributions.astype(jnp.float32))
    b = normalize_by_max(other.astype(jnp.float32))
    return {"ssim": jax.vmap(_similarity)(a, b), "off_targets": off}


def random_logit(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    num_classes: Optional[int] = None,
) -> dict:
    """Random logit test (Sixt et al. 2020, arXiv:1912.09818). Lower is better.

    SSIM between the map of the target (``attributions``) and the map of one random other class
    (uniform over the ``num_classes - 1`` non-targets, drawn from each example's key; never the
    target), each map divided by its own max |value|, signed; SSIM with a 7 x 7 window and the
    two maps' joint range as data range. In [-1, 1]; 1 = the map does not depend on the class.
    Two identical constant maps give 1.

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``, called once (the other classes).
      model: its first argument; x: (B, H, W, C) with H, W >= 7; attributions: (B, H, W) maps of
        ``targets`` (int (B,) in [0, num_classes)); key: one key or (B,) keys, also passed to
        ``explain_fn``. num_classes: None (default): the classifier's (``model.model.num_classes``
        of a ``Classifier``), else 10.
    Returns ``{"ssim": (B,), "off_targets": int (B,)}``.
    As Quantus 0.6's ``RandomLogit`` (SSIM, ``normalise_by_max``, no ``abs``, the joint data
    range), except: Quantus flattens the maps and runs a 1-D SSIM over the 784 values in raster
    order (windows of 7 consecutive pixels of a row); here the 2-D SSIM of the images, 7 x 7
    windows, as Sixt et al. compare images. Quantus normalises a whole batch by one max (the
    score of an image then depends on its batchmates); here each map by its own. Its off-class
    draw is from one global NumPy seed (42) per batch, here from each example's key, so
    chunking the batch changes nothing.
    """
    if num_classes is None:
        num_classes = getattr(getattr(model, "model", None), "num_classes", 10)
    check_inputs(x, attributions, targets, num_classes=_checked_classes(num_classes))
    if min(np.shape(x)[1:3]) < WINDOW:
        raise InputError(f"images must be at least {WINDOW}x{WINDOW} for SSIM, got {np.shape(x)}")
    return _random_logit(
        explain_fn,
        model,
        x,
        attributions,
        jnp.asarray(targets, jnp.int32),
        example_keys(key, np.shape(x)[0]),
        num_classes=num_classes,
    )


def _checked_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise InputError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2 (another class to draw), got {num_classes}")
    return int(num_classes)


register_metric(
    "random_logit",
    category="sanity",
    reexplains=True,
    columns={COLUMN: ("lower", "SSIM of the target's and a random class's map (Sixt 2020)")},
)(reexplaining_score(random_logit, {"ssim": COLUMN, "off_targets": "random_logit_class"}))
