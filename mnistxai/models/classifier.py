"""A trained classifier as pure functions: the contract between the models and the XAI module.

``Classifier`` is a pytree (its Flax variables are leaves, the module is static), so it can be
passed straight into ``jax.jit``-ed functions without retracing for new weights of the same shape.
All functions run in inference mode: BatchNorm uses its running statistics and dropout is off,
so every example's output depends on that example alone.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnistxai.models.cnn import CNN


@struct.dataclass
class Classifier:
    """A CNN with its variables ``{'params': ..., 'batch_stats': ...}``, and the dataset it was
    trained on (``mnistxai.data.DATASETS``), which every pipeline explains and shows it on.

    Inputs ``x`` are float (B, 28, 28, 1) in [0, 1] (float32; float64 after ``astype``).
    """

    variables: dict
    model: CNN = struct.field(pytree_node=False, default_factory=CNN)
    dataset: str = struct.field(pytree_node=False, default="mnist")

    def logits(self, x: jax.Array) -> jax.Array:
        """Logits (B, 10)."""
        return self.model.apply(self.variables, x)

    def probabilities(self, x: jax.Array) -> jax.Array:
        """Softmax probabilities (B, 10)."""
        return jax.nn.softmax(self.logits(x))

    def features(self, x: jax.Array, layer: str = "block3") -> jax.Array:
        """Activations of ``layer`` (default block 3: (B, 7, 7, 128)); see
        ``mnistxai.models.cnn``."""
        return self.model.apply(self.variables, x, layer, method=CNN.forward_to)

    def head(self, a: jax.Array, layer: str = "block3") -> jax.Array:
        """Logits (B, 10) from the activations ``a`` of ``layer``: ``head(features(x)) ==
        logits(x)``."""
        return self.model.apply(self.variables, a, layer, method=CNN.forward_from)

    def with_activation(self, activation: Callable[[jax.Array], jax.Array]) -> "Classifier":
        """The same weights with every ReLU replaced by ``activation`` (guided backprop, etc.)."""
        return self.replace(model=self.model.clone(activation=activation))

    def contrasted(self, other: int) -> "Classifier":
        """The same model with every logit k replaced by logit k - logit ``other`` (the output
        layer's kernel and bias minus their column ``other``; exact, no new layer): explaining
        class a of it explains "a rather than ``other``" (``mnistxai.xai.Contrast``)."""
        out = self.model.spec.layers[-1].name
        layer = self.variables["params"][out]
        edited = {k: v - v[..., other : other + 1] for k, v in layer.items()}
        params = {**self.variables["params"], out: edited}
        return self.replace(variables={**self.variables, "params": params})

    def astype(self, dtype) -> "Classifier":
        """The same model with its floating-point variables cast to ``dtype`` (e.g. float64 for
        checks to float64 precision under ``jax_enable_x64``); a no-op when they already are."""
        cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        return self.replace(variables=jax.tree_util.tree_map(cast, self.variables))

    @property
    def params(self):
        return self.variables["params"]

    @property
    def batch_stats(self):
        return self.variables["batch_stats"]


@jax.jit
def _classes_and_probabilities(classifier: Classifier, x: jax.Array):
    probs = classifier.probabilities(x)
    return jnp.argmax(probs, -1).astype(jnp.int32), probs


def predict(classifier: Classifier, x, batch_size: int = 1000):
    """(classes int32 (N,), softmax probabilities (N, K)) as NumPy for inputs (N, 28, 28, 1) in
    [0, 1], ``batch_size`` at a time; a short last batch is padded to ``batch_size``, so one
    program serves every N above it."""
    x = np.asarray(x)
    classes, probs = [], []
    for s in range(0, len(x), batch_size):
        chunk = x[s : s + batch_size]
        n = len(chunk)
        if n < batch_size and len(x) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
        c, p = _classes_and_probabilities(classifier, jnp.asarray(chunk))
        classes.append(np.asarray(c)[:n])
        probs.append(np.asarray(p)[:n])
    return np.concatenate(classes), np.concatenate(probs)
