"""Feature deviation from normal units: statistics match numpy, the deviation follows its
formula, a missing part stands out where the pixel difference to its reconstruction does not,
and the statistics survive storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.features.backbones import DiscriminatorBackbone, MobileNetBackbone
from vqganodip_pipeline.localize.feature_deviation import FeatureStatistics, fit_feature_statistics
from vqganodip_pipeline.localize.mask import NormalVariation, normal_variation
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import LocalizeConfig, image_metrics, metric_column_names
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.tensors import images_to_tensor
from vqganodip_pipeline.model.vqgan import build_discriminator

OUTPUTS = {
    "mse": 0.0,
    "quant_loss": 0.0,
    "codes_used": 1.0,
    "disc_logit_x": 0.0,
    "disc_logit_xhat": 0.0,
}


@pytest.fixture(scope="module")
def backbone() -> DiscriminatorBackbone:
    config, _ = vqgan_preset("tiny")
    return DiscriminatorBackbone(build_discriminator(config, seed=0))


@pytest.fixture(scope="module")
def normals() -> np.ndarray:
    layout = make_layout(0)
    return np.stack([render_unit(layout, size=64, seed=100 + i)[0] for i in range(12)])


def test_statistics_match_numpy_and_batches_do_not_matter(backbone, normals) -> None:
    stats = fit_feature_statistics(backbone, normals, batch_size=5)
    with torch.no_grad():
        maps = backbone.feature_maps(images_to_tensor(normals))
    assert stats.backbone == backbone.name and len(stats.mean) == len(maps)
    for mean, var, m in zip(stats.mean, stats.var, maps, strict=True):
        values = m.double().numpy()
        np.testing.assert_allclose(mean, values.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, values.var(axis=0), rtol=1e-4, atol=1e-6)
    other = fit_feature_statistics(backbone, normals, batch_size=12)
    for a, b in zip(stats.var, other.var, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_deviation_follows_the_formula(backbone, normals) -> None:
    stats = fit_feature_statistics(backbone, normals, shrinkage=0.25)
    x = normals[0]
    features = image_features(backbone, x, x)
    maps = stats.deviation_maps(features.x, backbone.name)
    for deviation, f, mean, var in zip(maps, features.x, stats.mean, stats.var, strict=True):
        f = f.numpy()
        expected = ((f - mean) ** 2 / (var + 0.25 * var.mean())).mean(axis=0)
        np.testing.assert_allclose(deviation, expected, rtol=1e-4)
        assert deviation.shape == f.shape[1:]
    # the mean normal features deviate by exactly zero
    mean_features = [torch.from_numpy(m.astype(np.float64)) for m in stats.mean]
    for deviation in stats.deviation_maps(mean_features, backbone.name):
        assert np.abs(deviation).max() < 1e-9


@pytest.fixture(scope="module")
def normals_128() -> np.ndarray:
    layout = make_layout(0)
    return np.stack([render_unit(layout, size=128, seed=100 + i)[0] for i in range(16)])


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
    expected = set(metric_column_names(perceptual=False, feature_maps=len(stats.mean)))
    assert set(result.metrics) == expected

    restored = NormalVariation.from_arrays(full.to_arrays())
    assert restored.features is not None and restored.features.backbone == stats.backbone
    for a, b in zip(restored.features.var, stats.var, strict=True):
        np.testing.assert_array_equal(a, b)
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
