"""Eigen-CAM (Muhammad & Yeasin 2020) and Eigen-Grad-CAM: the first principal component of a
layer's activations (or of gradient x activations) as a map."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mnistxai.xai._core import (
    DEFAULT_CHUNK,
    Explanation,
    over_examples,
    resize_maps,
    target_or_argmax,
)
from mnistxai.xai.methods.gradcam import CAM_FACTS, FeaturesFn, HeadFn, layer_grads
from mnistxai.xai.registry import register


def first_component(m: jax.Array) -> jax.Array:
    """(h, w) projection of the (h, w, K) array ``m`` on its first principal direction.

    The rows m_ij are centred over (i, j), as pytorch-grad-cam's ``get_2d_projection`` does, and
    projected on the first right singular vector. A singular vector's sign is arbitrary (LAPACK
    and XLA may pick either), so the projection is flipped where its largest value is smaller in
    magnitude than its smallest, the correction of Chung & Ying 2025 (Appl. Sci. 15, 7562, eq.
    13; pytorch-grad-cam's ``get_2d_projection_with_sign_correction``). NaNs count as 0, as
    there.
    """
    h, w, k = m.shape
    rows = jnp.nan_to_num(m).reshape(h * w, k)
    rows = rows - rows.mean(0)
    _, _, vt = jnp.linalg.svd(rows, full_matrices=False)
    projection = rows @ vt[0]
    flip = jnp.abs(projection.min()) > jnp.abs(projection.max())
    return jnp.where(flip, -projection, projection).reshape(h, w)


def _eigen_cam(use_gradients: bool, name: str, doc: str):
    def method(
        features_fn: FeaturesFn,
        head_fn: HeadFn,
        x: jax.Array,
        targets: Optional[jax.Array] = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> Explanation:
        def one(xi, t, _):
            if use_gradients:
                a, g, t = layer_grads(features_fn, head_fn, xi, t)
                a = g * a
            else:
                a = features_fn(xi[None])
                t = target_or_argmax(head_fn(a)[0], t)
                a = a[0]
            cam = jax.nn.relu(first_component(a))
            return resize_maps(cam, xi.shape[:2]), t, {}

        return over_examples(one, x, targets, chunk_size=chunk_size)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


EIGEN_SVD = (
    "The one departure from pytorch-grad-cam: its ``EigenCAM`` and ``EigenGradCAM`` leave the "
    "sign of the component to the SVD routine; here it is fixed (``first_component``), so the map "
    "does not depend on the linear-algebra library. Not min-max scaled."
)

eigencam = register("eigencam", paper="Muhammad & Yeasin 2020, arXiv:2008.00299", **CAM_FACTS)(
    _eigen_cam(
        False,
        "eigencam",
        f"""Eigen-CAM (Muhammad & Yeasin 2020, arXiv:2008.00299): ReLU of the first principal
component of the activations A (h, w, K) at the option ``layer`` (block 3).

Class-agnostic: the map is the same whatever the target (``targets`` is still returned, the
predicted class when not given). (B, H, W) non-negative maps. {EIGEN_SVD}""",
    )
)

eigengradcam = register(
    "eigengradcam", paper="pytorch-grad-cam's EigenGradCAM (after arXiv:2008.00299)", **CAM_FACTS
)(
    _eigen_cam(
        True,
        "eigengradcam",
        f"""Eigen-Grad-CAM (pytorch-grad-cam, after Muhammad & Yeasin 2020): ReLU of the first
principal component of dy/dA * A at the option ``layer`` (block 3).

Class-discriminative, unlike Eigen-CAM: the gradient of the target logit weighs each location's
activations first. (B, H, W) non-negative maps. {EIGEN_SVD}""",
    )
)
