"""Deconvnet (Zeiler & Fergus 2014), and the classifier view with deconvnet ReLUs."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn
from mnistxai.xai._fast import fast_logits
from mnistxai.xai.methods.saliency import saliency
from mnistxai.xai.registry import ModelView, register, register_model


@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass is a ReLU of the incoming gradient, whatever the input's sign
    (the deconvnet's rectified reconstruction)."""
    return jnp.maximum(x, 0)


def _deconv_relu_fwd(x):
    return jnp.maximum(x, 0), None


def _deconv_relu_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_relu_fwd, _deconv_relu_bwd)


def deconv_logits(classifier) -> LogitsFn:
    """The fast input-gradient twin of ``classifier`` with every ReLU a ``deconv_relu``."""
    return fast_logits(classifier.with_activation(deconv_relu))


register_model("deconv_logits", ModelView(lambda clf, o: ((deconv_logits(clf),), o)))


@register(
    "deconvnet",
    model="deconv_logits",
    family="gradient",
    paper="Zeiler & Fergus 2014, arXiv:1311.2901",
    passes=lambda o: (1, 0),
)
def deconvnet(
    deconv_logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """Deconvnet (Zeiler & Fergus 2014, arXiv:1311.2901), signed like Captum's
    ``Deconvolution``.

    The target logit is propagated back with every ReLU replaced by a ReLU of the signal coming
    back (only positive reconstructions pass, wherever the forward ReLU was off), max-pools
    routing it to their forward argmax ("switches") and convolutions transposed. It differs from
    guided backprop, which also masks by the forward ReLU, exactly where a unit was off and its
    incoming signal positive. ``deconv_logits_fn`` must use ``deconv_relu`` for its ReLUs (for a
    Classifier: ``classifier.with_activation(deconv_relu)``); (B, H, W) signed maps.
    """
    return saliency(deconv_logits_fn, x, targets, signed=True, chunk_size=chunk_size)
