"""mnistxai: explainable AI on MNIST in JAX/Flax.

Subpackages by concern, imports flowing one way (each uses only those listed before it):

- ``util``: the input-error type, atomic writes, the project's jit, named random streams, the CLI.
- ``data``: IDX loading and checking, the datasets' class names.
- ``models``: the CNN written once as a layer specification, ``Classifier``, the VAE, the
  generator and its code prior.
- ``training``: the generic epoch loop with exact resume, each model's steps, orbax checkpoints.
- ``xai``: the method registry and ``explain`` (``xai.methods``: one file per method), metrics
  (``xai.metrics``), synthesis (``xai.synthesis``).
- ``pipelines``: resumable explanation runs and the leaderboard.
- ``report``: figures, the HTML report, the demos' pieces.

The modules ``mnistxai.explain``, ``mnistxai.evaluate`` and ``mnistxai.generative_eval`` are the
``python -m`` commands.
"""
