"""HiResCAM (Draelos & Carin 2020): the gradient times the activations, elementwise."""

from mnistxai.xai.methods.gradcam import CAM_FACTS, gradient_cam
from mnistxai.xai.registry import register


def _hirescam_weigh(a, g):
    return (g * a).sum(-1)


hirescam = register("hirescam", paper="Draelos & Carin 2020, arXiv:2011.08891", **CAM_FACTS)(
    gradient_cam(
        _hirescam_weigh,
        "hirescam",
        """HiResCAM (Draelos & Carin 2020, arXiv:2011.08891):
ReLU(sum_k dy/dA_k * A_k), the gradient and the activations multiplied elementwise.

Unlike Grad-CAM, which averages the gradient over space first, each location keeps its own
gradient, so the map shows where the model's computation actually used the features; on a
global-average-pool + linear head the two are equal. As pytorch-grad-cam's ``HiResCAM``
(``grads * activations`` summed over channels, then ReLU), without its min-max scaling.
(B, H, W) non-negative maps at the option ``layer`` (block 3).""",
    )
)
