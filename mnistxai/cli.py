"""What the command-line scripts share: an argument parser that fails in one line, and a main wrapper."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from mnistxai.checkpoint import CheckpointError
from mnistxai.data import DataError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one readable line on stderr and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; expected failures (bad values, missing data or checkpoints) exit 1 with one line."""
    try:
        sys.exit(main() or 0)
    except (ValueError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)
