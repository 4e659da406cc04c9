"""``python -m mnistxai.explain``: the command line of ``mnistxai.pipelines.explain``."""

from mnistxai.pipelines.explain import main
from mnistxai.util.cli import run_main

if __name__ == "__main__":
    run_main(main)
