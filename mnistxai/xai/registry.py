"""The method registry: a method declares itself, once, in the file that defines it.

    @register("saliency", model="logits", paper="Simonyan et al. 2014, arXiv:1312.6034",
              passes=lambda o: (1, 0))
    def saliency(logits_fn, x, targets=None, *, signed: bool = False,
                 chunk_size: int = DEFAULT_CHUNK) -> Explanation: ...

The function is the method's pure functional core (model callables, then ``x`` (B, H, W, C) and
``targets``), and its keyword-only parameters are the method's options: their defaults are the
defaults, and their annotations pick the check (``bool``: True/False; ``int``: >= 1; ``float``:
finite; ``Literal[...]``: one of those strings). ``checks={"name": checker}`` refines or supplies
a check; a ``key`` parameter is the method's random key, not an option. ``model`` names the view
of the classifier the function takes before ``x`` (``MODELS``). Every fact a pipeline needs about
a method is a field of ``Method``; nothing outside the method's file names it, and the methods
package imports every module in it, so adding a method is adding one file to ``xai/methods/``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Literal, Mapping, Optional

from mnistxai.util.errors import InputError
from mnistxai.xai._inputs import choice, flag, positive_int, real

Check = Callable[[str, Any], Any]
Cost = Literal["cheap", "costly", "heavy"]
# METHODS lists families in this order, a family's methods by name; any other family comes last
FAMILIES = ("gradient", "path", "cam", "perturbation", "propagation")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its default and the check that validates and normalises a value."""

    default: Any
    check: Check

    def parse(self, name: str, value: Any) -> Any:
        if value is None and self.default is None:  # an optional array not given
            return None
        if value is None:
            raise InputError(f"{name} must be given a value (its default is {self.default!r})")
        return self.check(name, value)


@dataclasses.dataclass(frozen=True)
class ModelView:
    """How a method sees the classifier: ``build(classifier, options) -> (callables, options)``,
    the callables passed before ``x``; ``options`` are the view's own (e.g. a CAM's ``layer``),
    consumed by ``build`` and offered to the user like the method's."""

    build: Callable[[Any, dict], tuple[tuple, dict]]
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Group:
    """Methods that can be computed together from one computation (the SmoothGrad family).

    ``run(*model callables, x, targets, key=..., kinds=members, **options) -> {member:
    Explanation}`` computes the ``members`` with the shared ``options``; every member uses the
    key of ``name``. Options in ``private`` belong to one member only (smoothgrad's ``signed``):
    members whose other options agree are computed together, with that member's value."""

    name: str
    run: Callable[..., dict]
    private: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method (see the module docstring).

    Attributes:
      name: the registry name; fn: the pure function; model: a key of ``MODELS``.
      family: "gradient", "path", "cam", "perturbation", "propagation" or another (``FAMILIES``).
      options: name -> ``Option`` (the function's keyword-only parameters and the view's).
      stochastic: whether a key is required (or a function of the parsed options).
      background: the method draws baselines from ``background`` images of the training split,
        which the pipelines supply (``ExplainConfig.background`` of them) unless given.
      passes: ``passes(options) -> (gradient passes, forward passes)`` per image: the cost model
        (the benchmarks' FLOP count, the leaderboard's ``cost`` class).
      compile: "project" (``mnistxai.util.jit``: XLA's own convolutions) or "default" (plain
        ``jax.jit``), whichever measured faster for the method in float32.
      group: the methods this one can share a computation with (``Group``), or None.
      check: cross-option validation ``check(options, batch, classifier) -> options``.
      quick: lighter options for the 30-second demo; smoke: the lightest settings that still run
        every code path, for the contract tests.
      run_summary: ``run_summary(arrays) -> (stats dict, one line of text)`` over a whole
        explanation run's stored arrays (``<method>.npz``), which the leaderboard reports (IG's
        completeness), or None.
      score: what the method explains: "logit" (the target's logit; contrastive targets
        ``Contrast(a, b)`` then explain logit a - logit b) or "probability" (its softmax
        probability, which a logit difference leaves unchanged: no contrasts).
      default_set: whether the pipelines run it when no methods are named (``parse_methods``);
        False for a method too costly to run on every image by default (exact Shapley values:
        2^16 model evaluations per image), which ``--methods all`` or its name still runs.
      paper: the reference; summary: the first line of ``fn``'s docstring.
    """

    name: str
    fn: Callable
    model: str
    options: Mapping[str, Option]
    family: str = "other"
    stochastic: Any = False
    background: bool = False
    passes: Callable[[dict], tuple[float, float]] = lambda o: (1, 0)
    compile: Literal["project", "default"] = "project"
    group: Optional[Group] = None
    check: Optional[Callable] = None
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    paper: str = ""
    score: Literal["logit", "probability"] = "logit"
    default_set: bool = True
    run_summary: Optional[Callable[[dict], tuple[dict, str]]] = None
    takes_key: bool = False

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n")[0]

    def defaults(self) -> dict:
        return {k: o.default for k, o in self.options.items()}

    def parse(self, options: Mapping[str, Any], batch: int, classifier, label: str = "") -> dict:
        """The options with defaults filled in, each checked (``InputError`` naming the problem),
        then the cross-option ``check``."""
        opts = parse_options(self.options, options, label or self.name)
        return self.check(opts, batch, classifier) if self.check else opts

    def needs_key(self, options: Mapping[str, Any]) -> bool:
        return self.stochastic(options) if callable(self.stochastic) else bool(self.stochastic)

    def model_passes(self, options: Mapping[str, Any]) -> tuple[float, float]:
        """(gradient passes, forward passes) per image, the options not given at their
        defaults."""
        return self.passes({**self.defaults(), **options})

    def cost(self, options: Mapping[str, Any]) -> Cost:
        """ "cheap" (< 50 model passes per image), "costly" (< 500) or "heavy"."""
        total = sum(self.model_passes(options))
        return "cheap" if total < 50 else "costly" if total < 500 else "heavy"

    def call(self, classifier, x, targets, key, options: Mapping[str, Any]):
        """Run ``fn`` on the view of ``classifier`` (traceable under jit)."""
        fns, opts = MODELS[self.model].build(classifier, dict(options))
        if self.takes_key:
            opts["key"] = key
        return self.fn(*fns, x, targets, **opts)


_METHODS: dict[str, Method] = {}
METHODS: Mapping[str, Method] = types.MappingProxyType(_METHODS)
MODELS: dict[str, ModelView] = {}


def register_model(name: str, view: ModelView) -> ModelView:
    """Add a view of the classifier that methods can ask for by ``name``."""
    if name in MODELS:
        raise ValueError(f"model view {name!r} is registered twice")
    MODELS[name] = view
    return view


def _check_from_annotation(name: str, annotation) -> Check:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return flag
    if annotation is int:
        return positive_int()
    if annotation is float:
        return real()
    if origin is Literal:
        return choice(typing.get_args(annotation))
    raise TypeError(
        f"option {name!r} has no check: annotate it bool, int, float or Literal[...], "
        f"or pass checks={{{name!r}: checker}} to register"
    )


def signature_options(
    fn: Callable, checks: Mapping[str, Check], names: Optional[tuple[str, ...]] = None
) -> dict[str, Option]:
    """The keyword-only parameters of ``fn`` (``key`` aside; only ``names`` if given) as
    ``Option``s."""
    hints = typing.get_type_hints(fn)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name == "key" or (names and p.name not in names):
            continue
        if p.default is p.empty:
            raise TypeError(f"{fn.__name__}: option {p.name!r} needs a default")
        check = checks.get(p.name) or _check_from_annotation(p.name, hints.get(p.name))
        out[p.name] = Option(p.default, check)
    missing = set(names or ()) - set(out)
    unused = set(checks) - set(out)
    if missing or unused:
        raise TypeError(f"{fn.__name__}: no keyword-only option(s) {sorted(missing | unused)}")
    return out


def parse_options(
    options: Mapping[str, Option], given: Mapping[str, Any], label: str, kind: str = "method"
) -> dict:
    """``given`` checked against ``options`` with the defaults filled in (``InputError``)."""
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(unknown)} for {kind} {label!r}; "
            f"it takes: {', '.join(sorted(options)) or 'none'}"
        )
    return {k: o.parse(k, given[k] if k in given else o.default) for k, o in options.items()}


def register(
    name: str, *, model: str, checks: Optional[Mapping[str, Check]] = None, **facts
) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function as method ``name`` (facts: ``Method``'s
    fields). The function is returned unchanged."""

    def decorate(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        if model not in MODELS:
            raise ValueError(f"{name}: unknown model view {model!r}; known: {', '.join(MODELS)}")
        options = {**signature_options(fn, checks or {}), **MODELS[model].options}
        takes_key = "key" in inspect.signature(fn).parameters
        if facts.get("stochastic") and not takes_key:
            raise TypeError(f"{name}: a stochastic method takes a key parameter")
        _METHODS[name] = Method(
            name=name, fn=fn, model=model, options=options, takes_key=takes_key, **facts
        )
        ordered = sorted(_METHODS.values(), key=_rank)
        _METHODS.clear()
        _METHODS.update((m.name, m) for m in ordered)
        return fn

    return decorate


def _rank(method: Method) -> tuple:
    family = FAMILIES.index(method.family) if method.family in FAMILIES else len(FAMILIES)
    return family, method.family, method.name


def get(name: Any) -> Method:
    """``METHODS[name]``, or an ``InputError`` listing the methods."""
    if not isinstance(name, str) or name not in _METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}")
    return _METHODS[name]
