"""Explanations by synthesis: activation maximization (pixels, DGN-AM, VAE decoder), latent walks
with the decision flip, and counterfactuals."""
