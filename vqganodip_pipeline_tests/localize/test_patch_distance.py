"""Patch perceptual distances: estimators against scipy references, fast path against the
naive path and against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from vqganodip_pipeline.localize.candidates import zoom_out_and_shift
from vqganodip_pipeline.localize.patch_distance import (
    _frechet_from_samples,
    candidate_regions,
    cell_ranges,
    image_features,
    patch_distances_fast,
    patch_distances_regions,
    patch_distances_resized,
    select_top_q,
)


class AvgPoolBackbone:
    """A purely local 'backbone': average pooling, so crops and whole images agree."""

    def __init__(self, strides: tuple[int, ...] = (4, 8)) -> None:
        self.strides = strides
        self.name = "avgpool"

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.avg_pool2d(torch.cat([x, x**2], 1), s) for s in self.strides]


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.cov(a, rowvar=False, bias=True)
    cov_b = np.cov(b, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))


@pytest.mark.parametrize("n, c", [(9, 5), (4, 12), (30, 6)])
def test_frechet_matches_scipy_sqrtm(n: int, c: int) -> None:
    rng = np.random.default_rng(n * c)
    a = rng.normal(size=(3, n, c))
    b = rng.normal(size=(3, n, c)) * 1.5 + 0.3
    ours = _frechet_from_samples(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    expected = [scipy_frechet(a[i], b[i]) for i in range(3)]
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-8)


def _images(seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    x_hat = x.copy()
    x_hat[20:28, 30:40] = 255 - x_hat[20:28, 30:40]
    return x, x_hat


def test_fast_pooled_and_frechet_equal_brute_force() -> None:
    x, x_hat = _images()
    backbone = AvgPoolBackbone()
    features = image_features(backbone, x, x_hat)
    patches = zoom_out_and_shift(np.array([[24, 34], [5, 60]]), (64, 64), n=3, alpha=4)
    pooled = patch_distances_fast(features, patches, "pooled")
    frechet = patch_distances_fast(features, patches, "frechet")
    for k, patch in enumerate(patches):
        expect_pooled = expect_frechet = 0.0
        for fx, fy, stride in zip(features.x, features.x_hat, features.strides, strict=True):
            r0, r1, c0, c1 = (int(v[0]) for v in cell_ranges(patch[None], stride, fx.shape[1:]))
            a = fx[:, r0:r1, c0:c1].reshape(fx.shape[0], -1).T.numpy()
            b = fy[:, r0:r1, c0:c1].reshape(fy.shape[0], -1).T.numpy()
            expect_pooled += np.sum((a.mean(0) - b.mean(0)) ** 2) / fx.shape[0]
            expect_frechet += max(scipy_frechet(a, b), 0.0) / fx.shape[0]
        assert pooled[k] == pytest.approx(expect_pooled, rel=1e-9, abs=1e-12)
        assert frechet[k] == pytest.approx(expect_frechet, rel=1e-6, abs=1e-9)
    assert (frechet >= pooled - 1e-9).all()  # covariance terms are non-negative


def test_fast_equals_naive_for_a_local_backbone_on_aligned_patches() -> None:
    x, x_hat = _images(1)
    backbone = AvgPoolBackbone(strides=(4,))
    patches = np.array([[16, 28, 8], [20, 32, 4], [0, 0, 16], [48, 48, 16]])
    fast = patch_distances_fast(image_features(backbone, x, x_hat), patches)
    for size in (4, 8, 16):
        subset = patches[patches[:, 2] == size]
        naive = patch_distances_resized(backbone, x, x_hat, subset, input_size=size)
        np.testing.assert_allclose(naive, fast[patches[:, 2] == size], rtol=1e-9, atol=1e-12)


def test_identical_images_give_zero_distances_and_duplicates_share_values() -> None:
    x, _ = _images(2)
    features = image_features(AvgPoolBackbone(), x, x)
    patches = zoom_out_and_shift(np.array([[10, 10], [10, 10]]), (64, 64), n=2, alpha=4)
    for estimator in ("pooled", "frechet"):
        values = patch_distances_fast(features, patches, estimator)
        assert np.all(np.isfinite(values)) and np.allclose(values, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown estimator"):
        patch_distances_fast(features, patches, "mean")


def test_top_q_selects_distinct_highest_patches_and_hits_the_defect() -> None:
    x, x_hat = _images(3)
    features = image_features(AvgPoolBackbone(), x, x_hat)
    rng = np.random.default_rng(0)
    pixels = np.concatenate([np.array([[24, 35]] * 3), rng.integers(0, 64, (10, 2))])
    patches = zoom_out_and_shift(pixels, (64, 64), n=2, alpha=4)
    distances = patch_distances_fast(features, patches)
    chosen = select_top_q(distances, patches, q=5)
    assert len({tuple(p) for p in patches[chosen]}) == 5
    assert np.all(np.diff(distances[chosen]) <= 0)
    top, left, size = patches[chosen[0]]
    assert top < 28 and top + size > 20 and left < 40 and left + size > 30


def test_candidate_regions_cover_every_context_box_on_the_alignment_grid() -> None:
    patches = np.array([[10, 10, 4], [14, 12, 8], [200, 220, 16], [250, 0, 4]])
    regions, owner = candidate_regions(patches, (256, 240), context=8, align=8)
    # the first two patches share one crop, the two far ones get their own
    assert len(regions) == 3 and owner[0] == owner[1] and len(set(owner.tolist())) == 3
    for (top, left, size), k in zip(patches, owner, strict=True):
        r_top, r_left, r_bottom, r_right = regions[k]
        assert r_top <= max(top - 8, 0) and r_left <= max(left - 8, 0)
        assert r_bottom >= min(top + size + 8, 256) and r_right >= min(left + size + 8, 240)
    assert np.all(regions[:, :2] % 8 == 0)
    assert np.all((regions[:, 2] % 8 == 0) | (regions[:, 2] == 256))
    assert np.all((regions[:, 3] % 8 == 0) | (regions[:, 3] == 240))
    # hand-made case: patch (10, 10, 4), context 8 -> px rows 2..22 -> cells 0..2 -> px 0..24
    lone, _ = candidate_regions(patches[:1], (256, 240), context=8, align=8)
    np.testing.assert_array_equal(lone, [[0, 0, 24, 24]])


@pytest.mark.parametrize("estimator", ["pooled", "frechet"])
def test_region_path_equals_whole_image_path_for_a_local_backbone(estimator: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    x_hat = x.copy()
    x_hat[20:28, 30:40] = 255 - x_hat[20:28, 30:40]
    x_hat[130:136, 120:150] //= 2
    backbone = AvgPoolBackbone()
    patches = zoom_out_and_shift(np.array([[24, 34], [24, 35], [133, 135]]), (160, 160), 3, 4)
    regions, _ = candidate_regions(np.unique(patches, axis=0), (160, 160), 16, 8)
    assert len(regions) == 2  # the two defects are scored on two separate crops
    whole = patch_distances_fast(image_features(backbone, x, x_hat), patches, estimator)
    crops = patch_distances_regions(backbone, x, x_hat, patches, estimator, context=16)
    np.testing.assert_allclose(crops, whole, rtol=1e-9, atol=1e-12)
    assert crops.max() > 0


def test_region_path_falls_back_to_one_pass_when_crops_cover_the_image() -> None:
    calls: list[tuple[int, ...]] = []

    class Recording(AvgPoolBackbone):
        def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
            calls.append(tuple(x.shape[-2:]))
            return super().feature_maps(x)

    x, x_hat = _images(5)
    spread = np.array([[r, c] for r in (4, 32, 60) for c in (4, 32, 60)])
    patches = zoom_out_and_shift(spread, (64, 64), n=2, alpha=4)
    values = patch_distances_regions(Recording(), x, x_hat, patches, context=16)
    assert calls == [(64, 64)]
    expected = patch_distances_fast(image_features(AvgPoolBackbone(), x, x_hat), patches)
    np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-12)
