"""Candidate geometry, top-p pixels and the weighting mask on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.localize.candidates import (
    crop_patches,
    hit_defects,
    patch_keys,
    patch_stacks,
    top_p_pixels,
    unique_patches,
    zoom_out_and_shift,
)
from vqganodip_pipeline.localize.mask import difference_image, weighting_mask


def test_top_p_returns_largest_values_with_raster_tie_break() -> None:
    diff = np.zeros((5, 6))
    diff[1, 2] = 0.9
    diff[3, 4] = 0.5
    diff[0, 5] = 0.5
    diff[4, 0] = 0.5
    pixels = top_p_pixels(diff, 3)
    assert pixels.tolist() == [[1, 2], [0, 5], [3, 4]]
    assert top_p_pixels(diff, 100).shape == (30, 2)
    with pytest.raises(ValueError, match="p must be >= 1"):
        top_p_pixels(diff, 0)


def test_top_p_matches_a_full_sort_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    diff = rng.random((40, 50))
    pixels = top_p_pixels(diff, 100)
    expected = np.argsort(-diff.ravel(), kind="stable")[:100]
    np.testing.assert_array_equal(np.ravel_multi_index(pixels.T, diff.shape), expected)


def test_zoom_out_and_shift_geometry_in_the_interior() -> None:
    patches = zoom_out_and_shift(np.array([[50, 60]]), (128, 128), n=4, alpha=4)
    assert patches.shape == (36, 3)
    by_size = patches.reshape(4, 9, 3)
    for k, size in enumerate((4, 8, 12, 16)):
        tiles = by_size[k]
        assert (tiles[:, 2] == size).all()
        centre = tiles[4]
        # the centre tile holds the pixel at offset size // 2
        assert (centre[0], centre[1]) == (50 - size // 2, 60 - size // 2)
        # neighbours are adjacent tiles: shifted by one patch side, raster order
        for index, (dy, dx) in enumerate([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]):
            assert tiles[index, 0] == centre[0] + dy * size
            assert tiles[index, 1] == centre[1] + dx * size


def test_custom_shift_and_border_clipping_keep_patch_size() -> None:
    patches = zoom_out_and_shift(np.array([[1, 126]]), (128, 128), n=2, alpha=4, shift=2)
    assert patches.shape == (18, 3)
    tops, lefts, sizes = patches.T
    assert (tops >= 0).all() and (lefts >= 0).all()
    assert (tops + sizes <= 128).all() and (lefts + sizes <= 128).all()
    # top-left neighbour of the 8 px patch at the top-right corner is pushed inside
    assert patches[9].tolist() == [0, 128 - 8, 8]
    interior = zoom_out_and_shift(np.array([[60, 60]]), (128, 128), n=1, alpha=4, shift=2)
    assert interior[0].tolist() == [60 - 2 - 2, 60 - 2 - 2, 4]
    with pytest.raises(ValueError, match="does not fit"):
        zoom_out_and_shift(np.array([[1, 1]]), (12, 12), n=4, alpha=4)


def test_unique_and_stacks_reconstruct_the_crops() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    patches = zoom_out_and_shift(np.array([[10, 10], [10, 10], [20, 5]]), (32, 32), n=2, alpha=4)
    unique, inverse = unique_patches(patches)
    np.testing.assert_array_equal(unique[inverse], patches)
    assert len(unique) <= len(patches) // 3 * 2
    crops = crop_patches(image, unique)
    for size, (index, stack) in patch_stacks(image, unique).items():
        assert stack.shape == (len(index), size, size, 3)
        for i, crop in zip(index, stack, strict=True):
            np.testing.assert_array_equal(crop, crops[i])


def test_patch_keys_sort_and_deduplicate_like_numpy_rows() -> None:
    # unique_patches and select_top_q read these keys instead of np.unique(axis=0): the same
    # unique rows, order, first occurrences and inverse, on real candidate sets
    from vqganodip_pipeline.localize.patch_distance import select_top_q

    rng = np.random.default_rng(3)
    for _ in range(20):
        pixels = rng.integers(0, 96, (40, 2))
        patches = zoom_out_and_shift(pixels, (96, 96), n=4, alpha=4)
        rows, first, inverse = np.unique(patches, axis=0, return_index=True, return_inverse=True)
        unique, ours = unique_patches(patches)
        np.testing.assert_array_equal(unique, rows)
        np.testing.assert_array_equal(ours, inverse.reshape(-1))
        keys = patch_keys(patches)
        np.testing.assert_array_equal(np.unique(keys, return_index=True)[1], first)
        distances = rng.integers(0, 5, len(patches)).astype(float)  # many ties
        chosen = select_top_q(distances, patches, 25)
        reference = np.sort(first)[np.lexsort((np.sort(first), -distances[np.sort(first)]))]
        np.testing.assert_array_equal(chosen, reference[:25])
    with pytest.raises(ValueError, match=">= 0"):
        patch_keys(np.array([[0, -1, 4]]))


def test_hit_defects_counts_components_touched_by_patches() -> None:
    mask = np.zeros((32, 32), bool)
    mask[2:4, 2:4] = True
    mask[20:25, 20:22] = True
    patches = np.array([[18, 18, 4]])
    assert hit_defects(patches, mask) == (2, 1)
    assert hit_defects(np.array([[0, 0, 4], [22, 20, 4]]), mask) == (2, 2)
    assert hit_defects(patches, np.zeros((32, 32), bool)) == (0, 0)


def test_difference_and_weighting_mask() -> None:
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x_hat = x.copy()
    x_hat[0, 1, 1] = [255, 0, 0]
    x_hat[1, 1, 1] = [255, 255, 255]
    x_hat[1, 2, 2] = [51, 51, 51]
    delta = difference_image(x, x_hat)
    assert delta.shape == (2, 4, 4)
    assert delta[0, 1, 1] == pytest.approx(1 / 3)
    assert delta[1, 2, 2] == pytest.approx(0.2)
    mask = weighting_mask(delta)
    mean = delta.mean(axis=0)
    expected = 1 - (mean - mean.min()) / (mean.max() - mean.min())
    np.testing.assert_allclose(mask, expected, rtol=1e-6)
    assert mask[1, 1] == 0.0 and mask[0, 0] == 1.0
    assert (weighting_mask(np.zeros((3, 4, 4))) == 1).all()
    with pytest.raises(ValueError, match="shapes differ"):
        difference_image(x[0], x_hat[0, :3])


def test_normal_variation_standardizes_in_units_of_normal_spread() -> None:
    from scipy.ndimage import gaussian_filter

    from vqganodip_pipeline.localize.mask import NormalVariation, normal_variation

    rng = np.random.default_rng(3)
    normals = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    recons = np.clip(normals.astype(int) + rng.integers(-9, 10, normals.shape), 0, 255).astype(
        np.uint8
    )
    stats = normal_variation(normals, recons, sigma=1.0, eps=0.01)
    smoothed = [
        np.abs(gaussian_filter(a.astype(float) - b, (1, 1, 0), mode="nearest")).mean(-1) / 255
        for a, b in zip(normals, recons, strict=True)
    ]
    np.testing.assert_allclose(stats.mean, np.mean(smoothed, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.std, np.std(smoothed, 0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats.weights, weighting_mask(difference_image(normals, recons)))
    image, recon = normals[0].copy(), recons[0].copy()
    image[4:8, 4:8] = 255 - recon[4:8, 4:8]  # a defect the normal units never show
    z = stats.standardize(image, recon)
    expected = np.maximum(
        (difference_image(image, recon, 1.0) - stats.mean) / (stats.std + 0.01), 0
    )
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    assert z[5, 5] > 5 * np.median(z)
    restored = NormalVariation.from_arrays(stats.to_arrays())
    np.testing.assert_array_equal(restored.weights, stats.weights)
    np.testing.assert_allclose(restored.std, stats.std, rtol=1e-6)
    assert restored.sigma == 1.0 and restored.eps == 0.01
    only_w = NormalVariation.from_arrays(
        normal_variation(normals, recons, standardize=False).to_arrays()
    )
    assert only_w.mean is None and only_w.weights is not None
    with pytest.raises(ValueError, match="no normal-variation statistics"):
        only_w.standardize(image, recon)
