"""What an explanation method costs per image, read off XLA's cost analysis of its program.

    method_cost("integrated_gradients", classifier, {"steps": 32})
    -> {"flops_per_image": 3.45e9, "forward_flops": 5.19e7, "forward_equivalents": 66.5, ...}

FLOPs are XLA's, not hand counts: ``method_cost`` compiles the very program ``explain`` runs
(``mnistxai.xai.api``: the same jit, view of the model and options) on ``images`` placeholder
images (nothing is executed) and sums the ``flops`` of XLA's ``HloCostAnalysis`` over it.

XLA's ``compiled.cost_analysis()`` counts the body of a while loop once, whatever its trip count
(measured on jax 0.10: a ``lax.map`` over 8 rows reports one row's FLOPs), and every chunked loop
of the methods (``lax.map`` over examples, ``lax.scan`` over path steps or noise samples) is a
while loop. So the count here is loop-aware, in two steps:

1. Methods that take ``chunk_size`` are compiled with a chunk larger than any batch
   (``SINGLE_PASS``), so their chunk loops collapse into one pass. This also makes the exact
   shortcuts of ``over_active`` (occlusion windows, coalitions or deletion steps that leave the
   image unchanged are skipped) run their all-in-one-pass form, which computes every input: the
   count is the method's cost without those data-dependent savings (an upper bound on digits
   with black background; the run's seconds per image include the savings).
2. The loops left (path steps of Guided IG, solver iterations, a method's own ``fori_loop``) are
   corrected from the compiled module itself: each ``while`` of the optimised HLO carries
   ``known_trip_count`` in its backend config, so its body is cut out into a module of its own
   (``hlo_module_from_text``, the body as entry), costed by ``hlo_module_cost_analysis`` and
   counted trip-count times, recursively for nested loops. A while loop whose trip count depends
   on the data (Guided IG's inner rounds, the LASSO's coordinate descent) has none; it is
   counted once, as XLA does, and reported in ``unknown_trip_loops`` (those loops make no model
   calls in the current methods, so their share is small).

Model evaluations are given as **forward-equivalents**: the method's FLOPs per image divided by
the FLOPs of one forward pass of the classifier (``jax.jit(classifier.logits)``, XLA-counted the
same way). A gradient pass of the input-gradient methods is ~2 forward-equivalents (forward plus
an input-only backward: no weight gradients), so saliency is ~2.0, IG with S steps ~2 S + 2.
The registry's declared ``(gradient passes, forward passes)`` come along as ``model_passes``.
Counting calls with a host callback was not chosen: the methods reach the model through
different views (the folded fast twin, the layer split, LRP's layers), so no single apply can be
wrapped, and FLOPs also price partial passes (a CAM's head, Ablation-CAM's 128 head passes).

The HLO access goes through jaxlib internals (``jaxlib._jax.hlo_module_cost_analysis``,
``jaxlib._hlo.hlo_module_from_text``), present in jaxlib 0.10.
"""

from __future__ import annotations

import re
import time
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai import api, registry

# a chunk no batch reaches: every chunked loop of a method runs as one pass
SINGLE_PASS = 1 << 20
# stand-in background for the methods that draw baselines from one (only shapes matter)
BACKGROUND = 100
KEYS = ("flops", "transcendentals", "bytes accessed")

_HEAD = re.compile(r"^(ENTRY )?%?([^\s(]+) \(.*\{\s*$")
_WHILE = re.compile(r"\bwhile\(.*?condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CALLS = re.compile(r"\b(?:calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_CALL_LISTS = re.compile(r"\b(?:branch_computations|called_computations|calls)=\{([^}]*)\}")


def _hlo():
    try:
        from jaxlib import _hlo, _jax
    except ImportError as e:  # pragma: no cover - another jaxlib layout
        raise RuntimeError(f"this jaxlib has no HLO cost analysis to read: {e}") from None
    return _hlo, _jax


def module_text(compiled) -> str:
    """The optimised HLO of a ``jax.stages.Compiled``, parsable: backend configs (trip counts)
    and large constants kept, metadata dropped."""
    _hlo_mod, _ = _hlo()
    options = _hlo_mod.HloPrintOptions()
    options.print_metadata = False
    options.print_large_constants = True
    options.print_backend_config = True
    return compiled.runtime_executable().hlo_modules()[0].to_string(options)


class _Module:
    """An optimised HLO module split into computations, costed per computation."""

    def __init__(self, text: str, client):
        self.computations: dict[str, list[str]] = {}
        self.entry: Optional[str] = None
        current = None
        for line in text.splitlines():
            head = _HEAD.match(line)
            if current is None and head:
                current = head.group(2)
                self.computations[current] = [line]
                if head.group(1):
                    self.entry = current
            elif current is not None:
                self.computations[current].append(line)
                if line.startswith("}"):
                    current = None
        if self.entry is None:
            raise RuntimeError("no ENTRY computation found in the compiled HLO")
        self.client = client
        self.unknown = 0
        self.loops = 0
        self._flat: dict[str, dict] = {}

    def flat(self, name: str) -> dict:
        """XLA's cost of computation ``name`` as the entry (each loop body in it once)."""
        if name not in self._flat:
            _hlo_mod, _jax = _hlo()
            parts = []
            for comp, lines in self.computations.items():
                head = lines[0][len("ENTRY ") :] if lines[0].startswith("ENTRY ") else lines[0]
                parts.append("\n".join([("ENTRY " if comp == name else "") + head] + lines[1:]))
            module = _hlo_mod.hlo_module_from_text("HloModule cost\n\n" + "\n\n".join(parts))
            self._flat[name] = dict(_jax.hlo_module_cost_analysis(self.client, module))
        return self._flat[name]

    def loops_of(self, name: str) -> list[tuple[str, str, Optional[int]]]:
        """(condition, body, trip count or None) of the while loops ``name`` runs directly or
        through calls and fusions (not those inside another loop's body)."""
        out = []
        for line in self.computations[name][1:]:
            loop = _WHILE.search(line)
            if loop:
                trip = _TRIP.search(line)
                out.append((loop.group(1), loop.group(2), int(trip.group(1)) if trip else None))
                continue
            callees = _CALLS.findall(line)
            for group in _CALL_LISTS.findall(line):
                callees += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
            for callee in callees:
                if callee in self.computations:
                    out += self.loops_of(callee)
        return out

    def cost(self, name: str, key: str) -> float:
        """``key`` of computation ``name`` with every loop body counted trip-count times."""
        total = self.flat(name).get(key, 0.0)
        for cond, body, trip in self.loops_of(name):
            self.loops += 1
            if trip is None:
                self.unknown += 1
                trip = 1
            # the flat count holds the body and the condition once each
            total += trip * self.cost(body, key) - self.flat(body).get(key, 0.0)
            total += trip * self.flat(cond).get(key, 0.0)
        return total


def program_cost(compiled) -> dict:
    """Loop-aware XLA cost of a compiled program: {"flops", "transcendentals", "bytes accessed",
    "xla_flops" (XLA's own count, loop bodies once), "loops", "unknown_trip_loops"}."""
    plain = compiled.cost_analysis()
    plain = plain[0] if isinstance(plain, (list, tuple)) else plain
    module = _Module(module_text(compiled), compiled.runtime_executable().client)
    out = {"xla_flops": float(plain.get("flops", 0.0))}
    if not module.loops_of(module.entry):  # nothing to correct: XLA's count is exact
        out.update({k: float(plain.get(k, 0.0)) for k in KEYS})
        return {**out, "loops": 0, "unknown_trip_loops": 0}
    for k in KEYS:
        module.loops = module.unknown = 0
        out[k] = float(module.cost(module.entry, k))
    return {**out, "loops": module.loops, "unknown_trip_loops": module.unknown}


def _placeholder(images: int, dtype=jnp.float32):
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
        raise InputError(f"images must be a positive integer, got {images!r}")
    return jnp.zeros((int(images), 28, 28, 1), dtype)


def forward_flops(classifier, images: int = 8) -> float:
    """FLOPs per image of one forward pass of ``classifier`` (``jax.jit(classifier.logits)`` on
    ``images`` images)."""
    return _forward_flops(classifier, int(images))


def _forward_flops(classifier, images: int) -> float:
    x = _placeholder(images)
    compiled = jax.jit(type(classifier).logits).lower(classifier, x).compile()
    return program_cost(compiled)["flops"] / images


def method_cost(
    name: str,
    classifier,
    options: Optional[Mapping[str, Any]] = None,
    images: int = 8,
    targets: str = "predicted",
) -> dict:
    """The cost per image of method ``name`` with ``options`` on ``classifier``.

    Compiles (does not run) the program ``explain(name, classifier, x, ...)`` would run on a
    batch of ``images`` images, chunk loops in one pass (see the module docstring), and counts
    its FLOPs loop-aware. ``targets``: "predicted" (explain the predicted class, which the method
    finds itself, as explanation runs do by default) or "label" (targets given).

    Returns {"flops_per_image", "forward_flops" (one forward pass per image),
    "forward_equivalents" (their ratio), "transcendentals_per_image", "bytes_per_image",
    "xla_flops_per_image" (XLA's own count: loop bodies once), "loops", "unknown_trip_loops",
    "model_passes" ([gradient, forward] passes the registry declares), "images",
    "compile_seconds"}.
    """
    spec = registry.get(name)
    if targets not in ("predicted", "label"):
        raise InputError(f"targets must be 'predicted' or 'label', got {targets!r}")
    given = dict(options or {})
    opts = dict(given)
    if spec.background and "background" not in opts:
        opts["background"] = np.zeros((BACKGROUND, 28, 28), np.uint8)
    declared = spec.model_passes(spec.parse(opts, int(images), classifier))
    if "chunk_size" in spec.options:
        opts["chunk_size"] = SINGLE_PASS
    x = _placeholder(images)
    t = None if targets == "predicted" else np.zeros(int(images), np.int32)
    key = jax.random.key(0) if spec.takes_key else None
    x, t, key, arrays, static = api._prepare(spec, name, classifier, x, t, key, opts)
    run = api._RUN[api._compile_kind(spec, x.dtype)]
    t0 = time.perf_counter()
    compiled = run.lower(classifier, x, t, key, arrays, method=name, static=static).compile()
    seconds = time.perf_counter() - t0
    cost = program_cost(compiled)
    n = int(images)
    forward = _forward_flops(classifier, n)
    return {
        "flops_per_image": cost["flops"] / n,
        "forward_flops": forward,
        "forward_equivalents": cost["flops"] / n / forward if forward > 0 else float("nan"),
        "transcendentals_per_image": cost["transcendentals"] / n,
        "bytes_per_image": cost["bytes accessed"] / n,
        "xla_flops_per_image": cost["xla_flops"] / n,
        "loops": cost["loops"],
        "unknown_trip_loops": cost["unknown_trip_loops"],
        "model_passes": [float(p) for p in declared],
        "images": n,
        "compile_seconds": round(seconds, 2),
    }
