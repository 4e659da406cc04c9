"""Guided backpropagation (Springenberg et al. 2015), and the classifier view with guided ReLUs."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai._fast import fast_logits
from mnistxai.xai.methods.saliency import saliency
from mnistxai.xai.registry import ModelView, register, register_model


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive gradients at positive inputs (guided
    backprop)."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, 0.0),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_logits(classifier) -> LogitsFn:
    """The fast input-gradient twin of ``classifier`` with every ReLU a ``guided_relu``."""
    return fast_logits(classifier.with_activation(guided_relu))


register_model("guided_logits", ModelView(lambda clf, o: ((guided_logits(clf),), o)))


@register(
    "guided_backprop",
    model="guided_logits",
    family="gradient",
    paper="Springenberg et al. 2015, arXiv:1412.6806",
    passes=lambda o: (1, 0),
)
def guided_backprop(
    guided_logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Guided backpropagation (Springenberg et al. 2015, arXiv:1412.6806), signed like Captum's.

    ``guided_logits_fn`` must use ``guided_relu`` for its ReLUs (for a Classifier:
    ``classifier.with_activation(guided_relu).logits``); the result is its signed input gradient.
    """
    return saliency(guided_logits_fn, x, targets, signed=True, chunk_size=chunk_size)
