"""Layer and neuron attributions (Captum's ``captum.attr`` layer and neuron families).

Unlike the methods of ``mnistxai.xai.methods`` these are not per-class maps of the input, so they
are not registered and have no place on the leaderboard:

- ``layer_attribution(kind, classifier, images, targets, layer=...)`` attributes the target logit
  to every unit of one layer's activations: (B, *activation shape), e.g. (B, 7, 7, 128) at
  ``block3``. Kinds (``LAYER_KINDS``): ``gradient_x_activation`` (Captum
  ``LayerGradientXActivation``), ``integrated_gradients`` (``LayerIntegratedGradients``),
  ``conductance`` (``LayerConductance``, Dhamdhere et al. 2018, arXiv:1805.12233).
- ``neuron_attribution(kind, classifier, images, layer=..., neuron=...)`` attributes one unit (or
  one channel's sum over space) of one layer to the input pixels: (B, 28, 28). Kinds
  (``NEURON_KINDS``): ``gradient`` (``NeuronGradient``), ``integrated_gradients``
  (``NeuronIntegratedGradients``), ``guided_backprop`` (``NeuronGuidedBackprop``).

Layers are the CNN's named layers (``mnistxai.models.spec``: conv1..conv6, dense, the aliases
block1..block3), read as ``classifier.features`` reads them: after BatchNorm and ReLU, before any
pooling; in Captum's terms the output of the layer's ReLU module (``attribute_to_layer_input`` is
not offered). ``layer="input"`` is the input itself (identity features, (B, 28, 28, 1)), where
layer IG is IG (``explain("integrated_gradients", ...)``).

Definitions and defaults follow Captum's source at commit
faac08773131888714b15709b28494ebeea7f6eb (captum/attr/_core/layer/ and _core/neuron/): 50 steps,
Gauss-Legendre nodes, a black (zero) baseline, ``multiply_by_inputs=True``. Where they differ,
the function's docstring says so. Everything is validated (``InputError``) before compiling,
computes in the images' dtype (float64 for float64 images under ``jax_enable_x64``, the
classifier cast to it) and is batched over examples (``over_examples``) with the path steps in
chunks (``sample_sum``): ``chunk_size`` bounds the images one model pass sees.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnistxai.models.classifier import Classifier
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    over_examples,
    plan,
    sample_sum,
    target_grads,
    target_or_argmax,
)
from mnistxai.xai._fast import fast_logits
from mnistxai.xai._inputs import as_images, as_key, as_targets, choice, positive_int, real
from mnistxai.xai.methods.guided_backprop import guided_relu
from mnistxai.xai.methods.integrated_gradients import (
    RULES,
    baseline_option,
    images_for_batch,
    make_baseline,
    path_rule,
)

LAYER_KINDS = ("gradient_x_activation", "integrated_gradients", "conductance")
NEURON_KINDS = ("gradient", "integrated_gradients", "guided_backprop")
INPUT = "input"
CHANNEL = "channel"


@struct.dataclass
class LayerExplanation:
    """What ``layer_attribution`` returns.

    Attributes:
      attributions: (B, *activation shape of ``layer``) in the images' dtype, signed: e.g.
        (B, 7, 7, 128) at block3, (B, 256) at dense, (B, 28, 28, 1) at ``input``.
      targets: int32 (B,), the class explained for each example.
      extras: ``convergence_delta`` (B,) = sum(attributions) - (F(x) - F(baseline)) for
        ``integrated_gradients`` and ``conductance`` (Captum's sign); empty otherwise.
      layer: the layer's canonical name (``block3`` -> ``conv6``) or ``input``.
    """

    attributions: jax.Array
    targets: jax.Array
    extras: dict = struct.field(default_factory=dict)
    layer: str = struct.field(pytree_node=False, default="")


@struct.dataclass
class NeuronExplanation:
    """What ``neuron_attribution`` returns.

    Attributes:
      attributions: (B, 28, 28) in the images' dtype, signed, the channel axis summed (MNIST has
        one channel, so it is Captum's input-shaped map squeezed).
      extras: ``activation`` (B,), the neuron's value A_n(x); for ``integrated_gradients`` also
        ``convergence_delta`` (B,) = sum(attributions) - (A_n(x) - A_n(baseline)).
      layer: the layer's canonical name or ``input``.
      neuron: the normalised selector: ``("index", (i, j, k))`` or ``("channel", k)``.
    """

    attributions: jax.Array
    extras: dict = struct.field(default_factory=dict)
    layer: str = struct.field(pytree_node=False, default="")
    neuron: tuple = struct.field(pytree_node=False, default=())


# ---- validation (NumPy, before tracing) ----


def resolve_layer(classifier: Classifier, layer: Any) -> str:
    """``input``, or the canonical name of a layer or alias of the classifier's CNN (else an
    ``InputError`` listing them)."""
    if isinstance(layer, str) and layer == INPUT:
        return INPUT
    try:
        return classifier.model.spec.resolve(layer)
    except InputError as e:
        raise InputError(f"{e}, or {INPUT!r}") from None


def activation_shape(classifier: Classifier, layer: str) -> tuple[int, ...]:
    """The activation shape of one example at ``layer`` (e.g. (7, 7, 128)), traced abstractly."""
    if layer == INPUT:
        return (28, 28, 1)
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    return tuple(jax.eval_shape(lambda z: classifier.features(z, layer), x).shape[1:])


def _index(name: str, value: Any, size: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise InputError(f"{name} must lie in [0, {size - 1}], got {value}")
    return int(value)


def as_neuron(neuron: Any, shape: tuple[int, ...], layer: str) -> tuple:
    """The selector ``("index", idx)`` or ``("channel", k)`` for ``neuron`` at a layer whose
    activations (one example) have ``shape``.

    ``neuron`` is an index tuple of ``len(shape)`` non-negative ints (``(i, j, k)`` for a conv
    layer), an int for a 1-D layer (dense: ``k`` = ``(k,)``), or ``("channel", k)``: the sum of
    channel ``k`` over all positions (at dense, unit ``k``).
    """
    where = f"layer {layer!r} with activations {shape}"
    if isinstance(neuron, (tuple, list)) and len(neuron) == 2 and isinstance(neuron[0], str):
        if neuron[0] != CHANNEL:
            raise InputError(f"neuron {neuron!r}: the only named selector is ('channel', k)")
        return (CHANNEL, _index(f"channel of {where}", neuron[1], shape[-1]))
    if isinstance(neuron, (bool, np.bool_)):
        raise InputError(f"neuron must be an integer index, not {neuron!r}")
    if isinstance(neuron, numbers.Integral):
        neuron = (neuron,)
    if isinstance(neuron, np.ndarray) and neuron.ndim == 1:
        neuron = tuple(neuron.tolist())
    if not isinstance(neuron, (tuple, list)):
        raise InputError(f"neuron must be an index tuple or ('channel', k), got {neuron!r}")
    if len(neuron) != len(shape):
        raise InputError(
            f"neuron {tuple(neuron)!r} needs {len(shape)} indices for {where}"
            + (" (or ('channel', k))" if len(shape) > 1 else "")
        )
    index = (
        _index(f"neuron index {d} for {where}", v, n) for d, (v, n) in enumerate(zip(neuron, shape))
    )
    return ("index", tuple(index))


def _check_classifier(classifier) -> None:
    if not isinstance(classifier, Classifier):
        raise InputError(
            f"classifier must be a mnistxai Classifier, got {type(classifier).__name__}"
        )


def _path_options(steps, rule, baseline, blur_sigma, key, x: np.ndarray, label: str, kind: str):
    """(steps, rule, baseline name, baseline images or None, blur_sigma, key), checked; fixed
    placeholders for a kind that takes no path, so the unused options never cause a recompile."""
    steps = positive_int(1)("steps", steps)
    rule = choice(RULES)("rule", rule)
    baseline = baseline_option("baseline", baseline)
    blur_sigma = real(0.0, open_lo=True)("blur_sigma", blur_sigma)
    if kind not in ("integrated_gradients", "conductance"):
        return 1, "left", "black", None, 1.0, None
    # conductance's nodes are steps + 1 points, IG's are steps
    if kind == "integrated_gradients" and rule == "trapezoid" and steps < 2:
        raise InputError("the trapezoid rule needs steps >= 2")
    images = None
    if not isinstance(baseline, str):
        images = jnp.asarray(images_for_batch("baseline", baseline, x.shape[0]), x.dtype)
        baseline = "images"
    key = as_key(key, label, True) if baseline == "uniform" else None
    return steps, rule, baseline, images, blur_sigma, key


# ---- the computations (traced) ----


def _views(classifier: Classifier, layer: str, guided: bool = False):
    """(features, head) of ``classifier`` at ``layer``; at ``input``, identity and the fast
    input-gradient twin of the logits (what ``explain``'s IG differentiates)."""
    if guided:
        classifier = classifier.with_activation(guided_relu)
    if layer == INPUT:
        return (lambda x: x), fast_logits(classifier)
    return (
        lambda x: classifier.features(x, layer),
        lambda a: classifier.head(a, layer),
    )


def _rule(rule: str, steps: int, dtype):
    return tuple(jnp.asarray(v, dtype) for v in path_rule(rule, steps))


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """(k,) -> (k, 1, ..., 1) against a stack ``like`` (k, ...)."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _weighted_path_grad(fn, t, start, span, alphas, weights, steps, per_pass):
    """sum_s w_s d fn[t] / d z at z = start + a_s span (one example, any shape), by chunks."""

    def chunk(idx):
        a = alphas[idx]
        points = start[None] + _bcast(a, span[None]) * span[None]
        g, _, _ = target_grads(fn, points, t)
        return jnp.tensordot(weights[idx], g, 1)

    return sample_sum(chunk, steps, per_pass)


def _baselines(x, baseline, images, blur_sigma, key):
    return make_baseline(baseline if images is None else images, x, key, blur_sigma)


def _layer_run(
    classifier,
    x,
    targets,
    images,
    key,
    *,
    kind,
    layer,
    steps,
    rule,
    baseline,
    blur_sigma,
    chunk_size,
):
    classifier = classifier.astype(x.dtype)
    features, head = _views(classifier, layer)
    per_pass = plan(x.shape[0], chunk_size)[1]

    if kind == "gradient_x_activation":

        def one(xi, t, _):
            a = features(xi[None])
            g, _, t = target_grads(head, a, t)
            return (a * g)[0], t, {}

        out = over_examples(one, x, targets, chunk_size=chunk_size)
        return LayerExplanation(out.attributions, out.targets, out.extras, layer)

    baselines = _baselines(x, baseline, images, blur_sigma, key)

    if kind == "integrated_gradients":
        alphas, weights = _rule(rule, steps, x.dtype)

        def one(xb, t, _):
            acts = features(jnp.stack(xb))
            ends = head(acts)
            t = target_or_argmax(ends[0], t)
            span = acts[0] - acts[1]
            g = _weighted_path_grad(head, t, acts[1], span, alphas, weights, steps, per_pass)
            attr = span * g
            return attr, t, {"convergence_delta": attr.sum() - (ends[0, t] - ends[1, t])}

    else:  # conductance
        alphas = _rule(rule, steps + 1, x.dtype)[0]
        # each pass runs the features on both ends of k intervals: 2k images
        half = max(1, per_pass // 2)

        def one(xb, t, _):
            xi, bi = xb
            ends = head(features(jnp.stack(xb)))
            t = target_or_argmax(ends[0], t)
            span = xi - bi

            def chunk(idx):
                a = jnp.concatenate([alphas[idx], alphas[idx + 1]])
                acts = features(bi[None] + _bcast(a, span[None]) * span[None])
                lo, hi = acts[: idx.shape[0]], acts[idx.shape[0] :]
                g, _, _ = target_grads(head, lo, t)
                return (g * (hi - lo)).sum(0)

            attr = sample_sum(chunk, steps, half)
            return attr, t, {"convergence_delta": attr.sum() - (ends[0, t] - ends[1, t])}

    out = over_examples(one, (x, baselines), targets, chunk_size=chunk_size)
    return LayerExplanation(out.attributions, out.targets, out.extras, layer)


def _select(a: jax.Array, neuron: tuple) -> jax.Array:
    """The selected neuron's value in the activations ``a`` (k, ...) of k inputs: (k,)."""
    how, where = neuron
    if how == CHANNEL:
        return a[..., where].reshape(a.shape[0], -1).sum(1)
    return a[(slice(None),) + where]


def _neuron_run(
    classifier,
    x,
    images,
    key,
    *,
    kind,
    layer,
    neuron,
    steps,
    rule,
    baseline,
    blur_sigma,
    chunk_size,
):
    classifier = classifier.astype(x.dtype)
    features, _ = _views(classifier, layer, guided=kind == "guided_backprop")
    # (k, 1) "logits" so that target_grads (target 0) gives the neuron's input gradients
    unit = lambda xs: _select(features(xs), neuron)[:, None]
    zero = jnp.zeros((), jnp.int32)

    if kind in ("gradient", "guided_backprop"):

        def one(xi, _, __):
            g, value, _ = target_grads(unit, xi[None], zero)
            return g[0].sum(-1), zero, {"activation": value[0, 0]}

        out = over_examples(one, x, None, chunk_size=chunk_size)
        return NeuronExplanation(out.attributions, out.extras, layer, neuron)

    alphas, weights = _rule(rule, steps, x.dtype)
    baselines = _baselines(x, baseline, images, blur_sigma, key)
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xb, _, __):
        xi, bi = xb
        ends = unit(jnp.stack(xb))[:, 0]
        span = xi - bi
        attr = span * _weighted_path_grad(unit, zero, bi, span, alphas, weights, steps, per_pass)
        extras = {"activation": ends[0], "convergence_delta": attr.sum() - (ends[0] - ends[1])}
        return attr.sum(-1), zero, extras

    out = over_examples(one, (x, baselines), None, chunk_size=chunk_size)
    return NeuronExplanation(out.attributions, out.extras, layer, neuron)


# float32: the project's compiler options (faster input-gradient convolutions on XLA:CPU);
# float64: plain jax.jit, whose default convolution path is the fast one there (see xai.api)
_LAYER_STATIC = ("kind", "layer", "steps", "rule", "baseline", "blur_sigma", "chunk_size")
_NEURON_STATIC = _LAYER_STATIC + ("neuron",)
_RUN_LAYER = {
    np.dtype(np.float32): jit(_layer_run, static_argnames=_LAYER_STATIC),
    np.dtype(np.float64): jax.jit(_layer_run, static_argnames=_LAYER_STATIC),
}
_RUN_NEURON = {
    np.dtype(np.float32): jit(_neuron_run, static_argnames=_NEURON_STATIC),
    np.dtype(np.float64): jax.jit(_neuron_run, static_argnames=_NEURON_STATIC),
}


# ---- the public API ----


def layer_attribution(
    kind: str,
    classifier: Classifier,
    images,
    targets=None,
    *,
    layer: str = "block3",
    steps: int = 50,
    rule: str = "gauss_legendre",
    baseline: Union[str, Any] = "black",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> LayerExplanation:
    """Attributions of each example's target logit F to the activations A of ``layer``.

    Kinds (Captum ``LayerGradientXActivation``, ``LayerIntegratedGradients``,
    ``LayerConductance``; all signed, ``multiply_by_inputs=True``):

    - ``gradient_x_activation``: A(x) * dF/dA(x). ``steps``, ``rule`` and ``baseline`` are
      ignored.
    - ``integrated_gradients``: as Captum, the path runs in the layer's *activation* space (its
      hooks replace the layer's output by the interpolated activations): (A(x) - A(b)) *
      sum_s w_s dF/dA at A(b) + a_s (A(x) - A(b)), with the head of the network after ``layer``
      as F. Points on that path are in general activations of no input. Completeness holds up
      to the quadrature: sum = head(A(x)) - head(A(b)) = F(x) - F(b). At ``input`` it is IG.
    - ``conductance`` (Dhamdhere et al. 2018, arXiv:1805.12233): the path runs in *input* space,
      x_s = b + a_s (x - b) at the ``steps + 1`` nodes a_0 < ... < a_steps of ``rule`` (Captum's
      step scheme: its rule's alphas for n_steps + 1 points, weights unused), and the attribution
      is sum_{s<steps} dF/dA(x_s) * (A(x_{s+1}) - A(x_s)), the gradient at each interval's left
      end. With the default Gauss-Legendre nodes 0 and 1 are not nodes (a_0 ~ 5e-4 at 50
      steps), so as in Captum the sum telescopes to A(x_{a_steps}) - A(x_{a_0}), not A(x) -
      A(b); ``rule="trapezoid"`` (nodes linspace(0, 1, steps + 1)) includes both ends.

    Args:
      kind: one of ``LAYER_KINDS``.
      classifier: a ``Classifier``.
      images: as ``explain`` takes them ((B, 28, 28[, 1]) uint8 or float in [0, 1]).
      targets: None (the predicted class), an int, or (B,) ints.
      layer: a layer name or alias (conv1..conv6, block1..block3, dense) or ``"input"``;
        default ``block3``.
      steps: path points (50, Captum's n_steps). rule: one of ``integrated_gradients.RULES``
        (``gauss_legendre`` default, Captum's ``gausslegendre``); quadrature from
        ``path_rule``: identical to Captum's for gauss_legendre/left/right/middle, its trapezoid
        weights sum to 1 (Captum's to (n-1)/n).
      baseline: 'black' (zeros, Captum's default baselines=None), 'white', 'blurred' (sigma
        ``blur_sigma``), 'uniform' (needs ``key``) or images (1 or B), as IG takes them.
      chunk_size: the most images one model pass sees (examples x steps).

    Returns:
      ``LayerExplanation``; extras ``convergence_delta`` (B,) for the two path kinds.
    """
    kind = choice(LAYER_KINDS)("kind", kind)
    _check_classifier(classifier)
    x = as_images(images)
    t = as_targets(targets, x.shape[0], classifier.model.num_classes)
    name = resolve_layer(classifier, layer)
    chunk_size = positive_int(1)("chunk_size", chunk_size)
    steps, rule, base, base_images, blur_sigma, key = _path_options(
        steps, rule, baseline, blur_sigma, key, x, f"layer {kind}", kind
    )
    return _RUN_LAYER[x.dtype](
        classifier,
        jnp.asarray(x),
        None if t is None else jnp.asarray(t),
        base_images,
        key,
        kind=kind,
        layer=name,
        steps=steps,
        rule=rule,
        baseline=base,
        blur_sigma=blur_sigma,
        chunk_size=chunk_size,
    )


def neuron_attribution(
    kind: str,
    classifier: Classifier,
    images,
    *,
    layer: str,
    neuron,
    steps: int = 50,
    rule: str = "gauss_legendre",
    baseline: Union[str, Any] = "black",
    blur_sigma: float = 4.0,
    key: Optional[jax.Array] = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> NeuronExplanation:
    """Input attributions (B, 28, 28) of one neuron A_n of ``layer``, signed, channels summed.

    Kinds (Captum ``NeuronGradient``, ``NeuronIntegratedGradients``, ``NeuronGuidedBackprop``):

    - ``gradient``: dA_n/dx.
    - ``integrated_gradients``: (x - b) * sum_s w_s dA_n/dx at b + a_s (x - b) (input-space path,
      ``steps``/``rule``/``baseline`` as in ``layer_attribution``); completeness: sum ~ A_n(x) -
      A_n(b). Captum returns no convergence delta for it; here extras carry one.
    - ``guided_backprop``: dA_n/dx with every ReLU a ``guided_relu`` (gradients kept only where
      both the ReLU's input and the incoming gradient are positive), including the ReLU that
      produces the layer's activations, as Captum's hooks on every ReLU module do.

    Args:
      layer: a layer name or alias, or ``"input"`` (required, no default as in Captum).
      neuron: the unit of one example's activations (``activation_shape``): an index tuple,
        ``(i, j, k)`` at a conv layer, ``(k,)`` or ``k`` at dense; or ``("channel", k)``, the sum of
        channel k over all positions (Captum's selector with slices over the spatial axes).
        Indices must lie in range (negative ones are refused, unlike torch indexing).
      steps, rule, baseline, blur_sigma, key: the path of ``integrated_gradients`` (ignored by
        the others), as in ``layer_attribution``.
      chunk_size: the most images one model pass sees.

    Returns:
      ``NeuronExplanation``: attributions (B, 28, 28); extras ``activation`` (B,) = A_n(x), and
      ``convergence_delta`` (B,) for ``integrated_gradients``.
    """
    kind = choice(NEURON_KINDS)("kind", kind)
    _check_classifier(classifier)
    x = as_images(images)
    name = resolve_layer(classifier, layer)
    selector = as_neuron(neuron, activation_shape(classifier, name), name)
    chunk_size = positive_int(1)("chunk_size", chunk_size)
    steps, rule, base, base_images, blur_sigma, key = _path_options(
        steps, rule, baseline, blur_sigma, key, x, f"neuron {kind}", kind
    )
    return _RUN_NEURON[x.dtype](
        classifier,
        jnp.asarray(x),
        base_images,
        key,
        kind=kind,
        layer=name,
        neuron=selector,
        steps=steps,
        rule=rule,
        baseline=base,
        blur_sigma=blur_sigma,
        chunk_size=chunk_size,
    )
