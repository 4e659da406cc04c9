"""Whole-dataset pipelines over trained checkpoints: resumable explanation runs (``explain``) and
the leaderboard that scores them (``evaluate``). Their command lines are ``python -m
mnistxai.explain`` and ``python -m mnistxai.evaluate``."""
