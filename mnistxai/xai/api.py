"""``explain``: one entry point over every registered method, with validation before compilation.

Names resolve through the registry (``mnistxai.xai.registry``); this module names no method.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.models.classifier import Classifier
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai import registry
from mnistxai.xai._core import Explanation
from mnistxai.xai._inputs import as_images, as_key, as_targets
from mnistxai.xai.registry import METHODS, Method


def _run_method(classifier, x, targets, key, arrays, *, method, static):
    # everything computes in the images' dtype (float64 when checking to 1e-10)
    return METHODS[method].call(
        classifier.astype(x.dtype), x, targets, key, {**dict(static), **arrays}
    )


def _run_group(classifier, x, targets, key, arrays, *, members, static):
    spec = METHODS[members[0]]
    fns, opts = registry.MODELS[spec.model].build(
        classifier.astype(x.dtype), {**dict(static), **arrays}
    )
    return spec.group.run(*fns, x, targets, key=key, kinds=members, **opts)


# "project": mnistxai.util.jit, whose XLA:CPU convolutions run the input-gradient methods ~1.6x
# faster in float32; "default": plain jax.jit, faster for the CAMs that only run a forward pass
# (Method.compile) and for float64, where XLA's own convolutions are ~10x slower than the
# default path (saliency of 35 digits: 1.76 vs 0.15 s; IG-8: 11.6 vs 1.3 s).
_COMPILERS = {"project": jit, "default": jax.jit}
_RUN = {
    kind: compiler(_run_method, static_argnames=("method", "static"))
    for kind, compiler in _COMPILERS.items()
}
_RUN_GROUP = {
    kind: compiler(_run_group, static_argnames=("members", "static"))
    for kind, compiler in _COMPILERS.items()
}


def _compile_kind(spec: Method, dtype) -> str:
    return spec.compile if dtype == np.float32 else "default"


def _prepare(spec: Method, label: str, classifier, images, targets, key, options):
    """Everything checked in NumPy before tracing: (x, targets, key, arrays, static)."""
    if not isinstance(classifier, Classifier):
        raise InputError(
            f"classifier must be a mnistxai Classifier, got {type(classifier).__name__}"
        )
    x = as_images(images)
    t = as_targets(targets, x.shape[0], classifier.model.num_classes)
    opts = spec.parse(options, x.shape[0], classifier, label)
    key = as_key(key, label, spec.needs_key(opts))
    # arrays are traced (new values, no recompile); everything else is static
    arrays = {k: jnp.asarray(v, x.dtype) for k, v in opts.items() if isinstance(v, np.ndarray)}
    static = tuple(sorted((k, v) for k, v in opts.items() if k not in arrays))
    return jnp.asarray(x), None if t is None else jnp.asarray(t), key, arrays, static


def explain(
    method: str, classifier: Classifier, images, targets=None, *, key=None, **options
) -> Explanation:
    """Attributions of ``method`` for ``classifier`` on ``images``: an ``Explanation``.

    Args:
      method: a name in ``METHODS``.
      classifier: a ``mnistxai.models.classifier.Classifier`` (for other models call the
        method's function directly: ``METHODS[method].fn``).
      images: (28, 28), (28, 28, 1), (B, 28, 28) or (B, 28, 28, 1); uint8 0-255 or float in [0, 1].
      targets: None (the predicted class), an int for all, or (B,) ints in [0, num_classes).
      key: a ``jax.random.key``; required by the stochastic methods (``METHODS[m].needs_key``),
        which never pick a seed silently; ignored by the others.
      **options: the method's options (``METHODS[method].options`` lists them with defaults).

    Returns:
      ``Explanation(attributions (B, 28, 28), targets int32 (B,), extras)``, float32, or float64
      for float64 images with ``jax_enable_x64`` on (the classifier's weights are then cast to
      float64 for the call). Everything is validated (``InputError``) before compiling; one
      compilation per method, dtype, shapes and static options.
    """
    spec = registry.get(method)
    x, t, key, arrays, static = _prepare(spec, method, classifier, images, targets, key, options)
    run = _RUN[_compile_kind(spec, x.dtype)]
    return run(classifier, x, t, key, arrays, method=method, static=static)


def explain_together(
    methods: Sequence[str], classifier: Classifier, images, targets=None, *, key=None, **options
) -> dict[str, Explanation]:
    """Several methods of one ``registry.Group`` from one shared computation: {method:
    Explanation}, each equal to ``explain(method, ..., key=key, **options)`` at the cost of one
    (e.g. smoothgrad, smoothgrad_sq and vargrad from one set of noisy gradients). Options are
    the members' common ones plus the group's private ones of the members that take them."""
    methods = tuple(methods)
    if not methods:
        raise InputError("explain_together needs at least one method")
    specs = [registry.get(m) for m in methods]
    group = specs[0].group
    if (
        group is None
        or any(s.group is not group for s in specs)
        or len(set(methods)) != len(methods)
    ):
        raise InputError(
            f"methods {', '.join(map(str, methods))} cannot be computed together: "
            f"they must be distinct members of one group"
        )
    for name in group.private:
        if name in options and not any(name in s.options for s in specs):
            raise InputError(f"{name} is not an option of any of {', '.join(methods)}")
    taker = next(
        (s for s in specs if all(p in s.options for p in group.private if p in options)), specs[0]
    )
    label = "+".join(methods)
    x, t, key, arrays, static = _prepare(taker, label, classifier, images, targets, key, options)
    run = _RUN_GROUP[_compile_kind(taker, x.dtype)]
    out = run(classifier, x, t, key, arrays, members=methods, static=static)
    return {m: out[m] for m in methods}  # jit returns dicts in sorted key order


def parse_methods(text: Optional[str]) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` checked against ``METHODS``; None or ``"all"`` -> every
    method."""
    if text is None or text == "all":
        return tuple(METHODS)
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InputError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METHODS)}"
        )
    return names
