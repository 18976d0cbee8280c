"""Nearest-neighbour distances to a coreset memory bank: distances match scipy, the coreset
is the greedy k-centre choice, a missing part stands out, a shifted normal unit does not (no
fixed position needed), and the bank survives storage and feeds the metric row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.features.backbones import MobileNetBackbone
from vqganodip_pipeline.localize.feature_deviation import fit_feature_statistics
from vqganodip_pipeline.localize.mask import NormalVariation
from vqganodip_pipeline.localize.nearest_neighbour import (
    MemoryBank,
    embed,
    fit_memory_bank,
    greedy_coreset,
    nearest_distances,
)
from vqganodip_pipeline.localize.patch_distance import image_features, patch_means
from vqganodip_pipeline.metrics.table import LocalizeConfig, image_metrics, metric_column_names
from vqganodip_pipeline.model.tensors import images_to_tensor

OUTPUTS = {"mse": 0.0, "quant_loss": 0.0, "codes_used": 1.0}


@pytest.fixture(scope="module")
def normals(normals_128) -> np.ndarray:
    return normals_128


@pytest.fixture(scope="module")
def mobilenet(mobilenet_weights) -> MobileNetBackbone:
    return MobileNetBackbone(mobilenet_weights)


@pytest.fixture(scope="module")
def imagenet_bank(mobilenet, normals) -> MemoryBank:
    return fit_memory_bank(mobilenet, normals, size=2048, positions=256)


def test_nearest_distances_match_scipy_in_every_block() -> None:
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(1000, 24)).astype(np.float32)
    bank = rng.normal(size=(300, 24)).astype(np.float32)
    expected = cdist(queries, bank).min(axis=1)
    got = nearest_distances(torch.from_numpy(queries), torch.from_numpy(bank), block=128)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    # a query equal to a bank entry is at distance 0, not a small negative number's root
    same = nearest_distances(torch.from_numpy(bank[:5]), torch.from_numpy(bank))
    np.testing.assert_allclose(same.numpy(), 0.0, atol=1e-6)
    # queries 0.01 from a bank entry (d^2 ~ 1e-4 of |a|^2): the expansion alone would lose
    # ~10 % of such a distance to cancellation; they are recomputed from the nearest entry
    offsets = rng.normal(size=(50, 24)).astype(np.float32)
    near = bank[:50] + 0.01 * offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    got_near = nearest_distances(torch.from_numpy(near), torch.from_numpy(bank))
    np.testing.assert_allclose(got_near.numpy(), cdist(near, bank).min(axis=1), rtol=1e-3)
    with pytest.raises(ValueError, match="8 channels, the bank 24"):
        nearest_distances(torch.zeros(3, 8), torch.from_numpy(bank))


def _reference_coreset(points: np.ndarray, size: int, start: int) -> list[int]:
    chosen = [start]
    nearest = cdist(points, points[[start]]).ravel()
    for _ in range(size - 1):
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, cdist(points, points[[chosen[-1]]]).ravel())
    return sorted(chosen)


def test_greedy_coreset_is_the_k_centre_choice_and_covers_better_than_chance() -> None:
    rng = np.random.default_rng(1)
    # a dense cluster and a few outliers: chance misses the outliers, k-centre takes them
    points = np.concatenate([rng.normal(size=(500, 6)), 12.0 * np.eye(6)])
    chosen = greedy_coreset(torch.from_numpy(points), 20, seed=3)
    generator = torch.Generator().manual_seed(3)
    start = int(torch.randint(len(points), (1,), generator=generator))
    assert chosen.tolist() == _reference_coreset(points, 20, start)
    assert set(range(500, 506)) <= set(chosen.tolist())
    radius = cdist(points, points[chosen]).min(axis=1).max()
    random_subset = rng.choice(len(points), 20, replace=False)
    assert radius < cdist(points, points[random_subset]).min(axis=1).max()
    np.testing.assert_array_equal(greedy_coreset(torch.from_numpy(points[:7]), 20), np.arange(7))
    # wider than the projection: the choice is made on projected distances, still k-centre-like
    wide = np.concatenate([rng.normal(size=(300, 256)), 60.0 * np.eye(256)[:3]])
    assert {300, 301, 302} <= set(greedy_coreset(torch.from_numpy(wide), 10).tolist())


def test_bank_of_all_drawn_positions_gives_zero_distance_on_its_own_units(
    backbone, normals
) -> None:
    units = normals[:3]
    height = units.shape[1] // min(backbone.strides)
    bank = fit_memory_bank(backbone, units, size=10**6, positions=height * height, batch_size=2)
    assert bank.pool == 3 * height * height and len(bank.bank) == bank.pool and bank.units == 3
    distances = bank.distance_map(image_features(backbone, units[1], units[1]).x, backbone.name)
    assert distances.shape == (height, height)
    np.testing.assert_allclose(distances, 0.0, atol=5e-3)
    with torch.no_grad():
        embedding, stride = embed(
            backbone.feature_maps(images_to_tensor(units[:1])), backbone.strides
        )
    assert stride == min(backbone.strides)
    assert embedding.shape[1] == bank.bank.shape[1]


@pytest.mark.parametrize("defect", ["missing", "foreign_particle", "scratch", "solder_bridge"])
def test_defect_cells_move_away_from_the_bank_with_imagenet_features(
    mobilenet, imagenet_bank, defect: str
) -> None:
    """On six unseen units, the largest distance over the cells a defect covers rises against
    the same unit without it (measured here: x1.11 to x3.6)."""
    layout = make_layout(0)

    def distances(x: np.ndarray) -> np.ndarray:
        return imagenet_bank.distance_map(image_features(mobilenet, x, x).x, mobilenet.name)

    ratios = []
    for seed in range(200, 206):
        x, truth = render_unit(layout, size=128, seed=seed, defect=defect, defect_size="large")
        good = distances(render_unit(layout, size=128, seed=seed)[0])
        cells = truth.reshape(32, 4, 32, 4).any(axis=(1, 3))
        assert cells.any()
        ratios.append(distances(x)[cells].max() / good[cells].max())
    assert min(ratios) > 1.05 and float(np.median(ratios)) > 1.5


def test_shifted_normal_unit_stays_normal_where_position_statistics_do_not(
    mobilenet, imagenet_bank, normals
) -> None:
    """Free position: a normal unit moved by 16 px (a whole cell of both maps) is as close to
    the bank as before (the bank ignores where features were seen), while the per-position
    deviation explodes. Cells near the border are left out: the roll wraps the board there."""
    layout = make_layout(0)
    statistics = fit_feature_statistics(mobilenet, normals)
    inner = (slice(8, -8), slice(8, -8))

    def medians(x: np.ndarray) -> tuple[float, float]:
        features = image_features(mobilenet, x, x).x
        knn = imagenet_bank.distance_map(features, mobilenet.name)
        deviation = statistics.deviation_maps(features, mobilenet.name)["feature_deviation_0"]
        return float(np.median(knn[inner])), float(np.median(deviation[inner]))

    for seed in (300, 301):
        unit = render_unit(layout, size=128, seed=seed)[0]
        (knn, deviation) = medians(unit)
        (knn_moved, deviation_moved) = medians(np.roll(unit, (16, 16), axis=(0, 1)))
        assert knn_moved < 1.2 * knn
        assert deviation_moved > 20.0 * deviation


def test_bank_feeds_the_metric_row_and_survives_storage(backbone, normals) -> None:
    bank = fit_memory_bank(backbone, normals[:8], size=64, positions=16)
    normal = NormalVariation(weights=None, memory=bank)
    x, _ = render_unit(make_layout(0), size=128, seed=7, defect="missing", defect_size="large")
    config = LocalizeConfig(p=10, n=2, alpha=4, q=8, orb=False)
    features = image_features(backbone, x, normals[0])
    result = image_metrics(x, normals[0], features, OUTPUTS, normal, config)
    expected = metric_column_names(weighted=False, standardized=False, orb=False)
    assert set(result.metrics) == set(expected) - {
        "image__disc_logit_x__value__raw",
        "image__disc_logit_xhat__value__raw",
    }
    distance_map = bank.distance_map(features.x, backbone.name)
    assert result.metrics["image__knn__max__raw"] == pytest.approx(distance_map.max())
    patch_values = patch_means(distance_map, result.patches["raw"], bank.stride)
    assert result.metrics["patch__knn__mean__raw"] == pytest.approx(patch_values.mean())

    restored = NormalVariation.from_arrays(normal.to_arrays()).memory
    assert restored is not None
    np.testing.assert_array_equal(restored.bank, bank.bank)
    assert (
        restored.backbone,
        restored.strides,
        restored.stride,
        restored.units,
        restored.pool,
    ) == (
        bank.backbone,
        bank.strides,
        bank.stride,
        bank.units,
        bank.pool,
    )
    with pytest.raises(ValueError, match="refit the normal variation"):
        bank.distance_map(features.x, "another_backbone")
    with pytest.raises(ValueError, match="must be >= 1"):
        fit_memory_bank(backbone, normals[:2], size=0, positions=4)


def test_patch_means_match_pixel_sums() -> None:
    rng = np.random.default_rng(2)
    cells = rng.random((8, 8))
    patches = np.array([[0, 0, 8], [4, 12, 4], [30, 30, 2]])
    expected = [cells[0:2, 0:2].mean(), cells[1:2, 3:4].mean(), cells[7:8, 7:8].mean()]
    np.testing.assert_allclose(patch_means(cells, patches, stride=4), expected)
    pixel = rng.random((16, 16))
    np.testing.assert_allclose(patch_means(pixel, np.array([[2, 3, 5]])), pixel[2:7, 3:8].mean())
