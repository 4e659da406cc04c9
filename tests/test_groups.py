"""Feature groups (``mnistxai.xai.groups``): grid patches, SLIC superpixels of real digits, user
masks, and how the game-theoretic methods treat them."""

import jax
import numpy as np
import pytest

from mnistxai import data
from mnistxai.util.errors import InputError
from mnistxai.xai import explain
from mnistxai.xai.groups import (
    count_players,
    grid_labels,
    groups_option,
    mask_members,
    superpixels,
)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return data.load("mnist", "test", mnist_dir)[0][:16]


def test_grid_patches_tile_the_image_and_the_last_ones_are_cropped():
    for patch, side, last in [(4, 7, 4), (7, 4, 7), (5, 6, 3), (14, 2, 14), (28, 1, 28)]:
        labels = grid_labels(patch)
        assert labels.dtype == np.int32 and labels.shape == (28, 28)
        counts = np.bincount(labels.ravel())
        assert len(counts) == side**2 == count_players("grid", patch)
        assert counts[0] == patch * patch and counts[-1] == last * last, patch
        # row-major: label = row block * side + column block
        assert labels[27, 0] == (side - 1) * side and labels[0, 27] == side - 1


def test_superpixels_partition_each_digit_and_follow_its_strokes(digits):
    sp = superpixels(digits, 4)
    assert sp.shape == (16, 28, 28) and sp.dtype == np.int32
    for lab in sp:  # labels 0..n-1, every one used, at most one per seed
        used = np.unique(lab)
        np.testing.assert_array_equal(used, np.arange(len(used)))
        assert 20 <= len(used) <= 49
    np.testing.assert_array_equal(superpixels(digits.astype(np.float32) / 255, 4), sp)
    np.testing.assert_array_equal(superpixels(digits[3], 4)[0], sp[3])  # per image

    def within(img, lab):  # pixel variance left inside the segments
        return sum(((img[lab == k] - img[lab == k].mean()) ** 2).sum() for k in np.unique(lab))

    img = digits.astype(np.float64) / 255
    for patch in (4, 7):
        seg = np.mean([within(i, lab) for i, lab in zip(img, superpixels(digits, patch))])
        grid = np.mean([within(i, grid_labels(patch)) for i in img])
        assert seg < 0.3 * grid, (patch, seg, grid)  # SLIC cuts along stroke edges


def test_masks_are_checked_and_an_absent_label_is_an_empty_player():
    mask = grid_labels(14)
    m = mask_members("groups", mask)
    assert m.shape == (1, 4, 28, 28) and m.dtype == bool and (m.sum(1) == 1).all()
    gap = np.where(mask == 2, 3, mask)  # labels 0, 1, 3: player 2 has no pixel
    assert mask_members("groups", np.stack([gap, mask])).shape == (2, 4, 28, 28)
    assert count_players(gap, 4) == 4
    assert groups_option("groups", "superpixels") == "superpixels"
    bad = [
        ("pixels", "unknown groups"),
        (mask.astype(np.float32), "integer mask"),
        (mask.astype(bool), "integer mask"),
        (mask - 1, r"\[0, 783\]"),
        (np.full((28, 28), 784), r"\[0, 783\]"),
        (mask[:27], "shape"),
        (np.zeros((2, 3, 28, 28), int), "shape"),
    ]
    for value, match in bad:
        with pytest.raises(InputError, match=match):
            groups_option("groups", value)


def test_a_mask_acts_as_its_groups_in_the_methods(random_classifier, digits):
    x = digits[:3]
    grid = explain("exact_shapley", random_classifier, x, patch=14)
    masked = explain("exact_shapley", random_classifier, x, groups=grid_labels(14))
    np.testing.assert_array_equal(masked.attributions, grid.attributions)
    # one mask per image, n = 5 for all. Image 1's labels have a gap (0, 1, 3, 4): its player 2
    # is empty, a null player, and gets 0; images 0 and 2 leave player 4 empty. Adding a null
    # player changes no one else's Shapley value.
    gap = np.where(grid_labels(14) >= 2, grid_labels(14) + 1, grid_labels(14))
    per_image = np.stack([grid_labels(14), gap, grid_labels(14)])
    res = explain("exact_shapley", random_classifier, x, groups=per_image)
    values = np.asarray(res.extras["group_values"])
    ref = np.asarray(grid.extras["group_values"])
    assert values.shape == (3, 5) and values[1, 2] == 0 and (values[[0, 2], 4] == 0).all()
    np.testing.assert_allclose(values[1, [0, 1, 3, 4]], ref[1], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(values[[0, 2], :4], ref[[0, 2]], rtol=1e-5, atol=1e-9)
    with pytest.raises(InputError, match="1 or 3 masks"):
        explain("exact_shapley", random_classifier, x, groups=per_image[:2])


def test_superpixel_players_in_a_method_are_the_public_segmentation(random_classifier, digits):
    x = digits[:3]
    res = explain("exact_shapley", random_classifier, x, groups="superpixels", patch=7)
    labels = np.asarray(res.extras["labels"])
    for lab, ref in zip(labels, superpixels(x, 7)):  # the same cells, numbered with gaps
        np.testing.assert_array_equal(np.unique(lab, return_inverse=True)[1].reshape(28, 28), ref)
    values = np.asarray(res.extras["group_values"])
    for lab, v in zip(labels, values):
        assert (v[np.setdiff1d(np.arange(16), lab)] == 0).all()  # empty seeds are null players
    scale = np.abs(values).sum(-1).max()
    assert np.abs(np.asarray(res.extras["efficiency_gap"])).max() <= 1e-5 * scale
    # the map carries each pixel's group value
    np.testing.assert_array_equal(
        res.attributions, np.take_along_axis(values, labels.reshape(3, -1), 1).reshape(3, 28, 28)
    )
    assert jax.numpy.asarray(res.attributions).dtype == np.float32
