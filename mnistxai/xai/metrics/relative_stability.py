"""Robustness: relative input, output and representation stability (Agarwal et al. 2022).

``explain_fn(model, x, targets, keys) -> (B, H, W)`` as in ``robustness``, whose loop over
perturbed inputs (``reexplain_scan``) this shares. The three scores share one set of perturbed
inputs and their re-explanations; the model's outputs come from one forward pass per sample.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.util.jit import jit
from mnistxai.xai._inputs import real
from mnistxai.xai.metrics._common import check_inputs, check_positive, example_keys
from mnistxai.xai.metrics.registry import register_metric, reexplaining_score
from mnistxai.xai.metrics.robustness import (
    ExplainFn,
    as_clip,
    compute_dtype,
    reexplain_scan,
    uniform_noise,
)

COLUMNS = ("relative_input_stability", "relative_output_stability")
RRS = "relative_representation_stability"
KEPT = "relative_stability_kept"


def _norm(v):
    """Per-example L2 norm over all but the first axis, scaled by the largest |entry| so that the
    squares of the ~1/eps_min quotients cannot overflow."""
    v = v.reshape(v.shape[0], -1)
    m = jnp.abs(v).max(-1, keepdims=True)
    safe = jnp.where(m > 0, m, 1.0)
    return safe[:, 0] * jnp.sqrt(((v / safe) ** 2).sum(-1))


def _relative(new, old, eps_min):
    """(new - old) / old elementwise, a zero ``old`` replaced by ``eps_min`` (Quantus's rule)."""
    return (new - old) / jnp.where(old == 0, eps_min, old)


def _outputs(model, x, layer):
    """(logits, representation or None) from one forward pass."""
    if layer is None:
        return model.logits(x), None
    a = model.features(x, layer)
    return model.head(a, layer), a


@functools.partial(
    jit, static_argnames=("explain_fn", "samples", "lower_bound", "upper_bound", "clip", "layer")
)
def _relative_stability(
    explain_fn,
    model,
    x,
    attributions,
    targets,
    keys,
    *,
    samples,
    lower_bound,
    upper_bound,
    eps_min,
    clip,
    layer,
):
    dtype = compute_dtype(x, attributions)
    e0 = attributions.astype(dtype)
    x0 = x.astype(dtype)
    h0, r0 = _outputs(model, x, layer)
    h0 = h0.astype(dtype)
    label = jnp.argmax(h0, -1)
    eps_min = jnp.asarray(eps_min, dtype)

    def perturb(ks, s):
        return uniform_noise(ks, x, lower_bound, upper_bound, clip)

    def measure(xp, maps, s):
        h, rep = _outputs(model, xp, layer)
        h = h.astype(dtype)
        num = _norm(_relative(maps.astype(dtype), e0, eps_min))
        out = {
            "ris": num / jnp.maximum(_norm(_relative(xp.astype(dtype), x0, eps_min)), eps_min),
            "ros": num / jnp.maximum(_norm(h - h0), eps_min),
            "kept": jnp.argmax(h, -1) == label,
        }
        if layer is not None:
            rel = _relative(rep.astype(dtype), r0.astype(dtype), eps_min)
            out["rrs"] = num / jnp.maximum(_norm(rel), eps_min)
        return out

    steps = jnp.arange(samples)
    r = reexplain_scan(explain_fn, model, x, targets, keys, steps, perturb, measure)
    kept = r.pop("kept")
    count = kept.sum(0)
    # max over the samples that keep the predicted class; NaN where none does (undefined)
    best = {k: jnp.where(kept, v, -jnp.inf).max(0) for k, v in r.items()}
    best = {k: jnp.where(count > 0, v, jnp.nan) for k, v in best.items()}
    out = {COLUMNS[0]: best["ris"], COLUMNS[1]: best["ros"], KEPT: count.astype(jnp.int32)}
    if layer is not None:
        out[RRS] = best["rrs"]
    return out


def relative_stability(
    explain_fn: ExplainFn,
    model,
    x,
    attributions,
    targets,
    *,
    key,
    samples: int = 10,
    lower_bound: float = 0.02,
    upper_bound: float = 0.2,
    eps_min: float = 1e-6,
    clip=(0.0, 1.0),
    layer: Optional[str] = "dense",
) -> dict:
    """Relative input / output / representation stability (Agarwal et al. 2022,
    arXiv:2203.06877). Lower is better; range [0, inf).

    Over ``samples`` draws x' = clip(x + delta), delta ~ U[lower_bound, upper_bound)^d (one
    sided, as Quantus), with e = e(x) the given map and e' = e(x') (targets fixed, raw maps):

    - RIS = max ||(e - e') / e||_2 / max(||(x - x') / x||_2, eps_min)
    - ROS = max ||(e - e') / e||_2 / max(||h(x) - h(x')||_2, eps_min), h the logits
    - RRS = max ||(e - e') / e||_2 / max(||(l(x) - l(x')) / l(x)||_2, eps_min), l the
      activations of ``layer`` (``model.features``; None: no RRS)

    the norms over all entries, the max over the samples whose predicted class (argmax of the
    logits) is that of x. Division by zero: every zero of e, x or l(x) in an elementwise
    quotient is replaced by ``eps_min`` (Quantus's rule). On MNIST most pixels of x are 0, so
    ||(x - x') / x|| is ~ ||delta on the background|| / eps_min (~3e6 for 600 background
    pixels), and maps that are 0 where x is (gradient x input) give ~|e'| / eps_min terms too:
    RIS then compares those two magnitudes. The norms are scaled by their largest entry, so
    their squares cannot overflow: a zero divisor gives no inf or NaN (a quotient can overflow
    only for a nonzero divisor below |difference| / 3e38, a denormal float32). A value is NaN
    only where no sample keeps the predicted class (the metric is undefined there; the
    leaderboard's summaries skip non-finite values); ``relative_stability_kept`` counts the
    samples kept.

    As Quantus 0.6's ``RelativeInputStability``, ``RelativeOutputStability`` and
    ``RelativeRepresentationStability`` (``batch_uniform_noise`` between 0.02 and 0.2,
    eps_min 1e-6, raw maps, zeros replaced by eps_min, ``return_nan_when_prediction_changes``
    True), except: 10 samples instead of 200 (a lower bound of Quantus's maximum); the three
    share one set of perturbations and re-explanations (Quantus draws each its own); a sample
    that changes the prediction is left out of the max, whereas Quantus sets it to NaN and
    then takes ``np.max``, so one changed prediction makes its example NaN; the outer
    denominator is max(norm, eps_min) (the paper's; Quantus adds eps_min only to a norm of
    exactly 0: the two differ for norms in (0, eps_min)); x' is clipped to ``clip`` (default
    [0, 1], the model's input range; None: not clipped; Quantus does not clip); RRS reads one
    layer (default ``dense``, the 256 penultimate activations after ReLU) where Quantus's
    default concatenates the outputs of every module of the network.

    Args:
      explain_fn: ``(model, x, targets, keys) -> (B, H, W)``.
      model: its first argument, with ``logits(x) -> (B, K)``; for ``layer``, also
        ``features(x, layer)`` and ``head(a, layer)`` with ``head(features(x)) == logits(x)``
        (a ``Classifier``), so that one forward pass gives both.
      x: (B, H, W, C); attributions: e(x), (B, H, W); targets: int (B,).
      key: one key or (B,) keys; sample s of example i draws from ``fold_in(key_i, s)``.
    Returns {``relative_input_stability``, ``relative_output_stability``,
    [``relative_representation_stability``]: (B,) float32 (float64 for float64 inputs),
    ``relative_stability_kept``: int32 (B,)}; one explanation batch in memory at a time
    (``lax.scan`` over samples).
    """
    check_inputs(x, attributions, targets)
    check_positive(samples=samples)
    lower_bound = real()("lower_bound", lower_bound)
    upper_bound = real()("upper_bound", upper_bound)
    if not lower_bound < upper_bound:
        raise InputError(f"lower_bound {lower_bound} must be < upper_bound {upper_bound}")
    eps_min = real(0.0, open_lo=True)("eps_min", eps_min)
    if layer is not None:
        spec = getattr(getattr(model, "model", None), "spec", None)
        if spec is not None:
            layer = spec.resolve(layer)
        elif not (hasattr(model, "features") and hasattr(model, "head")):
            raise InputError(f"layer={layer!r} needs a model with features() and head()")
    return _relative_stability(
        explain_fn,
        model,
        x,
        attributions,
        targets,
        example_keys(key, np.shape(x)[0]),
        samples=samples,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        eps_min=eps_min,
        clip=as_clip(clip),
        layer=layer,
    )


def _bounds_ordered(options):
    if not options["lower_bound"] < options["upper_bound"]:
        raise InputError(
            f"lower_bound {options['lower_bound']} must be < upper_bound {options['upper_bound']}"
        )


register_metric(
    "relative_stability",
    category="robustness",
    options_of=relative_stability,
    options=("samples", "lower_bound", "upper_bound", "eps_min"),
    checks={"eps_min": real(0.0, open_lo=True)},
    check=_bounds_ordered,
    reexplains=True,
    default_set=False,
    columns={
        COLUMNS[0]: ("lower", "Relative input stability, U[0.02, 0.2] noise (Agarwal 2022)"),
        COLUMNS[1]: ("lower", "Relative output stability, of the logits (Agarwal 2022)"),
        RRS: ("lower", "Relative representation stability, dense layer (Agarwal 2022)"),
    },
)(reexplaining_score(relative_stability))
