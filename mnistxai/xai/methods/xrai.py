"""XRAI (Kapishnikov et al. 2019, "XRAI: Better Attributions Through Regions"), as PAIR saliency's
``saliency.core.xrai.XRAI`` computes it (github.com/PAIR-code/saliency, commit 7b72b67, March
2024).

The image is over-segmented by Felzenszwalb's graph-based algorithm at several scales, every
segment becomes a candidate region (dilated, so that regions overlap and include their edges),
and regions are added greedily, each time the candidate whose not-yet-covered pixels have the
highest mean Integrated Gradients attribution ("gain density"). Each pixel's XRAI value is the
gain of the region that added it.

Segmentation is skimage's, on the host, so it cannot be traced: the registry's functions run
under ``jit``, and nothing before tracing sees the images (the registry's ``check`` sees options,
batch size and classifier; ``explain`` traces the images). So the host part, segmentation and the
greedy selection, runs in one ``jax.pure_callback`` after the IG attributions (JAX, batched and
chunked like ``integrated_gradients``). The selection stays on the host with the segments: a
traced version would need a static bound on the number of candidate segments, and the only sound
one (6 scales x 334 segments of >= 150 of 224 x 224 pixels) is ~10x what digits have (~180).
"""

from __future__ import annotations

import functools
import numbers
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai.util.errors import InputError
from mnistxai.xai._core import DEFAULT_CHUNK, Explanation, LogitsFn, over_examples, plan
from mnistxai.xai._core import predict_one
from mnistxai.xai._inputs import positive_int, real
from mnistxai.xai.methods.integrated_gradients import path_sum
from mnistxai.xai.registry import register

# PAIR's module constants and defaults (saliency/core/xrai.py)
SCALES = (50.0, 100.0, 150.0, 250.0, 500.0, 1200.0)
SIGMA = 0.8
MIN_SIZE = 150
RESIZE = (224, 224)
VALUE_RANGE = (-1.0, 1.0)
DILATION_RADIUS = 5
MIN_PIXEL_DIFF = 50  # XRAIParameters.experimental_params["min_pixel_diff"]


def normalize_image(image: np.ndarray, resize: bool = True) -> np.ndarray:
    """PAIR's ``_normalize_image``: (H, W, C) min-max scaled to [-1, 1] (float64), then, with
    ``resize``, resized to 224 x 224 by skimage (cubic, constant mode, anti-aliasing on).

    A constant image (PAIR divides 0 by 0 there) becomes -1 everywhere."""
    from skimage.transform import resize as sk_resize

    # segments depend on the pixel values, not on the dtype they arrive in: float32 and float64
    # copies of one digit differ by rounding (~3e-8), which could flip a merge near a tie
    im = np.asarray(image, np.float32).astype(np.float64)
    lo, span = im.min(), im.max() - im.min()
    unit = (im - lo) / span if span > 0 else np.zeros_like(im)
    im = unit * (VALUE_RANGE[1] - VALUE_RANGE[0]) + VALUE_RANGE[0]
    if resize:
        im = sk_resize(
            im, RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True
        )
    return im


def felzenszwalb_labels(
    image: np.ndarray,
    scales=SCALES,
    sigma: float = SIGMA,
    min_size: int = MIN_SIZE,
    resize: bool = True,
) -> np.ndarray:
    """(len(scales), H, W) int label images of (H, W, C) ``image``: skimage's ``felzenszwalb``
    of the normalised image (``normalize_image``) at each scale, resized back to H x W by nearest
    neighbour when the image was resized (PAIR's ``_get_segments_felzenszwalb`` before the
    masks)."""
    from skimage.segmentation import felzenszwalb
    from skimage.transform import resize as sk_resize

    shape = image.shape[:2]
    im = normalize_image(image, resize)
    out = []
    for scale in scales:
        seg = felzenszwalb(im, scale=scale, sigma=sigma, min_size=min_size)
        if resize:
            seg = sk_resize(
                seg, shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False
            ).astype(int)
        out.append(seg)
    return np.stack(out)


def candidate_masks(labels: np.ndarray, dilation_radius: int = DILATION_RADIUS) -> np.ndarray:
    """(M, H, W) bool candidate regions of (S, H, W) label images, in PAIR's order: scale by
    scale, one mask per label from min to max label (a label the resize lost gives an empty
    mask, as in PAIR), each dilated by skimage with ``disk(dilation_radius)`` (none for 0)."""
    from skimage.morphology import dilation, disk

    masks = [seg == label for seg in labels for label in range(seg.min(), seg.max() + 1)]
    if dilation_radius:
        footprint = disk(dilation_radius)
        masks = [dilation(m, footprint=footprint) for m in masks]
    return np.stack(masks)


def select_regions(
    attr: np.ndarray,
    masks: np.ndarray,
    algorithm: str = "full",
    area_threshold: float = 1.0,
    min_pixel_diff: int = MIN_PIXEL_DIFF,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PAIR's ``_xrai`` ("full") or ``_xrai_fast`` ("fast") on an (H, W) attribution and (M, H,
    W) bool candidates, in float64.

    Full: while the covered fraction is <= ``area_threshold``, drop every candidate adding fewer
    than ``min_pixel_diff`` uncovered pixels, and add the one whose uncovered pixels have the
    highest mean attribution (the first such candidate on a tie). Fast: candidates sorted once
    by their whole mean, each added if it adds >= ``min_pixel_diff`` pixels. Either way a
    region's gain is the mean attribution over the pixels it added; pixels no region added (the
    leftover) form a last region with their own mean.

    Returns ``(map (H, W) float64, order (H, W) int32, gains (R,) float64)``: each pixel's gain,
    the rank of its region (0 = highest gain; the leftover, if any, last whatever its gain, as in
    PAIR), and the regions' gains in rank order.
    """
    shape = attr.shape
    a = np.asarray(attr, np.float64).ravel()
    m = masks.reshape(len(masks), -1)
    covered = np.zeros(a.shape, bool)
    regions, gains = [], []

    def add(k, region):
        nonlocal covered
        regions.append(region)
        gains.append(a[region].mean())  # PAIR's _gain_density, to the last bit
        covered = covered | m[k]

    if algorithm == "full":
        alive = np.ones(len(m), bool)
        while covered.mean() <= area_threshold:
            idx = np.flatnonzero(alive)
            new = m[idx] & ~covered
            counts = new.sum(1)
            alive[idx[counts < min_pixel_diff]] = False
            keep = counts >= min_pixel_diff
            idx, new, counts = idx[keep], new[keep], counts[keep]
            if not idx.size:
                break
            density = new @ a / counts
            # the dot product rounds differently from PAIR's mean over the selected pixels:
            # recompute PAIR's number for the near-best, so that ties break as PAIR's do
            near = np.flatnonzero(density >= density.max() - 1e-9 * (np.abs(a).max() + 1e-300))
            exact = [a[new[j]].mean() for j in near]
            j = near[int(np.argmax(exact))]
            alive[idx[j]] = False
            add(idx[j], new[j])
    elif algorithm == "fast":
        whole = [a[mk].mean() if mk.any() else -np.inf for mk in m]
        for k in sorted(range(len(m)), key=lambda k: -whole[k]):
            new = m[k] & ~covered
            if new.sum() >= min_pixel_diff:
                add(k, new)
    else:
        raise InputError(f"unknown XRAI algorithm {algorithm!r}; choose 'full' or 'fast'")

    rank = sorted(range(len(gains)), key=lambda r: -gains[r])  # stable, as PAIR's sorted()
    out = np.empty(a.shape)
    order = np.empty(a.shape, np.int32)
    for pos, r in enumerate(rank):
        out[regions[r]], order[regions[r]] = gains[r], pos
    ranked = [gains[r] for r in rank]
    if not covered.all():
        ranked.append(a[~covered].mean())
        out[~covered], order[~covered] = ranked[-1], len(rank)
    return out.reshape(shape), order.reshape(shape), np.asarray(ranked)


def max_regions(pixels: int, min_pixel_diff: int) -> int:
    """A bound on the number of regions: each adds >= ``min_pixel_diff`` new pixels, plus the
    leftover."""
    return pixels // min_pixel_diff + 1


def _host(x, attr, *, segmentation, selection, dtype):
    """The callback: x (..., H, W, C) and attr (..., H, W), as ``to_bits`` words, whose leading
    axes broadcast (vmap's ``expand_dims``: under ``targets="all"`` x has a size-1 class axis)
    -> map, order, gains (as words), count. Each distinct image is segmented once."""
    x, attr = from_bits(x, dtype), from_bits(attr, dtype).astype(np.float64)
    h, w = attr.shape[-2:]
    lead = np.broadcast_shapes(x.shape[:-3], attr.shape[:-2])
    images = x.reshape((-1,) + x.shape[-3:])
    which = np.broadcast_to(np.arange(len(images)).reshape(x.shape[:-3]), lead).reshape(-1)
    attrs = np.broadcast_to(attr, lead + (h, w)).reshape(-1, h, w)
    r_max = max_regions(h * w, selection["min_pixel_diff"])
    maps = np.zeros((len(attrs), h, w))
    orders = np.zeros((len(attrs), h, w), np.int32)
    gains = np.zeros((len(attrs), r_max))
    counts = np.zeros(len(attrs), np.int32)
    masks = {}
    for n, (i, a) in enumerate(zip(which, attrs)):
        if i not in masks:
            labels = felzenszwalb_labels(
                images[i],
                segmentation["scales"],
                segmentation["sigma"],
                segmentation["min_size"],
                segmentation["resize"],
            )
            masks[i] = candidate_masks(labels, segmentation["dilation_radius"])
        maps[n], orders[n], g = select_regions(a, masks[i], **selection)
        gains[n, : len(g)], counts[n] = g, len(g)
    shaped = lambda v: v.reshape(lead + v.shape[1:])
    bits = lambda v: to_bits(shaped(v), dtype)
    return bits(maps), shaped(orders), bits(gains), shaped(counts)


# pure_callback canonicalises the callback's arguments and results under the x64 setting of the
# thread that runs it, not the caller's: inside ``jax.enable_x64(True)`` (thread-local) float64
# arguments arrive float32 and float64 results are refused. uint32 words pass unchanged, so
# floats cross as their bit patterns (``lax.bitcast_convert_type`` on the XLA side).
def to_bits(values: np.ndarray, dtype) -> np.ndarray:
    """float ``values`` cast to ``dtype`` as uint32 words: (...) for float32, (..., 2) for
    float64."""
    v = np.ascontiguousarray(values, dtype)
    words = v.dtype.itemsize // 4
    return v.view(np.uint32).reshape(v.shape + ((words,) if words > 1 else ()))


def from_bits(words, dtype) -> np.ndarray:
    """The inverse of ``to_bits``."""
    words = np.ascontiguousarray(words, np.uint32)
    v = words.view(dtype)
    return v.reshape(v.shape[:-1]) if np.dtype(dtype).itemsize > 4 else v


def as_words(values: jax.Array) -> jax.Array:
    """``to_bits`` in XLA."""
    return jax.lax.bitcast_convert_type(values, jnp.uint32)


def bits_shape(shape: tuple, dtype) -> jax.ShapeDtypeStruct:
    words = np.dtype(dtype).itemsize // 4
    return jax.ShapeDtypeStruct(tuple(shape) + ((words,) if words > 1 else ()), jnp.uint32)


def scales_option(name: str, value) -> tuple[float, ...]:
    """One positive number or a non-empty sequence of them, as a tuple of floats."""
    bad = InputError(f"{name} must be a positive number or a sequence of them, got {value!r}")
    values = (value,) if isinstance(value, numbers.Real) else value
    try:
        values = tuple(values)
    except TypeError:
        raise bad from None
    if not values or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0
        for v in values
    ):
        raise bad
    return tuple(float(v) for v in values)


@register(
    "xrai",
    model="logits",
    family="path",
    compile="default",
    paper="Kapishnikov et al. 2019, arXiv:1906.02825",
    checks={
        "area_threshold": real(0.0, 1.0),
        "scales": scales_option,
        "sigma": real(0.0),
        "dilation_radius": positive_int(0),
    },
    passes=lambda o: (2 * o["steps"], 1),
    quick={"steps": 16},
    smoke={"steps": 4, "scales": (100.0, 500.0)},
)
def xrai(
    logits_fn: LogitsFn,
    x: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    steps: int = 100,
    baselines: Literal["min_max", "black_white"] = "min_max",
    algorithm: Literal["full", "fast"] = "full",
    area_threshold: float = 1.0,
    min_pixel_diff: int = MIN_PIXEL_DIFF,
    scales: tuple = SCALES,
    sigma: float = SIGMA,
    min_size: int = MIN_SIZE,
    resize: bool = True,
    dilation_radius: int = DILATION_RADIUS,
    chunk_size: int = DEFAULT_CHUNK,
) -> Explanation:
    """XRAI (Kapishnikov et al. 2019, arXiv:1906.02825): each pixel gets the IG gain density of
    the region that added it; PAIR saliency's ``XRAI.GetMaskWithDetails``.

    Base attribution: Integrated Gradients as PAIR's ``IntegratedGradients.GetMask`` (``steps``
    equally weighted points linspace(0, 1, steps), both ends included, 100 as PAIR's
    ``XRAIParameters.steps``) from two baselines, averaged: ``baselines="min_max"`` (default,
    PAIR's: constant images at the image's minimum and maximum pixel value, 0 and 1 for most
    digits) or ``"black_white"`` (0 and 1); then the max over channels (PAIR's aggregation).

    Segments (PAIR's ``_get_segments_felzenszwalb``): the image min-max scaled to [-1, 1],
    resized to 224 x 224 (cubic; ``resize=False`` segments at 28 x 28), skimage ``felzenszwalb``
    at each of ``scales`` (50, 100, 150, 250, 500, 1200) with ``sigma`` 0.8 and ``min_size`` 150
    (pixels of the image segmented: 224 x 224, or 28 x 28 without resize), labels resized back
    by nearest neighbour, one mask per label, dilated with ``disk(dilation_radius)`` (5 pixels
    of the 28 x 28 image; 0: none).

    Selection: ``algorithm="full"`` (PAIR's default ``_xrai``): greedy while the covered area is
    <= ``area_threshold`` (1.0: until no candidate is left); ``"fast"`` (``_xrai_fast``): masks
    ranked once by their own mean attribution, overlap ignored; ``area_threshold`` is ignored,
    as in PAIR. Both skip candidates adding fewer than ``min_pixel_diff`` (50, PAIR's
    ``experimental_params``) new pixels. Pixels no region added get their own mean attribution
    (PAIR's completion). See ``select_regions``.

    Returns maps (B, H, W) in x's dtype. Extras: ``region_order`` int32 (B, H, W), the rank of
    each pixel's region, 0 = highest gain (PAIR's flattened ``segments`` minus 1; the leftover
    region last); ``region_gain`` (B, R) the regions' gains in rank order, zero-padded to R =
    H*W // min_pixel_diff + 1; ``region_count`` int32 (B,); ``base_attribution`` (B, H, W), the
    averaged IG map that was ranked.

    PAIR's ``XRAIParameters``: ``steps``, ``area_threshold``, ``algorithm`` and
    ``experimental_params["min_pixel_diff"]`` are options of the same defaults; the segments and
    the IG map are always returned (``return_xrai_segments`` as flattened ranks,
    ``return_ig_attributions`` as the baselines' mean, not one map per baseline). PAIR's
    ``baselines``, ``segments`` and ``base_attribution`` arguments (caller-supplied inputs) have
    no counterpart.

    Departures from PAIR: IG is accumulated in x's dtype (PAIR sums gradients in float32); the
    image is rounded to float32 before segmenting, so float32 and float64 copies of a digit get
    the same segments; a constant image (PAIR: 0/0, NaN) normalises to -1 everywhere. PAIR's
    ``batch_size`` is ``chunk_size`` here.

    Compiled with plain ``jax.jit`` (``Method.compile="default"``), not the project's
    XLA-convolution jit: PAIR's path includes alpha = 0, the constant baseline itself, where
    every 2x2 pooling window of the flat feature maps ties and the gradient splits evenly among
    the tied units. XLA:CPU's own convolution rounds some positions of a constant 14 x 14 map
    an ulp differently depending on the batch it sees, which breaks those ties one way, and the
    base map of a digit changed by ~3% with ``chunk_size`` (3 digits, random CNN). The default
    path computes every position alike, at a cost: 16 digits, 100 steps, one scale took 8.5 s
    instead of 5.2 s on the project's 2-core CPU. Segmentation (~45 ms per scale per image on one
    CPU core at 224 x 224) and selection run on the host in a ``jax.pure_callback``.
    """
    dtype = x.dtype
    h, w = x.shape[1:3]
    alphas = jnp.asarray(np.linspace(0.0, 1.0, steps), dtype)
    weight = jnp.asarray(0.5 / steps, dtype)  # PAIR's 1/steps, halved: the baselines' mean
    per_pass = plan(x.shape[0], chunk_size)[1]

    def one(xi, t, _):
        t = predict_one(logits_fn, xi, t)
        lo, hi = (xi.min(), xi.max()) if baselines == "min_max" else (0.0, 1.0)
        starts = jnp.stack([jnp.full_like(xi, lo), jnp.full_like(xi, hi)])
        attr = path_sum(
            logits_fn,
            t,
            lambda idx: starts[idx // steps],
            lambda idx: xi[None],
            lambda idx: alphas[idx % steps],
            lambda idx: jnp.full(idx.shape, weight),
            2 * steps,
            per_pass,
        )
        return attr.max(-1), t, {}

    ig = over_examples(one, x, targets, chunk_size=chunk_size)
    host = functools.partial(
        _host,
        segmentation=dict(
            scales=scales,
            sigma=sigma,
            min_size=min_size,
            resize=resize,
            dilation_radius=dilation_radius,
        ),
        selection=dict(
            algorithm=algorithm, area_threshold=area_threshold, min_pixel_diff=min_pixel_diff
        ),
        dtype=dtype,
    )
    b = x.shape[0]
    r = max_regions(h * w, min_pixel_diff)
    shapes = (
        bits_shape((b, h, w), dtype),
        jax.ShapeDtypeStruct((b, h, w), jnp.int32),
        bits_shape((b, r), dtype),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    maps, order, gains, count = jax.pure_callback(
        host, shapes, as_words(x), as_words(ig.attributions), vmap_method="expand_dims"
    )
    maps, gains = (jax.lax.bitcast_convert_type(v, dtype) for v in (maps, gains))
    extras = {
        "region_order": order,
        "region_gain": gains,
        "region_count": count,
        "base_attribution": ig.attributions,
    }
    return Explanation(maps, ig.targets, extras)
