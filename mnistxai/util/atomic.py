"""Atomic file writes: a temporary file beside the target, then ``os.replace``, so a reader (or a
resumed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _replace_atomically(path: Path, write) -> None:
    """``write(file)`` into a unique temporary file beside ``path``, flushed to disk, then renamed
    over ``path`` (and the folder entry flushed): a crash leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json_atomic(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    _replace_atomically(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` at ``path``, atomically."""
    _replace_atomically(path, lambda f: f.write(text.encode()))


def save_npz_atomic(path: Path, **arrays) -> None:
    """``np.savez(path, **arrays)``, atomically."""
    _replace_atomically(path, lambda f: np.savez(f, **arrays))
