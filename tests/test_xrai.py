"""XRAI against an independent reference: PAIR saliency's loop written out naively (a dict of
remaining masks, one mean per candidate, as ``saliency/core/xrai.py`` runs it) on segments from
skimage called directly, and IG from one Flax gradient per path point, on real digits of the
trained CNN in float64; plus its axioms (regions partition the image, ranked by gain, the map
keeps IG's sum region by region) and hand-built cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.morphology import dilation, disk
from skimage.segmentation import felzenszwalb
from skimage.transform import resize

from mnistxai import xai
from mnistxai.data import load, to_model_input
from mnistxai.training.checkpoint import load_classifier
from mnistxai.util.errors import InputError
from mnistxai.xai.methods import xrai as X

STEPS = 16


@pytest.fixture(scope="module")
def classifier(trained_run):
    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """float64 (3, 28, 28, 1) real test digits."""
    return np.asarray(to_model_input(load("mnist", "test", data_dir=mnist_dir)[0][:3]), np.float64)


@pytest.fixture(scope="module")
def result(classifier, digits):
    """XRAI of two digits at PAIR's defaults (but 16 IG steps), float64."""
    with jax.enable_x64(True):
        res = xai.explain("xrai", classifier, digits[:2], steps=STEPS)
        return jax.tree_util.tree_map(np.asarray, res)


def naive_segments(image, scales=X.SCALES):
    """PAIR's segmentation spelled out: (M, 28, 28) dilated masks of every label of every
    scale."""
    im = image.astype(np.float32).astype(np.float64)
    im = (im - im.min()) / (im.max() - im.min()) * 2 - 1
    im = resize(im, (224, 224), order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    masks = []
    for scale in scales:
        seg = felzenszwalb(im, scale=scale, sigma=0.8, min_size=150)
        seg = resize(seg, (28, 28), order=0, preserve_range=True, mode="constant")
        seg = seg.astype(int)
        for label in range(seg.min(), seg.max() + 1):
            masks.append(dilation(seg == label, footprint=disk(5)))
    return masks


def naive_xrai(attr, masks, area_threshold=1.0, min_pixel_diff=50):
    """PAIR's ``_xrai``, naively: -> (map, 0-based region ranks)."""
    out = np.full(attr.shape, -np.inf)
    current = np.zeros(attr.shape, bool)
    remaining = dict(enumerate(masks))
    trace = []
    while current.mean() <= area_threshold:
        best, best_key, drop = -np.inf, None, []
        for k, m in remaining.items():
            new = m & ~current
            if new.sum() < min_pixel_diff:
                drop.append(k)
                continue
            if attr[new].mean() > best:
                best, best_key = attr[new].mean(), k
        for k in drop:
            del remaining[k]
        if not remaining:
            break
        added = remaining.pop(best_key)
        new = added & ~current
        trace.append((new, best))
        current = current | added
        out[new] = best
    return finish(attr, out, trace)


def naive_xrai_fast(attr, masks, min_pixel_diff=50):
    """PAIR's ``_xrai_fast``, naively."""
    out = np.full(attr.shape, -np.inf)
    current = np.zeros(attr.shape, bool)
    whole = [attr[m].mean() if m.any() else -np.inf for m in masks]
    trace = []
    for m, _ in sorted(zip(masks, whole), key=lambda p: -p[1]):
        new = m & ~current
        if new.sum() < min_pixel_diff:
            continue
        trace.append((new, attr[new].mean()))
        out[new] = attr[new].mean()
        current |= m
    return finish(attr, out, trace)


def finish(attr, out, trace):
    left = out == -np.inf
    if left.any():
        out[left] = attr[left].mean()
    ranked = [m for m, _ in sorted(trace, key=lambda p: -p[1])] + ([left] if left.any() else [])
    ranks = np.full(attr.shape, -1)
    for i, m in enumerate(ranked):
        ranks[m] = i
    return out, ranks


def naive_ig(classifier, x, target, steps):
    """PAIR's IG (linspace(0, 1, steps), weights 1/steps) from the image's min and max,
    averaged, one Flax gradient per path point."""
    grad = jax.jit(jax.grad(lambda z: classifier.logits(z[None])[0, target]))
    total = 0.0
    for b in (np.full_like(x, x.min()), np.full_like(x, x.max())):
        g = sum(np.asarray(grad(jnp.asarray(b + a * (x - b)))) for a in np.linspace(0, 1, steps))
        total = total + g * (x - b) / steps / 2
    return total.max(-1)


def test_segmentation_is_skimages_felzenszwalb(digits):
    """The label images are skimage's felzenszwalb called directly: at 28 x 28 (no resize) on
    the digit scaled to [-1, 1], and at 224 x 224 resized back; the masks are their labels,
    dilated."""
    img = digits[0]
    lo, hi = img.min(), img.max()
    direct = felzenszwalb((img - lo) / (hi - lo) * 2 - 1, scale=100, sigma=0.8, min_size=20)
    labels = X.felzenszwalb_labels(img, (100.0,), 0.8, 20, resize=False)
    np.testing.assert_array_equal(labels[0], direct)
    assert len(np.unique(direct)) > 2  # a real segmentation, not a trivial one

    with jax.enable_x64(True):
        labels = X.felzenszwalb_labels(img)
    masks = X.candidate_masks(labels)
    expected = naive_segments(img)
    assert masks.shape == (len(expected), 28, 28) and labels.shape == (6, 28, 28)
    np.testing.assert_array_equal(masks, np.stack(expected))
    # each scale's undilated masks partition the image; dilation only grows them
    undilated = X.candidate_masks(labels, 0)
    assert (undilated.sum(0) == len(labels)).all() and (masks >= undilated).all()


def test_map_equals_a_naive_pair_loop_on_real_digits(classifier, digits, result):
    """float64: the base attribution is PAIR's averaged IG to 1e-10, and the map and ranks are
    exactly the naive PAIR loop's on it, with segments from skimage directly."""
    with jax.enable_x64(True):
        clf = classifier.astype(jnp.float64)
        for i in range(2):
            t = int(result.targets[i])
            ig = naive_ig(clf, digits[i], t, STEPS)
            base = result.extras["base_attribution"][i]
            np.testing.assert_allclose(base, ig, rtol=1e-10, atol=1e-12 * np.abs(ig).max())
            expected, ranks = naive_xrai(base, naive_segments(digits[i]))
            np.testing.assert_allclose(result.attributions[i], expected, rtol=1e-12, atol=0)
            np.testing.assert_array_equal(result.extras["region_order"][i], ranks)
            assert result.extras["region_count"][i] == ranks.max() + 1 >= 3


def test_fast_variant_and_area_threshold_equal_the_naive_loops(digits):
    rng = np.random.default_rng(0)
    masks = np.stack(naive_segments(digits[2]))
    attr = rng.normal(size=(28, 28)) + 3 * digits[2, ..., 0]  # strokes matter, as in IG maps
    got = X.select_regions(attr, masks, "fast")
    want = naive_xrai_fast(attr, list(masks))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    got = X.select_regions(attr, masks, "full", area_threshold=0.3)
    want = naive_xrai(attr, list(masks), area_threshold=0.3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2].size < X.select_regions(attr, masks)[2].size  # stopped early, then leftover


def test_regions_partition_the_image_rank_by_gain_and_keep_igs_sum(result):
    for i in range(2):
        order = result.extras["region_order"][i]
        count = int(result.extras["region_count"][i])
        gains = result.extras["region_gain"][i]
        base = result.extras["base_attribution"][i]
        maps = result.attributions[i]
        assert sorted(np.unique(order)) == list(range(count))  # every rank a non-empty region
        np.testing.assert_array_equal(gains[count:], 0)
        for r in range(count):
            region = order == r
            # the map is the region's gain: PAIR's gain density, its mean IG
            np.testing.assert_array_equal(maps[region], gains[r])
            np.testing.assert_allclose(gains[r], base[region].mean(), rtol=1e-12)
            if r < count - 1:  # all but PAIR's leftover region, which comes last
                assert region.sum() >= X.MIN_PIXEL_DIFF
        assert (np.diff(gains[: count - 1]) <= 0).all()
        np.testing.assert_allclose(maps.sum(), base.sum(), rtol=1e-10)


def test_hand_built_greedy_choices():
    """10 x 10 attribution: top-left 1, top-right 0.5, bottom-left 0, bottom-right -1; masks:
    left half, top half, whole image."""
    attr = np.zeros((10, 10))
    attr[:5, :5], attr[:5, 5:], attr[5:, 5:] = 1.0, 0.5, -1.0
    left, top = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    left[:, :5], top[:5] = True, True
    masks = np.stack([left, top, np.ones((10, 10), bool)])
    # top (0.75) first; then the left half adds bottom-left (0), the image adds it and
    # bottom-right (-0.5): left wins; the image adds bottom-right (-1) last
    maps, order, gains = X.select_regions(attr, masks, min_pixel_diff=25)
    np.testing.assert_array_equal(gains, [0.75, 0.0, -1.0])
    np.testing.assert_array_equal(order[[0, 9, 9], [0, 0, 9]], [0, 1, 2])
    # the left half's 25 new pixels are too few for 30: the image adds the bottom half
    maps, order, gains = X.select_regions(attr, masks, min_pixel_diff=30)
    np.testing.assert_array_equal(gains, [0.75, -0.5])
    np.testing.assert_array_equal(maps[5:], -0.5)
    # stopped at 40% of the area: the bottom half is PAIR's leftover, its own mean
    maps, order, gains = X.select_regions(attr, masks, area_threshold=0.4, min_pixel_diff=25)
    np.testing.assert_array_equal(gains, [0.75, -0.5])
    np.testing.assert_array_equal(order[5:], 1)
    # a leftover ranks last even above a region's gain: masks cover only the top half (-0.75
    # of -attr), the bottom half left over has gain 0.5
    masks = np.stack([top & left, top])
    maps, order, gains = X.select_regions(-attr, masks, min_pixel_diff=25)
    np.testing.assert_array_equal(gains, [-0.75, 0.5])
    np.testing.assert_array_equal(order[5:], 1)


def test_all_classes_segment_once_and_equal_one_class_at_a_time(classifier, digits, monkeypatch):
    calls = []
    segment = X.felzenszwalb_labels
    monkeypatch.setattr(X, "felzenszwalb_labels", lambda *a: calls.append(1) or segment(*a))
    opts = dict(steps=2, scales=(150.0,))
    every = xai.explain("xrai", classifier, digits[:2], "all", **opts)
    assert every.attributions.shape == (2, 10, 28, 28)
    assert len(calls) == 2  # once per image, not per image and class
    for c in (3, 7):
        one = xai.explain("xrai", classifier, digits[:2], c, **opts)
        np.testing.assert_allclose(every.attributions[:, c], one.attributions, rtol=1e-5)
        np.testing.assert_array_equal(
            every.extras["region_order"][:, c], one.extras["region_order"]
        )


def test_a_constant_image_is_one_region_of_zero_gain(random_classifier):
    """PAIR divides by zero there; here the image is one segment and IG from min = max is 0."""
    res = xai.explain("xrai", random_classifier, np.zeros((1, 28, 28)), steps=2, scales=(100.0,))
    np.testing.assert_array_equal(res.attributions, 0)
    np.testing.assert_array_equal(res.extras["region_order"], 0)
    assert int(res.extras["region_count"][0]) == 1


@pytest.mark.parametrize(
    "options, match",
    [
        ({"scales": ()}, "scales"),
        ({"scales": (100, -1)}, "scales"),
        ({"area_threshold": 1.5}, "area_threshold"),
        ({"dilation_radius": -1}, "dilation_radius"),
        ({"min_pixel_diff": 0}, "min_pixel_diff"),
        ({"algorithm": "slow"}, "algorithm"),
    ],
)
def test_bad_options_are_input_errors(random_classifier, digits, options, match):
    with pytest.raises(InputError, match=match):
        xai.explain("xrai", random_classifier, digits[:1], **options)
