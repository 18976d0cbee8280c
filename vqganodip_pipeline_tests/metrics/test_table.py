"""The metric table on synthetic boards: planted defects are found, degenerate inputs stay
finite, columns follow the documented names."""

from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.features.backbones import DiscriminatorBackbone
from vqganodip_pipeline.localize.candidates import hit_defects
from vqganodip_pipeline.localize.mask import NormalVariation
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import (
    LocalizeConfig,
    image_metrics,
    metric_column_names,
    patches_frame,
)
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.vqgan import build_discriminator

OUTPUTS = {
    "mse": 0.01,
    "quant_loss": 0.2,
    "codes_used": 12.0,
    "disc_logit_x": 0.3,
    "disc_logit_xhat": -0.1,
}


def flat_normal(size: int, weights: np.ndarray | None = None) -> NormalVariation:
    """Normal units that never differ from their reconstruction: W = 1, mean 0, std 0."""
    zeros = np.zeros((size, size))
    return NormalVariation(
        weights=np.ones((size, size)) if weights is None else weights, mean=zeros, std=zeros
    )


@pytest.fixture(scope="module")
def backbone() -> DiscriminatorBackbone:
    config, _ = vqgan_preset("tiny")
    return DiscriminatorBackbone(build_discriminator(config, seed=0))


@pytest.mark.parametrize("defect", ["missing", "solder_bridge", "foreign_particle"])
def test_planted_defect_is_among_the_selected_patches(backbone, defect: str) -> None:
    layout = make_layout(0)
    x, truth = render_unit(layout, size=128, seed=5, defect=defect, defect_size="small")
    # a perfect reconstruction of the normal unit: the defect is the only difference
    x_hat, _ = render_unit(layout, size=128, seed=5)
    config = LocalizeConfig(p=30, n=3, alpha=4, q=20)
    result = image_metrics(
        x, x_hat, image_features(backbone, x, x_hat), OUTPUTS, flat_normal(128), config
    )
    for variant in ("raw", "weighted", "standardized"):
        n_defects, n_hit = hit_defects(result.patches[variant], truth)
        assert n_defects >= 1 and n_hit == n_defects
    assert result.metrics["patch__fid__max__raw"] > 0
    assert result.metrics["pixel__top_p__max__raw"] > 0


def test_identical_reconstruction_gives_finite_documented_values(backbone) -> None:
    x, _ = render_unit(make_layout(0), size=64, seed=1)
    config = LocalizeConfig(p=10, n=2, alpha=4, q=8)
    result = image_metrics(x, x, image_features(backbone, x, x), OUTPUTS, flat_normal(64), config)
    values = np.array(list(result.metrics.values()))
    assert np.isfinite(values).all()
    assert result.metrics["patch__ssim__min__raw"] == 1.0
    assert result.metrics["patch__euclidean__max__weighted"] == 0.0
    assert result.metrics["patch__fid__sum__raw"] == 0.0
    assert result.metrics["image__delta__max__raw"] == 0.0
    assert result.metrics["patch__zscore__max__standardized"] == 0.0


def test_columns_match_the_documented_names(backbone) -> None:
    layout = make_layout(0)
    x, _ = render_unit(layout, size=64, seed=2, defect="scratch")
    x_hat, _ = render_unit(layout, size=64, seed=2)
    golden = x_hat
    config = LocalizeConfig(p=10, n=2, alpha=4, q=8)
    features = image_features(backbone, x, x_hat)
    weighted = image_metrics(x, x_hat, features, OUTPUTS, flat_normal(64), config, golden=golden)
    names = set(metric_column_names(knn=False))
    assert set(weighted.metrics) - {"baseline__golden_mse__value__raw"} == names
    raw_only = image_metrics(x, x_hat, features, OUTPUTS, None, config)
    expected = metric_column_names(weighted=False, standardized=False, knn=False)
    assert set(raw_only.metrics) == set(expected)
    frame = patches_frame("img", weighted)
    assert set(frame["variant"]) == {"raw", "weighted", "standardized"}
    assert (frame.groupby("variant").size() <= 8).all()
    # weights that zero the defect region drop it from the weighted selection
    _, truth = render_unit(layout, size=64, seed=2, defect="scratch")
    weights = np.where(truth, 0.0, 1.0)
    masked = image_metrics(x, x_hat, features, OUTPUTS, flat_normal(64, weights), config)
    assert masked.metrics["pixel__top_p__max__weighted"] == 0.0
    assert masked.metrics["pixel__top_p__max__raw"] > 0.0


def test_bad_configuration_is_a_clear_error(backbone) -> None:
    with pytest.raises(ValueError, match="q must be >= 1"):
        LocalizeConfig(q=0)
    with pytest.raises(ValueError, match="estimator"):
        LocalizeConfig(estimator="median")
    x, _ = render_unit(make_layout(0), size=64, seed=1)
    with pytest.raises(ValueError, match="weighting mask is"):
        image_metrics(
            x, x, image_features(backbone, x, x), OUTPUTS, flat_normal(32), LocalizeConfig()
        )


def test_metrics_documentation_is_up_to_date() -> None:
    from pathlib import Path

    from vqganodip_pipeline.metrics.table import metric_documentation

    path = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"
    assert path.read_text() == metric_documentation(), (
        "docs/METRICS.md is stale: regenerate it with "
        "python -c 'from vqganodip_pipeline.metrics.table import metric_documentation as m; "
        'open("docs/METRICS.md", "w").write(m())\''
    )


def test_perceptual_distance_comes_from_the_patch_features(backbone) -> None:
    """The LPIPS-style distance of the training loss, on the maps the patches already use: 0 for
    a perfect reconstruction, checked against a NumPy computation of its formula."""
    config = LocalizeConfig(p=50, n=3, alpha=4, q=5)
    layout = make_layout(0)
    x, _ = render_unit(layout, size=64, seed=4, defect="missing")
    x_hat, _ = render_unit(layout, size=64, seed=4)
    features = image_features(backbone, x, x_hat)
    row = image_metrics(x, x_hat, features, OUTPUTS, None, config).metrics

    def unit(f: np.ndarray) -> np.ndarray:
        return f / np.sqrt((f**2).sum(axis=0, keepdims=True) + 1e-10)

    expected = np.mean(
        [
            ((unit(fx.numpy()) - unit(fy.numpy())) ** 2).sum(axis=0).mean()
            for fx, fy in zip(features.x, features.x_hat, strict=True)
        ]
    )
    assert row["image__perceptual__value__raw"] == pytest.approx(expected, rel=1e-5)
    assert row["image__perceptual__value__raw"] > 0
    same = image_metrics(x, x, image_features(backbone, x, x), OUTPUTS, None, config).metrics
    assert same["image__perceptual__value__raw"] == pytest.approx(0.0, abs=1e-6)
