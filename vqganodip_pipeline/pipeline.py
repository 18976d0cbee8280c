"""The method's steps as plain functions over arrays and tables, shared by the Dagster assets
and the ``vqganodip`` CLI (one implementation of each step; no Dagster here).

reconstruction model -> weighting mask -> metric table -> composite score.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline.data.capture import CAPTURE_COLUMNS
from vqganodip_pipeline.features.backbones import (
    BACKBONES,
    DiscriminatorBackbone,
    EncoderBackbone,
    FeatureBackbone,
    InceptionBackbone,
    MobileNetBackbone,
    VGG16Backbone,
)
from vqganodip_pipeline.localize.candidates import hit_defects
from vqganodip_pipeline.localize.feature_deviation import fit_feature_statistics
from vqganodip_pipeline.localize.mask import NormalVariation, normal_variation
from vqganodip_pipeline.localize.nearest_neighbour import fit_memory_bank
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import VARIANTS, LocalizeConfig, image_metrics, patches_frame
from vqganodip_pipeline.model.reconstruct import Reconstruction, reconstruct
from vqganodip_pipeline.model.vqgan import VQGAN

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ("image_id", "label", "defect_type", "role", "group_id", "batch", "uri")
GROUND_TRUTH_COLUMNS = ("gt_defects", "gt_defects_hit_raw", "gt_defects_hit_weighted")


@dataclass(frozen=True)
class BackboneChoice:
    """Which perceptual backbone is used and why (said in logs and metadata)."""

    backbone: FeatureBackbone
    note: str


def build_backbone(
    name: str,
    *,
    weights_path: str | Path | None,
    discriminator: Any | None,
    encoder: Any | None = None,
    layers: Sequence[int] | None = None,
) -> BackboneChoice:
    """The perceptual backbone for patch distances.

    ``auto`` (documented default): ImageNet MobileNetV2 when ``weights_path`` names an existing
    file, otherwise the trained VQGAN discriminator's features, saying so. ``mobilenet_v2``,
    ``vgg16`` and ``inception_v3`` load their ImageNet weights from ``weights_path`` (a local
    torchvision-layout state dict; a missing file is an error naming the path);
    ``vqgan_discriminator`` and ``vqgan_encoder`` use the trained model's own networks.
    ``layers``: MobileNetV2's feature blocks (None: 3 and 6, strides 4 and 8); an error for any
    other backbone, including ``auto`` when it falls back for want of the weights file.
    """
    if name not in ("auto", *BACKBONES):
        raise ValueError(f"unknown backbone {name!r}; expected auto or one of {BACKBONES}")
    if layers is not None and name not in ("auto", "mobilenet_v2"):
        raise ValueError(f"backbone layers {tuple(layers)} are MobileNetV2 blocks, not {name}'s")
    imagenet = {
        "mobilenet_v2": MobileNetBackbone,
        "vgg16": VGG16Backbone,
        "inception_v3": InceptionBackbone,
    }
    if name == "auto" and weights_path and Path(weights_path).is_file():
        name = "mobilenet_v2"
    if name in imagenet:
        if not weights_path:
            raise FileNotFoundError(f"backbone {name} needs a local weights file (weights_path)")
        if layers is not None:
            backbone: FeatureBackbone = MobileNetBackbone(weights_path, layers=tuple(layers))
        else:
            backbone = imagenet[name](weights_path)
        return BackboneChoice(backbone, f"{backbone.name} from {weights_path}")
    if layers is not None:
        raise ValueError(
            f"backbone layers {tuple(layers)} need MobileNetV2, but its weights file "
            f"{weights_path or '(none)'} was not found: auto would fall back to the discriminator"
        )
    if name == "vqgan_encoder":
        if encoder is None:
            raise ValueError("the vqgan_encoder backbone needs the trained VQGAN encoder")
        backbone = EncoderBackbone(encoder)
        return BackboneChoice(backbone, f"{backbone.name} (the trained VQGAN encoder)")
    if discriminator is None:
        raise ValueError("the vqgan_discriminator backbone needs the trained discriminator")
    backbone = DiscriminatorBackbone(discriminator)
    reason = f"weights file {weights_path} not found; " if weights_path and name == "auto" else ""
    note = f"{reason}using {backbone.name} (the trained VQGAN discriminator)"
    if reason:
        log.warning(note)
    return BackboneChoice(backbone, note)


def compute_normal_variation(
    model: VQGAN,
    images: np.ndarray,
    *,
    use_weights: bool = True,
    standardize: bool = True,
    config: LocalizeConfig | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    backbone: FeatureBackbone | None = None,
    feature_images: np.ndarray | Callable[[], Iterable[np.ndarray]] | None = None,
) -> NormalVariation:
    """The weighting mask W and the per-pixel difference statistics from m unseen normal
    images ((m, H, W, 3) ``uint8``); with ``backbone``, also what the backbone's features of
    normal units look like, fitted on these images and on ``feature_images`` (more normal
    units, e.g. the VQGAN's training units: neither uses a reconstruction, so units the VQGAN
    has seen are as good as unseen ones; an array, or a function returning an iterable of
    arrays, called once per fit so that a large set never sits in memory at once):

    - the per-position feature statistics of the feature-deviation metrics, with
      ``standardize`` (they assume a fixed position);
    - the coreset memory bank of the nearest-neighbour metrics, when ``config.knn_bank`` > 0
      (position-free).

    Inference runs in fp32 by default: bf16 flips near-tie codes (whole 8x8 blocks change) and,
    on CPUs without AMX, was 20x slower here (20 images: 495 s bf16 vs 24 s fp32)."""
    if len(images) == 0:
        raise ValueError("the weighting mask needs at least one unseen normal image")
    config = config or LocalizeConfig()
    result = reconstruct(model, images, batch_size=batch_size, precision=precision)
    normal = normal_variation(
        images,
        result.x_hat,
        use_weights=use_weights,
        standardize=standardize,
        sigma=config.z_sigma,
        eps=config.z_eps,
    )
    if backbone is None:
        return normal

    def normal_units() -> Iterable[np.ndarray]:
        if feature_images is None:
            return [images]
        if isinstance(feature_images, np.ndarray):
            return [images, feature_images]
        return itertools.chain([images], feature_images())

    if standardize and (feature_images is not None or len(images) >= 2):
        statistics = fit_feature_statistics(
            backbone, normal_units(), joint_channels=config.joint_channels, batch_size=batch_size
        )
        normal = replace(normal, features=statistics)
    if config.knn_bank:
        memory = fit_memory_bank(
            backbone,
            normal_units(),
            size=config.knn_bank,
            positions=config.knn_positions,
            batch_size=batch_size,
        )
        normal = replace(normal, memory=memory)
    return normal


@dataclass
class MetricTable:
    """The metric table of a set of images, their selected patches and the timings."""

    metrics: pd.DataFrame
    patches: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)
    reconstructions: np.ndarray | None = None


def reconstruction_frame(result: Reconstruction) -> pd.DataFrame:
    """The per-image model outputs of a reconstruction as a table (one row per image)."""
    return pd.DataFrame(
        {
            "mse": result.mse,
            "quant_loss": result.quant_loss,
            "codes_used": result.codes_used.astype(np.float64),
            "disc_logit_x": result.disc_logit_x,
            "disc_logit_xhat": result.disc_logit_xhat,
            "perceptual": result.perceptual,
        }
    )


def metric_rows(
    rows: pd.DataFrame,
    images: np.ndarray,
    reconstructions: np.ndarray,
    outputs: pd.DataFrame,
    backbone: FeatureBackbone,
    *,
    normal: NormalVariation | None,
    config: LocalizeConfig,
    golden: np.ndarray | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    seconds: dict[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """Metric records and selected-patch frames of already reconstructed images.

    ``rows``, ``images``, ``reconstructions`` and ``outputs`` (reconstruction_frame) are aligned.
    Identity columns of ``rows`` are copied; ``masks`` (ground truth by image_id, at the working
    size) add the localisation hit counts.
    """
    # capture statistics travel with the row for the shortcut baseline (never a metric)
    identity = [c for c in (*IDENTITY_COLUMNS, *CAPTURE_COLUMNS) if c in rows.columns]
    seconds = seconds if seconds is not None else {}
    records: list[dict[str, Any]] = []
    patch_frames: list[pd.DataFrame] = []
    for i in range(len(images)):
        meta = rows.iloc[i]
        start = time.perf_counter()
        features = image_features(backbone, images[i], reconstructions[i])
        seconds["features"] = seconds.get("features", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        model_outputs = {k: float(v) for k, v in outputs.iloc[i].items() if np.isfinite(float(v))}
        outcome = image_metrics(
            images[i], reconstructions[i], features, model_outputs, normal, config, golden=golden
        )
        seconds["metrics"] = seconds.get("metrics", 0.0) + time.perf_counter() - start
        record: dict[str, Any] = {c: meta[c] for c in identity}
        record.update(outcome.metrics)
        truth = None if masks is None else masks.get(str(meta["image_id"]))
        if truth is not None:
            record["gt_defects"] = hit_defects(outcome.patches["raw"], truth)[0]
            for variant, patches in outcome.patches.items():
                record[f"gt_defects_hit_{variant}"] = hit_defects(patches, truth)[1]
        records.append(record)
        patch_frames.append(patches_frame(str(meta["image_id"]), outcome))
    return records, patch_frames


def assemble_table(
    records: list[dict[str, Any]], patch_frames: list[pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = pd.DataFrame.from_records(records)
    for column in GROUND_TRUTH_COLUMNS:
        if column in metrics:
            metrics[column] = metrics[column].astype("Int64")
    patches = pd.concat(patch_frames, ignore_index=True) if patch_frames else pd.DataFrame()
    return metrics, patches


def compute_metric_table(
    model: VQGAN,
    discriminator: Any | None,
    backbone: FeatureBackbone,
    rows: pd.DataFrame,
    image_batches: Iterable[np.ndarray],
    *,
    normal: NormalVariation | None,
    config: LocalizeConfig,
    golden: np.ndarray | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    keep_reconstructions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> MetricTable:
    """Reconstruct every image (streamed in batches) and compute its row of metrics.

    Args:
        rows: one row per image, in the order of ``image_batches``.
        image_batches: (n, H, W, 3) ``uint8`` stacks, e.g. from data.loading.iter_image_batches.
        normal: weighting mask and difference statistics (None: raw variant only).
        masks: ground-truth defect masks by image_id, for the localisation hit counts.
        progress: called with (images done, total).
    """
    records: list[dict[str, Any]] = []
    patch_frames: list[pd.DataFrame] = []
    kept: list[np.ndarray] = []
    seconds = {"reconstruct": 0.0, "features": 0.0, "metrics": 0.0}
    position = 0
    total = len(rows)
    for batch in image_batches:
        start = time.perf_counter()
        result = reconstruct(
            model, batch, batch_size=batch_size, precision=precision, discriminator=discriminator
        )
        seconds["reconstruct"] += time.perf_counter() - start
        if keep_reconstructions:
            kept.append(result.x_hat)
        part = rows.iloc[position : position + len(batch)]
        new_records, new_patches = metric_rows(
            part,
            batch,
            result.x_hat,
            reconstruction_frame(result),
            backbone,
            normal=normal,
            config=config,
            golden=golden,
            masks=masks,
            seconds=seconds,
        )
        records += new_records
        patch_frames += new_patches
        position += len(batch)
        if progress is not None:
            progress(position, total)
    if position != total:
        raise ValueError(f"got {position} images for {total} rows")
    metrics, patches = assemble_table(records, patch_frames)
    return MetricTable(
        metrics=metrics,
        patches=patches,
        seconds=seconds,
        reconstructions=np.concatenate(kept) if kept else None,
    )


def localization_hit_rate(metrics: pd.DataFrame, variant: str = "raw") -> float | None:
    """Share of ground-truth defects hit by at least one selected patch (None without truth)."""
    column = f"gt_defects_hit_{variant}"
    if column not in metrics or "gt_defects" not in metrics:
        return None
    known = metrics["gt_defects"].notna() & (metrics["gt_defects"] > 0)
    if not known.any():
        return None
    return float(metrics.loc[known, column].sum() / metrics.loc[known, "gt_defects"].sum())


def best_hit_rate(metrics: pd.DataFrame) -> float | None:
    """Localisation hit rate of the most refined patch ranking the table has (standardized,
    then weighted, then raw): the one whose patches a person is shown."""
    for variant in reversed(VARIANTS):
        if f"gt_defects_hit_{variant}" in metrics:
            return localization_hit_rate(metrics, variant)
    return None
