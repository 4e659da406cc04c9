"""``explain``: one entry point over every method, with validation before compilation.

A name in ``METHODS`` picks a ``Method``: the function that runs it on a ``Classifier`` and the
options it takes (default and checker each). Adding a method is adding one entry here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnistxai._jit import jit
from mnistxai.classifier import Classifier
from mnistxai.models import LAYERS, LAYER_ALIASES, resolve_layer
from mnistxai.xai import cam, gradients, paths as ig, perturbation, relevance as lrp
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation
from mnistxai.xai._fast import fast_logits
from mnistxai.xai._inputs import (as_images, as_key, as_targets, choice, flag, float_array,
                                  int_pair, positive_int, real)


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
      run: ``run(classifier, x, targets, key, **options) -> Explanation``, traced under jit.
      options: name -> (default, checker); checkers raise ValueError and normalise values.
      stochastic: whether ``key`` is required (a callable of the options when it depends on them).
      check: extra cross-option validation ``check(options, batch, classifier) -> options``.
    """

    run: Callable[..., Explanation]
    options: Mapping[str, tuple[Any, Callable]]
    stochastic: Any = False
    check: Optional[Callable] = None

    def parse(self, name: str, options: dict, batch: int, classifier) -> dict:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {name!r}; "
                             f"it takes: {', '.join(sorted(self.options))}")
        opts = {k: (options[k] if k in options else d) for k, (d, _) in self.options.items()}
        opts = {k: (v if v is None else self.options[k][1](k, v)) for k, v in opts.items()}
        return self.check(opts, batch, classifier) if self.check else opts

    def needs_key(self, opts: dict) -> bool:
        return self.stochastic(opts) if callable(self.stochastic) else self.stochastic


CHUNK = {"chunk_size": (DEFAULT_CHUNK, positive_int())}
SAMPLES = {"samples": (50, positive_int()), "noise": (0.15, real(0.0))}


def _conv_layer(name, v):
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a layer name, got {v!r}")
    if resolve_layer(v) == "dense":
        convs = [n for n in LAYERS if n != "dense"] + list(LAYER_ALIASES)
        raise ValueError(f"CAM methods need a convolutional layer, not 'dense'; choose one of "
                         f"{', '.join(convs)}")
    return v


def _images_option(name, v, batch=None):
    a = as_images(v, name)
    if batch is not None and a.shape[0] not in (1, batch):
        raise ValueError(f"{name} must hold 1 or {batch} images, got {a.shape[0]}")
    return a


def _ig_check(opts, batch, _):
    b = opts["baseline"]
    if isinstance(b, str):
        choice(ig.BASELINES)("baseline", b)
    else:
        opts["baseline"] = _images_option("baseline", b, batch)
    if opts["rule"] == "trapezoid" and opts["steps"] < 2:
        raise ValueError("the trapezoid rule needs steps >= 2")
    return opts


def _eg_check(opts, batch, _):
    if opts["background"] is None:
        raise ValueError("expected_gradients needs background=(N, 28, 28[, 1]) images to draw "
                         "baselines from (e.g. a few hundred training images)")
    opts["background"] = _images_option("background", opts["background"])
    if opts["alphas"] is not None and opts["alphas"].shape != (opts["samples"],):
        raise ValueError(f"alphas must have shape ({opts['samples']},), got {opts['alphas'].shape}")
    return opts


def _lrp_check(opts, _, classifier):
    if opts["beta"] < 0 or abs(opts["alpha"] - opts["beta"] - 1.0) > 1e-6:
        raise ValueError(f"alpha_beta needs alpha - beta = 1 and beta >= 0, got "
                         f"alpha={opts['alpha']}, beta={opts['beta']}")
    if opts["low"] >= opts["high"]:
        raise ValueError(f"lrp needs low < high, got {opts['low']}, {opts['high']}")
    if classifier.model.activation is not nn.relu:
        raise ValueError("lrp's rules assume ReLU activations; this classifier uses "
                         f"{getattr(classifier.model.activation, '__name__', 'another')}")
    return opts


def _on_logits(fn, with_key=False, forward_only=False):
    # fast_logits == clf.logits up to rounding, with a faster input gradient (see _fast); methods
    # that never differentiate run the Flax model, whose forward pass is ~10% faster
    def run(clf, x, t, key, **o):
        logits = clf.logits if forward_only else fast_logits(clf)
        return fn(logits, x, t, **({"key": key} if with_key else {}), **o)
    return run


def _guided(clf):
    return fast_logits(clf.with_activation(gradients.guided_relu))


def _on_layer(fn, guided=False):
    def run(clf, x, t, key, layer, **o):
        fns = (functools.partial(clf.features, layer=layer), functools.partial(clf.head, layer=layer))
        return fn(*fns, *((_guided(clf),) if guided else ()), x, t, **o)
    return run


_CAM = {"layer": ("block3", _conv_layer), **CHUNK}

METHODS: Mapping[str, Method] = {
    "saliency": Method(_on_logits(gradients.saliency), {"signed": (False, flag), **CHUNK}),
    "grad_x_input": Method(_on_logits(gradients.grad_x_input), CHUNK),
    "smoothgrad": Method(_on_logits(gradients.smoothgrad, True),
                         {**SAMPLES, "signed": (False, flag), **CHUNK}, stochastic=True),
    "smoothgrad_sq": Method(_on_logits(gradients.smoothgrad_sq, True), {**SAMPLES, **CHUNK},
                            stochastic=True),
    "vargrad": Method(_on_logits(gradients.vargrad, True), {**SAMPLES, **CHUNK}, stochastic=True),
    "integrated_gradients": Method(
        _on_logits(ig.integrated_gradients, True),
        {"baseline": ("black", lambda k, v: v), "steps": (50, positive_int()),
         "rule": ("gauss_legendre", choice(ig.RULES)), "blur_sigma": (4.0, real(0.0, open_lo=True)),
         **CHUNK},
        stochastic=lambda o: isinstance(o["baseline"], str) and o["baseline"] == "uniform",
        check=_ig_check),
    "expected_gradients": Method(
        _on_logits(ig.expected_gradients, True),
        {"background": (None, lambda k, v: v), "samples": (50, positive_int()),
         "noise": (0.0, real(0.0)), "alphas": (None, float_array), **CHUNK},
        stochastic=True, check=_eg_check),
    "guided_backprop": Method(lambda clf, x, t, key, **o: gradients.guided_backprop(
        _guided(clf), x, t, **o), CHUNK),
    "gradcam": Method(_on_layer(cam.gradcam), _CAM),
    "gradcam_pp": Method(_on_layer(cam.gradcam_pp), _CAM),
    "layercam": Method(_on_layer(cam.layercam), _CAM),
    "scorecam": Method(_on_layer(cam.scorecam), _CAM),
    "guided_gradcam": Method(_on_layer(cam.guided_gradcam, guided=True), _CAM),
    "occlusion": Method(_on_logits(perturbation.occlusion, forward_only=True),
                        {"window": ((4, 4), int_pair(28)), "stride": ((2, 2), int_pair(28)),
                         "baseline": (0.0, real(0.0, 1.0)), **CHUNK}),
    "rise": Method(_on_logits(perturbation.rise, True, forward_only=True),
                   {"masks": (1000, positive_int()), "cells": (7, positive_int(1, 28)),
                    "p": (0.5, real(0.0, 1.0, open_lo=True)), **CHUNK}, stochastic=True),
    "lrp": Method(lambda clf, x, t, key, **o: lrp.lrp(lrp.classifier_layers(clf), x, t, **o),
                  {"rule": ("epsilon", choice(lrp.RULES)), "epsilon": (1e-6, real(0.0)),
                   "alpha": (1.0, real(0.0)), "beta": (0.0, real()), "gamma": (0.25, real(0.0)),
                   "input_rule": ("zb", choice(lrp.INPUT_RULES)), "low": (0.0, real()),
                   "high": (1.0, real()), **CHUNK}, check=_lrp_check),
}


def _run_method(classifier, x, targets, key, arrays, *, method, static):
    # everything computes in the images' dtype (float64 when checking to 1e-10)
    return METHODS[method].run(classifier.astype(x.dtype), x, targets, key, **dict(static),
                               **arrays)


# Most methods are dominated by input-gradient convolutions, which the project's jit options speed
# up ~1.6x on XLA:CPU in float32 (see mnistxai._jit). These CAMs are a forward pass plus a backward
# through the head only, which XLA's default convolutions run faster (Grad-CAM, batch 1024 on the
# 2-core CI machine: 2,860 vs 2,490 images/s), so they compile with the defaults. So does float64,
# where XLA's own convolutions are ~10x slower than the default path (saliency of 35 digits: 1.76
# vs 0.15 s; IG-8: 11.6 vs 1.3 s).
_DEFAULT_COMPILE = ("gradcam", "gradcam_pp", "layercam")
_run = functools.partial(jit, static_argnames=("method", "static"))(_run_method)
_run_default_compile = functools.partial(jax.jit, static_argnames=("method", "static"))(_run_method)


def _project_compile(method: str, dtype) -> bool:
    return method not in _DEFAULT_COMPILE and dtype == np.float32


def explain(method: str, classifier: Classifier, images, targets=None, *, key=None,
            **options) -> Explanation:
    """Attributions of ``method`` for ``classifier`` on ``images``: an ``Explanation``.

    Args:
      method: a name in ``METHODS``.
      classifier: a ``mnistxai.classifier.Classifier`` (for other models use the functions of
        ``gradients``, ``cam``, ... directly).
      images: (28, 28), (28, 28, 1), (B, 28, 28) or (B, 28, 28, 1); uint8 0-255 or float in [0, 1].
      targets: None (the predicted class), an int for all, or (B,) ints in [0, num_classes).
      key: a ``jax.random.key``; required by the stochastic methods (smoothgrad, smoothgrad_sq,
        vargrad, expected_gradients, rise, integrated_gradients with baseline='uniform'), which
        never pick a seed silently; ignored by the others.
      **options: the method's options (``METHODS[method].options`` lists them with defaults).

    Returns:
      ``Explanation(attributions (B, 28, 28), targets int32 (B,), extras)``, float32, or float64
      for float64 images with ``jax_enable_x64`` on (the classifier's weights are then cast to
      float64 for the call). Everything is validated (ValueError) before compiling; one
      compilation per method, dtype, shapes and static options.

    Gradient methods on logits run on ``_fast.fast_logits(classifier)`` (BatchNorm folded,
    hand-written input VJPs), equal to ``classifier.logits`` up to float rounding; occlusion and
    RISE on ``classifier.logits``; CAMs use
    ``classifier.features``/``head`` at ``layer``; LRP uses ``relevance.classifier_layers``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a mnistxai Classifier, got {type(classifier).__name__}")
    spec = METHODS[method]
    x = as_images(images)
    t = as_targets(targets, x.shape[0], classifier.model.num_classes)
    opts = spec.parse(method, options, x.shape[0], classifier)
    key = as_key(key, method, spec.needs_key(opts))
    arrays = {k: jnp.asarray(v, x.dtype) for k, v in opts.items() if isinstance(v, np.ndarray)}
    static = tuple(sorted((k, v) for k, v in opts.items() if k not in arrays))
    run = _run if _project_compile(method, x.dtype) else _run_default_compile
    return run(classifier, jnp.asarray(x), None if t is None else jnp.asarray(t), key, arrays,
               method=method, static=static)


def _noise_tunnel_method(classifier, x, targets, key, *, kinds, static):
    return gradients.noise_tunnel(fast_logits(classifier.astype(x.dtype)), x, targets, key=key,
                                  kinds=kinds, **dict(static))


_run_noise_tunnel = {
    compiler: functools.partial(compiler, static_argnames=("kinds", "static"))(
        _noise_tunnel_method) for compiler in (jit, jax.jit)}


def explain_noise_tunnel(kinds, classifier: Classifier, images, targets=None, *, key=None,
                         **options) -> dict[str, Explanation]:
    """Several of smoothgrad, smoothgrad_sq and vargrad (``kinds``) from one set of noisy gradients:
    {kind: Explanation}, each equal to ``explain(kind, ..., key=key, **options)`` at the cost of
    one (``gradients.noise_tunnel``). Options as smoothgrad's (``signed`` affects smoothgrad only)."""
    kinds = gradients.check_kinds(kinds)
    if "signed" in options and "smoothgrad" not in kinds:
        raise ValueError("signed is an option of smoothgrad only, which is not among the kinds")
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a mnistxai Classifier, got {type(classifier).__name__}")
    x = as_images(images)
    t = as_targets(targets, x.shape[0], classifier.model.num_classes)
    label = "+".join(kinds)  # names the methods in the option errors
    opts = METHODS["smoothgrad"].parse(label, options, x.shape[0], classifier)
    key = as_key(key, label, True)
    run = _run_noise_tunnel[jit if _project_compile("smoothgrad", x.dtype) else jax.jit]
    out = run(classifier, jnp.asarray(x), None if t is None else jnp.asarray(t), key, kinds=kinds,
              static=tuple(sorted(opts.items())))
    return {kind: out[kind] for kind in kinds}  # jit returns dicts in sorted key order


def parse_methods(text: str | None) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` checked against ``METHODS``; None or ``"all"`` -> every method."""
    if text is None or text == "all":
        return tuple(METHODS)
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METHODS)}")
    return names
