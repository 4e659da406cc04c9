"""What the command-line scripts share: an argument parser that fails in one line, and a main
wrapper that prints the project's input errors in one line."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from mnistxai.util.errors import InputError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one readable line on stderr and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``. An ``InputError`` (a bad flag value, missing or corrupt data or checkpoint,
    an unusable output folder) exits 2 with one line, Ctrl-C exits 130 with one line; any other
    exception is a bug and keeps its traceback."""
    try:
        sys.exit(main() or 0)
    except InputError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            f"\n{sys.argv[0]}: interrupted",
            file=sys.stderr,
        )
        sys.exit(130)
