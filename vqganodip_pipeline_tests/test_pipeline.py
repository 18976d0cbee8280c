"""The shared pipeline steps: backbone choice, metric table streaming, hit rate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.features.backbones import DiscriminatorBackbone, MobileNetBackbone
from vqganodip_pipeline.metrics.table import LocalizeConfig
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.vqgan import build_discriminator, build_vqgan
from vqganodip_pipeline.pipeline import (
    build_backbone,
    compute_metric_table,
    compute_normal_variation,
    localization_hit_rate,
)


@pytest.fixture(scope="module")
def tiny_model():
    config, _ = vqgan_preset("tiny")
    return build_vqgan(config, seed=0).eval(), build_discriminator(config, seed=1).eval()


def test_auto_backbone_falls_back_to_the_discriminator_and_says_so(
    tiny_model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, discriminator = tiny_model
    choice = build_backbone("auto", weights_path=None, discriminator=discriminator)
    assert isinstance(choice.backbone, DiscriminatorBackbone)
    missing = tmp_path / "absent.pt"
    with caplog.at_level(logging.WARNING):
        choice = build_backbone("auto", weights_path=missing, discriminator=discriminator)
    assert isinstance(choice.backbone, DiscriminatorBackbone)
    assert str(missing) in choice.note and str(missing) in caplog.text


def test_explicit_mobilenet_with_a_missing_file_names_the_path(tiny_model, tmp_path) -> None:
    _, discriminator = tiny_model
    missing = tmp_path / "nowhere" / "mobilenet.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_backbone("mobilenet_v2", weights_path=missing, discriminator=discriminator)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg", weights_path=None, discriminator=discriminator)


def test_mobilenet_is_used_when_its_weights_exist(tiny_model, mobilenet_weights: Path) -> None:
    choice = build_backbone("auto", weights_path=mobilenet_weights, discriminator=None)
    assert isinstance(choice.backbone, MobileNetBackbone)
    assert choice.backbone.strides == (4, 8)
    deeper = build_backbone(
        "mobilenet_v2", weights_path=mobilenet_weights, discriminator=None, layers=(3, 6, 10)
    ).backbone
    assert deeper.strides == (4, 8, 16) and deeper.name == "mobilenet_v2[3,6,10]"
    maps = deeper.feature_maps(torch.zeros(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(24, 16, 16), (32, 8, 8), (64, 4, 4)]
    with pytest.raises(ValueError, match="out of range"):
        build_backbone("auto", weights_path=mobilenet_weights, discriminator=None, layers=(3, 19))


def test_backbone_layers_are_refused_where_mobilenet_is_not_used(tiny_model, tmp_path) -> None:
    _, discriminator = tiny_model
    with pytest.raises(ValueError, match="MobileNetV2 blocks, not vqgan_discriminator"):
        build_backbone(
            "vqgan_discriminator", weights_path=None, discriminator=discriminator, layers=(3, 6)
        )
    # auto without the weights file would fall back to the discriminator: said, not ignored
    missing = tmp_path / "absent.pt"
    with pytest.raises(ValueError, match=f"weights file {missing} was not found"):
        build_backbone("auto", weights_path=missing, discriminator=discriminator, layers=(3, 6))


def test_metric_table_streams_batches_and_counts_hits(tiny_model) -> None:
    model, discriminator = tiny_model
    data = generate_images(3, 3, size=32, seed=4)
    rows = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(6)],
            "label": data.labels,
            "defect_type": data.defect_types,
        }
    )
    config = LocalizeConfig(p=10, n=2, alpha=4, q=6, orb_keypoints=20)
    backbone = DiscriminatorBackbone(discriminator)
    normal = compute_normal_variation(model, data.images[:3], config=config, backbone=backbone)
    assert normal.weights.shape == (32, 32) and normal.std.shape == (32, 32)
    assert normal.features is not None and normal.features.backbone == backbone.name
    masks = {f"img{i}": data.masks[i] for i in range(6) if data.labels[i] == "abnormal"}
    batches = (data.images[i : i + 4] for i in range(0, 6, 4))
    table = compute_metric_table(
        model,
        discriminator,
        backbone,
        rows,
        batches,
        normal=normal,
        config=config,
        golden=data.images[:3].mean(0).astype(np.uint8),
        masks=masks,
        batch_size=4,
        precision="fp32",
        keep_reconstructions=True,
    )
    metrics = table.metrics
    assert list(metrics["image_id"]) == list(rows["image_id"])
    metric_columns = [c for c in metrics.columns if "__" in c]
    assert "image__feature_deviation_1__max__standardized" in metric_columns
    assert np.isfinite(metrics[metric_columns].to_numpy(float)).all()
    assert table.reconstructions.shape == data.images.shape
    assert metrics["gt_defects"].notna().sum() == 3
    rate = localization_hit_rate(metrics)
    assert rate is not None and 0.0 <= rate <= 1.0
    assert set(table.patches["variant"]) == {"raw", "weighted", "standardized"}
    with pytest.raises(ValueError, match="got 4 images for 6 rows"):
        compute_metric_table(
            model,
            discriminator,
            DiscriminatorBackbone(discriminator),
            rows,
            iter([data.images[:4]]),
            normal=None,
            config=config,
            precision="fp32",
        )
