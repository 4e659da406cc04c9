"""``jit``: ``jax.jit`` with the XLA options this project compiles everything with.

jaxlib 0.10's XLA:CPU hands convolutions to YNNPACK by default. For this CNN's narrow convolutions
on large images (28x28x32, 14x14x64) XLA's own convolution path is faster, in training and above
all in the input-gradient backward pass that most attribution methods are made of. Measured on the
2-core AMD EPYC of this project's CI machines with jax 0.10.2, batch 256 of the trained CNN (see
``benchmarks/xai_throughput.py`` and ``benchmarks/train_speed.py``): input gradients 760 -> 1140
images/s, train step (batch 128) 461 -> 569 images/s, forward unchanged. Other backends ignore the
option. Passed per compiled function rather than through ``XLA_FLAGS``, so it holds whatever JAX
did before this package was imported and reaches no other code.
"""

from __future__ import annotations

import functools

import jax

# YNNPACK for matrix products only: convolutions take XLA's own path
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def jit(fun=None, **kwargs):
    """``jax.jit(fun, **kwargs)`` with ``COMPILER_OPTIONS``; ``partial(jit, ...)`` and ``@jit`` work."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
