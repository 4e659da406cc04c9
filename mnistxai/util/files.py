"""Output folders: checked before any work is done, and held by one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from pathlib import Path

from mnistxai.util.errors import InputError


def writable_dir(path, flag: str) -> Path:
    """``path`` as a folder that exists (created if needed) and can be written, or an
    ``InputError`` naming ``flag``: found in microseconds instead of after an epoch of work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{flag} {path} cannot be written: {e.strerror or e}") from None
    return path


@contextlib.contextmanager
def exclusive(folder: Path, flag: str, name: str = ".lock"):
    """Hold ``folder/<name>`` (default ``.lock``) for the duration: a second writer of the same
    folder gets an ``InputError`` at once instead of mixing its results with the first's. The
    lock is the operating system's (``flock``): it is released when the process ends, however it
    ends. (The processes of one ``jax.distributed`` run each hold a lock of their own.)"""
    handle = open(Path(folder) / name, "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another process is writing to {flag} {folder}: wait for it to finish, or "
                f"choose another {flag}"
            ) from None
        yield
    finally:
        handle.close()
