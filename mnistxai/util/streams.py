"""Named random streams: every random choice derives from the one seed and a name saying what it
is for, never from an offset such as ``seed + 7``.

``key(seed, "epoch_order")`` is the stream's root key; ``fold(k, "deletion")`` derives a named
sub-stream from a key or from an array of keys (one per example), so two uses can never collide
by reusing a number. A name maps to ``crc32(name) & 0x7FFFFFFF``.
"""

from __future__ import annotations

import zlib

import jax


def stream_id(name: str) -> int:
    """The 31-bit number of the stream ``name``."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def key(seed: int, name: str) -> jax.Array:
    """The root key of the stream ``name`` of ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), stream_id(name))


def fold(keys: jax.Array, name: str) -> jax.Array:
    """The sub-stream ``name`` of a key, or of each key of an array of keys."""
    sid = stream_id(name)
    if keys.shape == ():
        return jax.random.fold_in(keys, sid)
    return jax.vmap(lambda k: jax.random.fold_in(k, sid))(keys)
