"""The leaderboard's metric registry: a metric declares itself, once, beside its definition.

    @register_metric("deletion", category="faithfulness", options_of=deletion, options=("steps",),
                     columns={"deletion_auc": ("lower", "Deletion AUC ... (Petsiuk 2018)")})
    def _deletion(batch: Batch, **options) -> dict: ...

The decorated function scores one ``Batch`` (one method's maps of a batch of images) and returns
per-example arrays: every declared column, plus any extra arrays (curves) it wants kept. Its
options are read from ``options_of``'s signature (defaults and checks written once, on the pure
metric function). Its random keys are the images' keys folded with the metric's name
(``mnistxai.util.streams``). ``reexplains`` metrics call ``batch.explain_fn`` and run on the
robustness subset only; ``needs_masks`` metrics score maps against ground-truth masks
(``batch.masks``) and run only where the dataset has them; ``setup(classifier, key)`` runs once
per evaluation (the randomization cascade); ``shared(batch, **options)`` is the part that does not
depend on the map, computed once per batch of images and handed to every method's call as
``batch.shared``. Adding a metric is
adding one such function to a module of ``mnistxai.xai.metrics``, or a new module there.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Literal, Mapping, Optional

import jax

from mnistxai.util.errors import InputError
from mnistxai.xai.registry import Check, Option, parse_options, signature_options

Better = Literal["higher", "lower"]
CATEGORIES = ("faithfulness", "robustness", "complexity", "sanity", "axiomatic", "localisation")


@dataclasses.dataclass(frozen=True)
class Batch:
    """What a leaderboard metric sees: one method's maps of one batch of images.

    Attributes:
      x: float (B, H, W, C) images; maps: (B, H, W); targets: int32 (B,).
      keys: (B,) per-image keys of this metric's stream.
      probabilities, logits: score functions (N, H, W, C) -> (N, K) of the classifier.
      chunk_size: the most model inputs evaluated in one pass.
      explain_fn: ``(model, x, targets, keys) -> maps`` of the method (re-explaining metrics).
      classifier: the model ``explain_fn`` takes; state: ``setup``'s result; shared: ``shared``'s.
      masks: bool (B, H, W) ground-truth regions for the ``needs_masks`` metrics, None where the
        dataset has none (an image without one: all False).
    """

    x: jax.Array
    maps: Optional[jax.Array]
    targets: jax.Array
    keys: jax.Array
    probabilities: Callable
    logits: Callable
    chunk_size: int
    explain_fn: Optional[Callable] = None
    classifier: Any = None
    state: Any = None
    shared: Any = None
    masks: Optional[jax.Array] = None


def reexplaining_score(
    fn: Callable, outputs: str | Mapping[str, str] | None = None
) -> Callable[..., dict]:
    """The ``score(batch, **options)`` of a re-explaining metric whose public function is
    ``fn(explain_fn, model, x, attributions, targets, *, key, **options)``: its result as the
    one column ``outputs`` (a str), its dict's entries renamed by ``outputs`` (a mapping, result
    key -> column; the rest dropped), or its dict as is (None)."""

    def score(batch: Batch, **options) -> dict:
        result = fn(
            batch.explain_fn,
            batch.classifier,
            batch.x,
            batch.maps,
            batch.targets,
            key=batch.keys,
            **options,
        )
        if outputs is None:
            return result
        if isinstance(outputs, str):
            return {outputs: result}
        return {column: result[k] for k, column in outputs.items()}

    return score


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered leaderboard metric (see the module docstring)."""

    name: str
    fn: Callable[..., dict]
    category: str
    columns: Mapping[str, tuple[Better, str]]
    options: Mapping[str, Option]
    reexplains: bool = False
    setup: Optional[Callable[[Any, jax.Array], Any]] = None
    shared: Optional[Callable[..., Any]] = None
    check: Optional[Callable[[dict], None]] = None
    needs_masks: bool = False
    default_set: bool = True

    def parse(self, options: Mapping[str, Any]) -> dict:
        """The options with defaults filled in, each checked, then the cross-option ``check``
        (``InputError``): all before any image is scored."""
        parsed = parse_options(self.options, options, self.name, "metric")
        if self.check is not None:
            self.check(parsed)
        return parsed


_METRICS: dict[str, Metric] = {}
METRICS: Mapping[str, Metric] = types.MappingProxyType(_METRICS)


def register_metric(
    name: str,
    *,
    category: str,
    columns: Mapping[str, tuple[Better, str]],
    options_of: Optional[Callable] = None,
    options: tuple[str, ...] = (),
    checks: Optional[Mapping[str, Check]] = None,
    reexplains: bool = False,
    setup: Optional[Callable] = None,
    shared: Optional[Callable] = None,
    check: Optional[Callable[[dict], None]] = None,
    needs_masks: bool = False,
    default_set: bool = True,
) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated ``fn(batch, **options) -> dict`` as metric ``name``
    (``check(options)``: cross-option validation, an ``InputError`` before any work;
    ``needs_masks``: it reads ``batch.masks``, so runs only on datasets with ground truth;
    ``default_set``: whether the leaderboard computes it when no metrics are named; a costly
    metric says False and runs when named or with ``--metrics all``)."""

    def decorate(fn: Callable) -> Callable:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        taken = {c for m in _METRICS.values() for c in m.columns} & set(columns)
        if taken:
            raise ValueError(f"metric {name!r}: columns {sorted(taken)} are another metric's")
        for column, (better, _) in columns.items():
            if better not in ("higher", "lower"):
                raise ValueError(f"{column}: better must be 'higher' or 'lower', got {better!r}")
        opts = signature_options(options_of, checks or {}, options) if options else {}
        _METRICS[name] = Metric(
            name,
            fn,
            category,
            dict(columns),
            opts,
            reexplains,
            setup,
            shared,
            check,
            needs_masks,
            default_set,
        )
        ordered = sorted(_METRICS.values(), key=_rank)  # stable: registration order in a category
        _METRICS.clear()
        _METRICS.update((m.name, m) for m in ordered)
        return fn

    return decorate


def _rank(metric: Metric) -> int:
    return CATEGORIES.index(metric.category) if metric.category in CATEGORIES else len(CATEGORIES)


def default_metrics(masks: bool = False) -> tuple[str, ...]:
    """The metrics the leaderboard computes when none are named: every ``default_set`` one
    (the ``needs_masks`` ones only with ``masks``), in the registry's order."""
    return tuple(
        m.name for m in _METRICS.values() if m.default_set and (masks or not m.needs_masks)
    )


def columns(masks: bool = False) -> dict[str, tuple[Better, str]]:
    """The default leaderboard's columns: name -> (better, description), in the registry's
    order (see ``default_metrics``)."""
    return {c: v for name in default_metrics(masks) for c, v in _METRICS[name].columns.items()}


def get_metric(name: Any) -> Metric:
    if not isinstance(name, str) or name not in _METRICS:
        raise InputError(f"unknown metric {name!r}; choose from {', '.join(_METRICS)}")
    return _METRICS[name]
