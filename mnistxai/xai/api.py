"""``explain``: one entry point over every registered method, with validation before compilation.

Names resolve through the registry (``mnistxai.xai.registry``); this module names no method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import parallel
from mnistxai.models.classifier import Classifier
from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai import registry
from mnistxai.xai._core import Explanation
from mnistxai.xai._inputs import as_images, as_key, as_targets
from mnistxai.xai.registry import METHODS, Method


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A contrastive target for ``explain``: explain logit ``a`` minus logit ``b`` ("why an
    ``a`` and not a ``b``"). ``a`` and ``b`` are class indices: ints, or (B,) int arrays (one
    pair per image). ``Contrast(4, 9)`` for a batch of 4s asks what makes them 4s rather than 9s.
    """

    a: Any
    b: Any


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
    mesh = parallel.batch_mesh(x)
    if mesh is not None and "chunk_size" in spec.options:  # chunk_size counts per device
        option = spec.options["chunk_size"]
        chunk = option.parse("chunk_size", options.get("chunk_size", option.default))
        options = {**options, "chunk_size": chunk * mesh.devices.size}
    opts = spec.parse(options, x.shape[0], classifier, label)
    key = as_key(key, label, spec.needs_key(opts))
    # arrays are traced (new values, no recompile); everything else is static
    arrays = {k: jnp.asarray(v, x.dtype) for k, v in opts.items() if isinstance(v, np.ndarray)}
    static = tuple(sorted((k, v) for k, v in opts.items() if k not in arrays))
    t = None if t is None else jnp.asarray(t)
    if mesh is not None:  # a sharded batch: the rest lives on the same devices (mnistxai.parallel)
        t = None if t is None else parallel.split_like(t, mesh)
        arrays, key = parallel.replicate((arrays, key), mesh)
    return jnp.asarray(x), t, key, arrays, static


def explain(
    method: str, classifier: Classifier, images, /, targets=None, *, key=None, **options
) -> Explanation:
    """Attributions of ``method`` for ``classifier`` on ``images``: an ``Explanation``.

    Args:
      method: a name in ``METHODS``.
      classifier: a ``mnistxai.models.classifier.Classifier`` (for other models call the
        method's function directly: ``METHODS[method].fn``).
      images: (28, 28), (28, 28, 1), (B, 28, 28) or (B, 28, 28, 1); uint8 0-255 or float in [0, 1].
      targets: None (the predicted class), an int for all, (B,) ints in [0, num_classes),
        ``"all"`` (every class at once: attributions (B, num_classes, 28, 28), targets and extras
        (B, num_classes, ...), from one compiled call in which the classes share the forward
        passes; ``chunk_size`` is divided among the classes, so memory stays bounded), or
        ``Contrast(a, b)`` (logit a minus logit b; extras gain ``contrast_class`` = b).
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
    if isinstance(targets, str):
        if targets != "all":
            raise InputError(
                f"targets must be None, class indices, 'all' or Contrast, got {targets!r}"
            )
        return _explain_all_classes(spec, classifier, images, key, options)
    if isinstance(targets, Contrast):
        return _explain_contrast(spec, classifier, images, targets, key, options)
    x, t, key, arrays, static = _prepare(spec, method, classifier, images, targets, key, options)
    run = _RUN[_compile_kind(spec, x.dtype)]
    return run(classifier, x, t, key, arrays, method=method, static=static)


def _run_all_classes(classifier, x, key, arrays, *, method, static):
    # vmap over the class: the forward passes do not depend on it, so they stay unbatched and
    # only the backward passes (or the final gathers of a perturbation method) run per class
    classes = jnp.arange(classifier.model.num_classes, dtype=jnp.int32)
    per_class = lambda c: _run_method(
        classifier, x, jnp.full(x.shape[0], c), key, arrays, method=method, static=static
    )
    return jax.vmap(per_class, out_axes=1)(classes)


_RUN_ALL = {
    kind: compiler(_run_all_classes, static_argnames=("method", "static"))
    for kind, compiler in _COMPILERS.items()
}


def _explain_all_classes(spec: Method, classifier, images, key, options) -> Explanation:
    if "chunk_size" in spec.options:  # the classes' backward passes run side by side
        option = spec.options["chunk_size"]
        chunk = option.parse("chunk_size", options.get("chunk_size", option.default))
        classes = classifier.model.num_classes if isinstance(classifier, Classifier) else 1
        options = {**options, "chunk_size": max(1, chunk // classes)}
    x, _, key, arrays, static = _prepare(spec, spec.name, classifier, images, None, key, options)
    run = _RUN_ALL[_compile_kind(spec, x.dtype)]
    return run(classifier, x, key, arrays, method=spec.name, static=static)


def _take_rows(rows: jax.Array, new, old):
    """``new`` where the bool (B,) ``rows`` hold, else ``old``, leaf by leaf."""
    pick = lambda n, o: jnp.where(rows.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree_util.tree_map(pick, new, old)


def _explain_contrast(spec: Method, classifier, images, contrast: Contrast, key, options):
    if spec.score != "logit":
        raise InputError(
            f"{spec.name} explains a {spec.score}, which a logit difference does not change; "
            f"contrastive targets need a method that explains logits"
        )
    if not isinstance(classifier, Classifier):
        raise InputError(
            f"classifier must be a mnistxai Classifier, got {type(classifier).__name__}"
        )
    if contrast.a is None or contrast.b is None:
        raise InputError("Contrast(a, b) needs both classes: a to explain, b to explain it against")
    x = as_images(images)
    classes = classifier.model.num_classes
    a = as_targets(contrast.a, x.shape[0], classes, "Contrast.a")
    b = as_targets(contrast.b, x.shape[0], classes, "Contrast.b")
    if (a == b).any():
        raise InputError("a contrast needs two different classes: Contrast.a equals Contrast.b")
    # logit k - logit b for every k: the output layer's weights minus column b, an exact edit
    # every view of the model (the fast twin, the layer split, the folded layers) inherits. The
    # weights are traced, so each b reuses one compiled program.
    out = None
    for other in np.unique(b):
        part = explain(spec.name, classifier.contrasted(int(other)), x, a, key=key, **options)
        out = part if out is None else _take_rows(jnp.asarray(b == other), part, out)
    return out.replace(extras={**out.extras, "contrast_class": jnp.asarray(b)})


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
    """``"a,b"`` -> ``("a", "b")`` checked against ``METHODS``; ``"all"`` -> every method; None
    -> the default set (every method whose ``Method.default_set`` holds)."""
    if text is None:
        return tuple(name for name, spec in METHODS.items() if spec.default_set)
    if text == "all":
        return tuple(METHODS)
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InputError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METHODS)}"
        )
    return names
