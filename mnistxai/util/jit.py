"""``jit``: ``jax.jit`` with the XLA options this project compiles its hot paths with.

jaxlib 0.10's XLA:CPU hands convolutions to YNNPACK by default. For this CNN's narrow convolutions
on large images (28x28x32, 14x14x64) XLA's own convolution path is faster, above all in the
input-gradient backward pass that most attribution methods are made of: on the project's 2-core
CPU, saliency rose from 788 to ~1,300 images/s and the train step from 461 to 581 images/s (README,
"Measured figures", for the commands). The option is a field of XLA's backend-independent
DebugOptions that only the CPU compiler reads (not verified on a GPU: none was available). It is
passed per compiled function rather than through ``XLA_FLAGS``, so it holds whatever JAX did before
this package was imported and reaches no other code. JAX accepts it on top-level jits only: use
``jit`` for entry points (train steps, ``explain``), plain ``jax.jit`` for helpers called inside
them.
"""

from __future__ import annotations

import functools

import jax

# YNNPACK for matrix products only: convolutions take XLA's own path
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def jit(fun=None, **kwargs):
    """``jax.jit(fun, **kwargs)`` with ``COMPILER_OPTIONS``; ``partial(jit, ...)`` and ``@jit``
    work."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
