"""The interactive explorer: ``python -m mnistxai.app --checkpoint runs/cnn``.

A local web page (Starlette and uvicorn, one hand-written HTML file; bound to 127.0.0.1 unless
``--host`` says otherwise) where a digit is drawn on a canvas, picked from the test set (by index,
by class, among the misclassified or the most-confused pairs) or uploaded, and explained at once:
the top-3 probabilities, the maps of the chosen methods over the digit with their colorbars, the
contrastive map against the runner-up class ("why 4 and not 9", integrated gradients of the logit
difference) and IG's convergence delta. Every control re-explains without reloading the page.

``explorer.Explorer`` computes (no web in it); ``server.create_app`` serves it.
"""
