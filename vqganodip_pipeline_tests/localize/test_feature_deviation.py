"""Feature deviation from normal units: statistics match numpy, the deviation follows its
formula, a missing part stands out where the pixel difference to its reconstruction does not,
and the statistics survive storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.features.backbones import MobileNetBackbone
from vqganodip_pipeline.localize.feature_deviation import (
    FeatureStatistics,
    fit_feature_statistics,
    joint_feature_map,
)
from vqganodip_pipeline.localize.mask import NormalVariation, normal_variation
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import LocalizeConfig, image_metrics, metric_column_names
from vqganodip_pipeline.model.tensors import images_to_tensor

OUTPUTS = {
    "mse": 0.0,
    "quant_loss": 0.0,
    "codes_used": 1.0,
    "disc_logit_x": 0.0,
    "disc_logit_xhat": 0.0,
}


@pytest.fixture(scope="module")
def normals() -> np.ndarray:
    layout = make_layout(0)
    return np.stack([render_unit(layout, size=64, seed=100 + i)[0] for i in range(12)])


def _numpy_reference(maps: torch.Tensor, shrinkage: float | str) -> tuple[np.ndarray, np.ndarray]:
    """Mean (C, h, w) and precision (h * w, C, C) position by position, with numpy's covariance
    and scikit-learn's Ledoit-Wolf intensity."""
    values = maps.double().numpy()
    n, channels = values.shape[:2]
    vectors = values.reshape(n, channels, -1)
    covariances = [
        np.cov(vectors[:, :, p], rowvar=False, bias=True) for p in range(vectors.shape[2])
    ]
    scales = np.array([np.trace(c) / channels for c in covariances])
    floor = 0.01 * scales.mean()
    matrices = []
    for p, covariance in enumerate(covariances):
        lam = ledoit_wolf_shrinkage(vectors[:, :, p]) if shrinkage == "ledoit_wolf" else shrinkage
        matrix = (1 - lam) * covariance + lam * scales[p] * np.eye(channels)
        matrices.append(matrix + max(floor - scales[p], 0.0) * np.eye(channels))
    return values.mean(axis=0), np.linalg.inv(np.stack(matrices))


@pytest.mark.parametrize("shrinkage", ["ledoit_wolf", 0.2])
def test_statistics_match_numpy_and_sklearn(backbone, normals, shrinkage) -> None:
    stats = fit_feature_statistics(backbone, normals, batch_size=5, shrinkage=shrinkage)
    with torch.no_grad():
        maps = backbone.feature_maps(images_to_tensor(normals))
    # the joint map of the two maps comes last (all channels: fewer than joint_channels)
    assert stats.map_names == [
        "feature_deviation_0",
        "feature_deviation_1",
        "feature_deviation_joint",
    ]
    assert len(stats.joint_channels) == sum(m.shape[1] for m in maps)
    maps = [
        *maps,
        joint_feature_map(maps, backbone.strides, stats.joint_stride, stats.joint_channels),
    ]
    assert stats.backbone == backbone.name and len(stats.mean) == len(maps)
    assert stats.count == len(normals)
    for mean, precision, m in zip(stats.mean, stats.precision, maps, strict=True):
        expected_mean, expected_precision = _numpy_reference(m, shrinkage)
        np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
        scale = np.abs(expected_precision).max()
        np.testing.assert_allclose(precision, expected_precision, rtol=1e-3, atol=1e-5 * scale)
    # image sets streamed from a generator (calibration, then training units chunk by chunk)
    # equal one concatenated set
    chunks = (normals[start : start + 5] for start in range(0, len(normals), 5))
    split = fit_feature_statistics(backbone, chunks, batch_size=3, shrinkage=shrinkage)
    for a, b in zip(stats.precision, split.precision, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())
    assert split.count == stats.count and split.mean_shrinkage == pytest.approx(
        stats.mean_shrinkage
    )


def test_deviation_follows_the_formula(backbone, normals) -> None:
    stats = fit_feature_statistics(backbone, normals, shrinkage=0.25)
    x = normals[0]
    features = image_features(backbone, x, x)
    maps = stats.deviation_maps(features.x, backbone.name)
    joint = joint_feature_map(
        [f[None] for f in features.x], backbone.strides, stats.joint_stride, stats.joint_channels
    )[0]
    assert list(maps) == stats.map_names
    for deviation, f, mean, precision in zip(
        maps.values(), [*features.x, joint], stats.mean, stats.precision, strict=True
    ):
        f = f.numpy()
        channels, height, width = f.shape
        expected = np.empty((height, width))
        for i in range(height):
            for j in range(width):
                d = f[:, i, j] - mean[:, i, j]
                expected[i, j] = d @ precision[i * width + j].astype(np.float64) @ d / channels
        np.testing.assert_allclose(deviation, expected, rtol=1e-5)  # float32 arithmetic
        assert deviation.shape == f.shape[1:] and deviation.min() >= 0
    # the mean normal features deviate by exactly zero, in the joint map too (pooling and
    # repeating are linear, so the joint map of the mean maps is the mean joint map)
    mean_features = [torch.from_numpy(m.astype(np.float64)) for m in stats.mean[:2]]
    for deviation in stats.deviation_maps(mean_features, backbone.name).values():
        assert np.abs(deviation).max() < 1e-6


def test_full_covariance_sees_a_change_of_channel_correlation() -> None:
    """Two channels that always move together on normal units: a unit where they move apart
    stays within each channel's own range (a diagonal model sees nothing) but is far in the
    Mahalanobis sense."""

    class Identity:
        name = "identity"
        strides = (1,)

        def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x[:, :2]]

    rng = np.random.default_rng(0)
    level = rng.uniform(0, 255, size=(200, 1, 1, 1)).round().astype(np.uint8)
    normals = np.broadcast_to(level, (200, 1, 1, 3)).copy()  # every channel the same level
    stats = fit_feature_statistics(Identity(), normals, shrinkage=0.01)
    together = torch.tensor([[[[0.5]], [[0.5]]]], dtype=torch.float64)[0]
    apart = torch.tensor([[[[0.5]], [[-0.5]]]], dtype=torch.float64)[0]
    assert stats.map_names == ["feature_deviation_0"]  # one map: no joint map
    near = stats.deviation_maps([together], "identity")["feature_deviation_0"].max()
    far = stats.deviation_maps([apart], "identity")["feature_deviation_0"].max()
    assert far > 20 * near


def missing_part_scores(backbone, normals: np.ndarray) -> tuple[list[float], list[float]]:
    """Max feature deviation of six unseen units, without and with a missing part, each
    "reconstructed" perfectly so that the pixel difference sees nothing."""
    layout = make_layout(0)
    normal = NormalVariation(weights=None, features=fit_feature_statistics(backbone, normals))
    config = LocalizeConfig(p=10, n=2, alpha=4, q=8, orb=False)

    def score(x: np.ndarray) -> float:
        result = image_metrics(x, x, image_features(backbone, x, x), OUTPUTS, normal, config)
        assert result.metrics["image__delta__max__raw"] == 0.0
        return result.metrics["image__feature_deviation_0__max__standardized"]

    size = normals.shape[1]
    good = [score(render_unit(layout, size=size, seed=200 + i)[0]) for i in range(6)]
    bad = [
        score(
            render_unit(layout, size=size, seed=200 + i, defect="missing", defect_size="large")[0]
        )
        for i in range(6)
    ]
    return good, bad


def test_missing_part_raises_the_deviation_of_its_unit(backbone, normals_128) -> None:
    good, bad = missing_part_scores(backbone, normals_128)
    assert all(b > g for g, b in zip(good, bad, strict=True))


def test_missing_part_stands_out_among_unseen_units_with_imagenet_features(
    mobilenet_weights, normals_128
) -> None:
    good, bad = missing_part_scores(MobileNetBackbone(mobilenet_weights), normals_128)
    # unit 200's missing part is the faintest (its largest pixel change is 68 gray levels)
    assert sum(b > max(good) for b in bad) >= 5
    assert all(b > g for g, b in zip(good, bad, strict=True))


def test_columns_storage_and_clear_errors(backbone, normals) -> None:
    stats = fit_feature_statistics(backbone, normals)
    reconstructions = normals[::-1].copy()
    full = normal_variation(normals, reconstructions)
    full = NormalVariation(full.weights, full.mean, full.std, full.sigma, full.eps, stats)
    x = normals[0]
    config = LocalizeConfig(p=10, n=2, alpha=4, q=8)
    result = image_metrics(
        x, normals[1], image_features(backbone, x, normals[1]), OUTPUTS, full, config
    )
    expected = set(metric_column_names(feature_maps=len(stats.strides), knn=False))
    assert "image__feature_deviation_joint__max__standardized" in expected
    assert set(result.metrics) == expected

    restored = NormalVariation.from_arrays(full.to_arrays())
    assert restored.features is not None and restored.features.backbone == stats.backbone
    assert restored.features.map_names == stats.map_names
    np.testing.assert_array_equal(restored.features.joint_channels, stats.joint_channels)
    assert restored.features.count == stats.count
    for a, b in zip(restored.features.precision, stats.precision, strict=True):
        np.testing.assert_array_equal(a, b)
    # statistics stored by earlier versions (diagonal; full covariance without a joint map)
    diagonal = {k: v for k, v in full.to_arrays().items() if "precision" not in k}
    no_joint = {k: v for k, v in full.to_arrays().items() if k != "feature_strides"}
    for stored in (diagonal, no_joint):
        with pytest.raises(ValueError, match="rematerialize the weighting mask"):
            NormalVariation.from_arrays(stored)
    assert (
        NormalVariation.from_arrays(normal_variation(normals, reconstructions).to_arrays()).features
        is None
    )

    with pytest.raises(ValueError, match="refit the normal variation"):
        stats.deviation_maps(image_features(backbone, x, x).x, "mobilenet_v2[3,6]")
    with pytest.raises(ValueError, match="image size differs"):
        small = normals[0, :32, :32]
        stats.deviation_maps(image_features(backbone, small, small).x, backbone.name)
    with pytest.raises(ValueError, match="at least 2 normal images"):
        fit_feature_statistics(backbone, normals[:1])
    assert isinstance(FeatureStatistics.from_arrays({}), type(None))


def test_joint_map_brings_every_map_to_one_grid_and_caps_its_channels() -> None:
    rng = np.random.default_rng(3)
    fine = torch.as_tensor(rng.normal(size=(2, 3, 8, 8)))  # stride 2
    middle = torch.as_tensor(rng.normal(size=(2, 4, 4, 4)))  # stride 4
    coarse = torch.as_tensor(rng.normal(size=(2, 5, 2, 2)))  # stride 8
    joint = joint_feature_map([fine, middle, coarse], (2, 4, 8), 4, np.arange(12))
    assert joint.shape == (2, 12, 4, 4)
    pooled = fine.numpy().reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(joint[:, :3].numpy(), pooled)
    np.testing.assert_array_equal(joint[:, 3:7].numpy(), middle.numpy())
    repeated = coarse.numpy().repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_array_equal(joint[:, 7:].numpy(), repeated)
    subset = joint_feature_map([fine, middle, coarse], (2, 4, 8), 4, np.array([0, 5, 11]))
    np.testing.assert_array_equal(subset.numpy(), joint[:, [0, 5, 11]].numpy())
    with pytest.raises(ValueError, match="do not nest"):
        joint_feature_map([fine, middle], (2, 3), 4, np.arange(7))


def test_joint_channels_are_a_seeded_subset(backbone, normals) -> None:
    capped = fit_feature_statistics(backbone, normals, joint_channels=5)
    again = fit_feature_statistics(backbone, normals, joint_channels=5)
    assert capped.joint_channels is not None and len(capped.joint_channels) == 5
    assert np.all(np.diff(capped.joint_channels) > 0)
    np.testing.assert_array_equal(capped.joint_channels, again.joint_channels)
    assert capped.mean[-1].shape[0] == 5 and capped.precision[-1].shape[1:] == (5, 5)
    none = fit_feature_statistics(backbone, normals, joint_channels=0)
    assert none.map_names == ["feature_deviation_0", "feature_deviation_1"]
