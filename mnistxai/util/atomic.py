"""Atomic file writes: a temporary file beside the target, then ``os.replace``, so a reader (or a
resumed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def write_json_atomic(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays) -> None:
    """``np.savez(path, **arrays)``, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
