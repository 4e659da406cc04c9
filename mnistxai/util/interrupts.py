"""Deferred interrupts: Ctrl-C ends long work at a safe point instead of wherever it lands.

Inside ``DeferredInterrupt()``, the first SIGINT (Ctrl-C) or SIGTERM only sets ``requested`` and
says so on stderr; the work in progress (a train step whose input buffers were donated, an XLA
compilation, a checkpoint save, an epoch's evaluation) finishes, and the loop that polls
``requested`` stops at its next safe point. A second SIGINT raises ``KeyboardInterrupt`` at once.
Outside the main thread (where Python delivers no signals) it does nothing.
"""

from __future__ import annotations

import signal
import sys
import threading


class DeferredInterrupt:
    def __init__(self, message: str = "stopping at the next safe point"):
        self.requested = False
        self.message = message
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\ninterrupt received: {self.message} (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
