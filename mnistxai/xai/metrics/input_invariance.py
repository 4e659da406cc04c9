"""Input invariance (Kindermans et al. 2017, "The (Un)reliability of Saliency Methods",
arXiv:1711.00867): shift every input by a constant and give the model a first layer whose bias
undoes the shift, so that the shifted model on the shifted input computes exactly what the
original model computes on the original input. An explanation of the model should not change;
gradients do not, grad x input and IG from a black baseline do.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN
from mnistxai.models.spec import Layer, Spec
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import check_inputs, example_keys
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import ExplainFn

SHIFT_LAYER = "input_shift"


class ShiftedCNN(CNN):
    """The CNN behind a pointwise affine layer ``input_shift`` (a ``dense`` layer on the channel
    axis of every pixel, ``channels`` -> ``channels``): with kernel I and bias -m it computes
    CNN(x - m), so the first conv sees exactly the original image, its zero padding included.
    Every view of the model (the Flax module, the split at a layer, the folded layers of the fast
    twin and of LRP) derives from ``spec``, so every method sees the extra layer."""

    channels: int = 1

    @property
    def spec(self) -> Spec:
        base = super().spec
        return Spec((Layer("dense", SHIFT_LAYER, self.channels),) + base.layers)


def shifted_classifier(classifier, shift: float = -1.0) -> Classifier:
    """A classifier g with g(x + shift) == classifier(x) for every x (up to float rounding):
    ``classifier``'s CNN behind an identity layer whose bias is -``shift`` (for a ``ShiftedCNN``,
    its shift layer's bias lowered by ``shift``). An ``InputError`` for any other model."""
    if not isinstance(classifier, Classifier) or type(classifier.model) not in (CNN, ShiftedCNN):
        model = getattr(classifier, "model", classifier)
        raise InputError(
            f"input invariance needs a mnistxai Classifier of the CNN to shift its first layer, "
            f"got {type(classifier).__name__} of {type(model).__name__}; pass shifted_model="
        )
    if isinstance(shift, bool) or not np.isfinite(shift):
        raise InputError(f"shift must be a finite number, got {shift!r}")
    params = dict(classifier.variables["params"])
    if type(classifier.model) is ShiftedCNN:
        layer = params[SHIFT_LAYER]
        bias = layer["bias"] - jnp.asarray(shift, layer["bias"].dtype)
        params[SHIFT_LAYER] = {**layer, "bias": bias}
        return classifier.replace(variables={**classifier.variables, "params": params})
    kernel = params[classifier.model.spec.convs[0]]["kernel"]
    channels, dtype = kernel.shape[2], kernel.dtype
    fields = {
        f.name: getattr(classifier.model, f.name)
        for f in dataclasses.fields(classifier.model)
        if f.init and f.name not in ("parent", "name")
    }
    model = ShiftedCNN(**fields, channels=channels)
    params = {
        SHIFT_LAYER: {
            "kernel": jnp.eye(channels, dtype=dtype),
            "bias": jnp.full((channels,), -shift, dtype),
        },
        **params,
    }
    return classifier.replace(variables={**classifier.variables, "params": params}, model=model)


@functools.partial(jit, static_argnames=("explain_fn", "reexplain"))
def _input_invariance(
    explain_fn, model, shifted_model, x, attributions, targets, keys, shift, tol, *, reexplain
):
    dtype = jnp.result_type(x.dtype, jnp.float32)
    if reexplain:
        attributions = explain_fn(model, x, targets, keys)
    a = attributions.astype(dtype)
    b = explain_fn(shifted_model, x + jnp.asarray(shift, x.dtype), targets, keys).astype(dtype)
    scale = jnp.abs(a).max((1, 2), keepdims=True)
    unchanged = (jnp.abs(b - a) <= tol * scale).mean((1, 2))
    change = jnp.sqrt(((b - a) ** 2).sum((1, 2)))
    norm = jnp.sqrt((a * a).sum((1, 2)))
    relative = jnp.where(
        norm > 0, change / jnp.where(norm > 0, norm, 1.0), jnp.where(change > 0, jnp.inf, 0.0)
    )
    return {
        "unchanged": unchanged,
        "invariant": (unchanged == 1).astype(dtype),
        "relative_l2": relative,
        "shifted_maps": b,
    }


def input_invariance(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    shift: float = -1.0,
    tol: float = 1e-4,
    shifted_model=None,
) -> dict:
    """Input invariance (Kindermans et al. 2017, arXiv:1711.00867). Higher ``unchanged`` is
    better.

    The map of ``shifted_model`` (default ``shifted_classifier(model, shift)``: model(x) ==
    shifted_model(x + shift)) on x + ``shift`` against ``attributions``, the map of ``model``
    on x. ``unchanged``: the fraction of pixels whose attribution moved by at most ``tol`` x the
    map's max |value|, in [0, 1]; ``invariant``: 1.0 when every pixel is unchanged, else 0.0;
    ``relative_l2``: ||e' - e|| / ||e||, lower is better (0 when both are 0, inf when only e
    is).

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``, called once (for the shifted
        model), or twice when ``attributions`` is None (the original maps too, same keys).
      model: the original model; x: (B, H, W, C); attributions: (B, H, W) or None;
      targets: int (B,), kept fixed; key: one key or (B,) keys for ``explain_fn``.
      shift: added to every input value (Quantus's ``input_shift`` default -1: MNIST's [0, 1]
        becomes [-1, 0]); shifted_model: for models other than the project's CNN.
    Returns ``{"unchanged", "invariant", "relative_l2": (B,), "shifted_maps": (B, H, W)}``.
    A stochastic method's maps change with its noise: pass ``attributions=None`` so both maps
    use the same keys (the leaderboard passes the run's maps, as Quantus passes ``a_batch``).

    Departures from Quantus 0.6's ``InputInvariance`` (shift -1, raw signed maps, a bool per
    image: ``np.isclose(a, a', atol=1e-4)`` at every pixel): Quantus sets the first layer's bias
    to b - W m, which is exact only where the layer sees no padding; the project's CNN starts
    with a bias-free, zero-padded 3x3 conv, whose border outputs cannot absorb the shift (on the
    random CNN that leaves the logits 0.007 off and moves saliency maps by 94% in L2). Here an
    identity layer with bias -m is put in front instead, exact everywhere (logits equal to
    ~1e-8); methods that read the layers (LRP, DeepLIFT, FullGrad) see that bias as they would
    see Quantus's. Tolerance relative to each map's max |value| (Quantus's absolute 1e-4 calls
    maps of small units invariant whatever they do), and the fraction of unchanged pixels
    alongside Quantus's all-or-nothing bool (``invariant``).
    """
    check_inputs(x, attributions, targets)
    if isinstance(tol, bool) or not np.isfinite(tol) or tol < 0:
        raise InputError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(shift, bool) or not np.isfinite(shift):
        raise InputError(f"shift must be a finite number, got {shift!r}")
    if shifted_model is None:
        shifted_model = shifted_classifier(model, shift)
    b = np.shape(x)[0]
    return _input_invariance(
        explain_fn,
        model,
        shifted_model,
        x,
        jnp.zeros(np.shape(x)[:3], jnp.float32) if attributions is None else attributions,
        jnp.asarray(targets, jnp.int32),
        example_keys(key, b),
        float(shift),
        float(tol),
        reexplain=attributions is None,
    )


register_metric(
    "input_invariance",
    category="axiomatic",
    reexplains=True,
    options_of=input_invariance,
    options=("shift", "tol"),
    checks={"tol": real(0.0)},
    columns={
        "input_invariance": (
            "higher",
            "Fraction of pixels unchanged, input shifted by -1 (Kindermans 2017)",
        ),
        "input_invariance_l2": (
            "lower",
            "Relative L2 change of the map, input shifted by -1 (Kindermans 2017)",
        ),
    },
)(
    reexplaining_score(
        input_invariance,
        {
            "unchanged": "input_invariance",
            "relative_l2": "input_invariance_l2",
            "invariant": "input_invariance_exact",
        },
    )
)
