"""``python -m mnistxai.generative_eval``: the command line of
``mnistxai.training.generative_eval``."""

from mnistxai.training.generative_eval import main
from mnistxai.util.cli import run_main

if __name__ == "__main__":
    run_main(main)
