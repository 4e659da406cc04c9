"""The project's one exception type for bad input.

Everything a user can get wrong (a flag, an option, an image, a data file, a checkpoint, an
output folder) raises ``InputError`` with one line that names the problem and, where it helps,
the fix. It is a ``ValueError``, so ``except ValueError`` still catches it. The command-line tools
print it as one line and exit 2 (``mnistxai.util.cli.run_main``); any other exception is a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """A problem with what the user passed in, stated in one line."""
