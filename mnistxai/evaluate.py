"""``python -m mnistxai.evaluate``: the command line of ``mnistxai.pipelines.evaluate``."""

from mnistxai.pipelines.evaluate import main
from mnistxai.util.cli import run_main

if __name__ == "__main__":
    run_main(main)
