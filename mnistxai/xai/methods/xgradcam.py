"""XGrad-CAM (Fu et al. 2020): Grad-CAM with weights that satisfy the conservation axiom."""

import jax.numpy as jnp

from mnistxai.xai.methods.gradcam import CAM_FACTS, gradient_cam
from mnistxai.xai.registry import register


def xgradcam_weights(a, g):
    """(K,) weights sum_ij(g A_k) / sum_ij(A_k) of activations and gradients (h, w, K); a channel
    that is zero everywhere gets weight 0."""
    mass = a.sum((0, 1))
    return jnp.where(mass != 0, (g * a).sum((0, 1)) / jnp.where(mass != 0, mass, 1.0), 0.0)


def _xgradcam_weigh(a, g):
    return jnp.einsum("hwk,k->hw", a, xgradcam_weights(a, g))


xgradcam = register("xgradcam", paper="Fu et al. 2020, arXiv:2008.02312", **CAM_FACTS)(
    gradient_cam(
        _xgradcam_weigh,
        "xgradcam",
        """XGrad-CAM (Fu et al. 2020, arXiv:2008.02312):
ReLU(sum_k w_k A_k) with w_k = sum_ij(dy/dA_k * A_k) / sum_ij(A_k).

These weights are the ones for which the map, before the ReLU, sums over (i, j) to
sum_k sum_ij dy/dA_k A_k, the first-order share of the score carried by the layer (the paper's
conservation axiom). As pytorch-grad-cam's ``XGradCAM``, which adds 1e-7 to the denominator;
here a channel whose activations sum to 0 gets weight 0 (its numerator is 0 too after a ReLU),
so the axiom holds exactly. (B, H, W) non-negative maps at the option ``layer`` (block 3).""",
    )
)
