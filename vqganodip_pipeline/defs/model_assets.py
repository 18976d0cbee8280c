"""Model-side assets: the VQGAN checkpoint (with its quality check) and the weighting mask."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd
import torch
from pydantic import Field

from vqganodip_pipeline.data.loading import load_images
from vqganodip_pipeline.defs.automation import CHECK_AUTOMATION
from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.defs.metadata import image_markdown, png_markdown
from vqganodip_pipeline.defs.policies import (
    COMPUTE_RETRY,
    TORCH_POOL,
    TRAINING_RETRY,
    stops_on_interrupt,
)
from vqganodip_pipeline.defs.release import record_rejection
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.hashing import hash_arrays, hash_strings
from vqganodip_pipeline.localize.mask import align_to_reference
from vqganodip_pipeline.localize.position import decide_position
from vqganodip_pipeline.model.checkpoint import (
    VQGANCheckpoint,
    checkpoint_from_payload,
    read_checkpoint_payload,
)
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.model.train import evaluate_reconstruction, train_vqgan
from vqganodip_pipeline.pipeline import BackboneChoice, build_backbone, compute_normal_variation
from vqganodip_pipeline.viz import heatmap_figure, reconstruction_strip, training_curves_png
from vqganodip_pipeline.workflow.roles import golden_sample, role_rows

FEATURE_CHUNK = 64  # training units loaded at a time for the feature statistics


def model_bundle(
    payload: dict, settings: PipelineSettings
) -> tuple[VQGANCheckpoint, BackboneChoice]:
    """(checkpoint, backbone choice) for a stored VQGAN checkpoint."""
    checkpoint = checkpoint_from_payload(payload)
    choice = build_backbone(
        settings.backbone,
        weights_path=settings.backbone_weights(),
        discriminator=checkpoint.discriminator,
        encoder=checkpoint.model.encoder,
        layers=settings.backbone_layer_indices(),
    )
    return checkpoint, choice


class VQGANTrainingConfig(dg.Config):
    """Overrides of the preset's training budget."""

    steps: int = Field(default=0, description="training steps; 0 = the preset's")
    resume: bool = Field(
        default=True, description="continue an interrupted run on the same data and configs"
    )
    seed: int = Field(
        default=0, description="seeds the initialisation, the batches and the augmentations"
    )


@dg.asset(
    io_manager_key="checkpoint_io_manager",
    group_name="model",
    pool=TORCH_POOL,
    retry_policy=TRAINING_RETRY,
)
@stops_on_interrupt
def vqgan_checkpoint(
    context: dg.AssetExecutionContext,
    config: VQGANTrainingConfig,
    dataset_split: pd.DataFrame,
    settings: PipelineSettings,
    inbox: BatchInbox,
) -> dg.Output[dict]:
    """VQGAN trained on the ``vqgan_train`` normal images (early stopping on ``vqgan_val``)."""
    preset = settings.get_preset()
    model_config, train_config = settings.vqgan_configs(config.steps, config.seed)
    train_rows = role_rows(dataset_split, "vqgan_train")
    val_rows = role_rows(dataset_split, "vqgan_val")
    if len(train_rows) == 0:
        raise dg.Failure("dataset_split has no vqgan_train images")
    options = inbox.storage_options()
    train_images = load_images(train_rows, preset.image_size, options)
    val_images = load_images(val_rows, preset.image_size, options) if len(val_rows) else None
    data_hash = hash_strings([*train_rows["image_id"], "|", *val_rows["image_id"]])
    context.log.info(
        f"training on {len(train_rows)} images ({preset.image_size} px), validating on "
        f"{len(val_rows)}; {train_config.steps} steps, device {train_config.device}"
    )
    if train_config.perceptual_weights_path is None:
        context.log.warning(
            "no ImageNet weights configured (PipelineSettings.weights_path): the perceptual "
            "loss uses the documented fallback"
        )

    def progress(record: dict) -> None:
        if record.get("event") == "train":
            shown = {k: round(v, 4) for k, v in record.items() if isinstance(v, float)}
            context.log.info(f"step {record.get('step')}: {shown}")
        elif record.get("event") not in (None, "train"):
            context.log.info(f"{record['event']}: {record}")

    work = settings.training_dir(
        data_hash[:16] + "-" + hash_strings([str(model_config), str(train_config)])[:8]
    )
    result = train_vqgan(
        train_images,
        val_images,
        model_config,
        train_config,
        checkpoint_dir=work,
        resume=config.resume,
        data_hash=data_hash,
        progress=progress,
    )
    best = work / ("best.pt" if result.best_step is not None else "last.pt")
    payload = read_checkpoint_payload(best, inference_only=True)
    checkpoint = checkpoint_from_payload(payload)
    metadata: dict = {
        "steps": result.step,
        "best_step": result.best_step if result.best_step is not None else result.step,
        "stopped_early": result.stopped_early,
        # a call that resumed a finished run trains nothing: report the run's own throughput
        "train_images_per_s": float(
            result.images_per_s
            or np.mean([r["images_per_s"] for r in result.history.get("train", [])] or [0.0])
        ),
        "perceptual_backbone": result.perceptual,
        "data_hash": data_hash,
        "config": dg.MetadataValue.json(model_config.to_dict()),
    }
    if val_images is not None:
        quality = evaluate_reconstruction(
            checkpoint.model,
            val_images,
            batch_size=preset.batch_size,
            device=torch.device("cpu"),
            precision="fp32",
        )
        metadata.update({k: float(v) for k, v in quality.items()})
        strip_images = val_images[:3]
        recon = reconstruct(checkpoint.model, strip_images, batch_size=len(strip_images)).x_hat
        metadata["held_out_reconstructions"] = image_markdown(
            reconstruction_strip(strip_images, recon, thumb=160), "held-out normal images"
        )
    abnormal = role_rows(dataset_split, "classifier_set", label="abnormal").head(3)
    if len(abnormal):
        images = load_images(abnormal, preset.image_size, options)
        recon = reconstruct(checkpoint.model, images, batch_size=len(images)).x_hat
        metadata["abnormal_reconstructions"] = image_markdown(
            reconstruction_strip(images, recon, thumb=160), "abnormal images"
        )
    history = result.history.get("train", [])
    if history:
        metadata["loss_curves"] = png_markdown(
            training_curves_png(history, ["rec_loss", "perceptual_loss", "codebook_loss", "d_loss"])
        )
        last = history[-1]
        for key in ("codebook_usage", "perplexity"):
            if key in last:
                metadata[f"train_{key}"] = float(last[key])
    return dg.Output(
        payload,
        data_version=dg.DataVersion(hash_arrays(_weights_of(payload))[:16]),
        metadata=metadata,
    )


def _weights_of(payload: dict) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in payload["model"].items()}


class QualityFloors(dg.Config):
    """Floors of the blocking checkpoint check."""

    min_val_psnr_db: float | None = Field(
        default=None,
        description="held-out normal reconstruction PSNR floor, dB (default: the preset's)",
    )
    min_codebook_usage: float = Field(
        default=0.02, description="share of codebook entries the held-out images use, floor"
    )


@dg.asset_check(
    automation_condition=CHECK_AUTOMATION,
    asset=vqgan_checkpoint,
    additional_ins={"dataset_split": dg.AssetIn(key("dataset_split"))},  # prefix: not added
    blocking=True,
    description="Held-out normal reconstruction quality and codebook usage above their floors.",
)
def vqgan_checkpoint_quality(
    context: dg.AssetCheckExecutionContext,
    config: QualityFloors,
    vqgan_checkpoint: dict,
    dataset_split: pd.DataFrame,
    settings: PipelineSettings,
    inbox: BatchInbox,
) -> dg.AssetCheckResult:
    preset = settings.get_preset()
    checkpoint = checkpoint_from_payload(vqgan_checkpoint)
    rows = role_rows(dataset_split, "vqgan_val")
    if len(rows) == 0:
        rows = role_rows(dataset_split, "mask_calibration")
    images = load_images(rows, preset.image_size, inbox.storage_options())
    quality = evaluate_reconstruction(
        checkpoint.model,
        images,
        batch_size=preset.batch_size,
        device=torch.device("cpu"),
        precision="fp32",
    )
    problems = []
    floor = preset.min_val_psnr_db if config.min_val_psnr_db is None else config.min_val_psnr_db
    if quality["val_psnr"] < floor:
        problems.append(f"PSNR {quality['val_psnr']:.2f} dB < {floor} dB")
    if quality["val_codebook_usage"] < config.min_codebook_usage:
        problems.append(
            f"codebook usage {quality['val_codebook_usage']:.3f} < {config.min_codebook_usage}"
        )
    if problems:
        record_rejection(context, "vqgan_checkpoint:vqgan_checkpoint_quality", "; ".join(problems))
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or None,
        metadata={**{k: float(v) for k, v in quality.items()}, "images": len(rows)},
    )


class WeightingMaskConfig(dg.Config):
    """Per-pixel statistics for fixed-position products, measured or set (``position``)."""

    position: str = Field(
        default="auto",
        description="auto (measured on the m units: fixed when their mean image explains at "
        "least half their variance), fixed, or free (no weighting mask, no per-pixel or "
        "per-position statistics: textures, loose parts)",
    )
    enabled: bool = Field(
        default=True, description="the paper's W (weighted variant), at a fixed position"
    )
    standardized: bool = Field(
        default=True,
        description="per-pixel difference and per-position feature statistics (standardized "
        "variant), at a fixed position",
    )
    alignment: str = Field(
        default="none",
        description="none, or phase: align each image to the first before differencing",
    )
    # feature statistics (standardized variant) also from the VQGAN's training and validation
    # units: they need no reconstruction, and more units give a better covariance
    training_units_for_features: bool = Field(
        default=True, description="feature statistics also from the VQGAN's own normal units"
    )


@dg.asset(
    io_manager_key="array_io_manager",
    group_name="model",
    pool=TORCH_POOL,
    retry_policy=COMPUTE_RETRY,
)
@stops_on_interrupt
def weighting_mask(
    context: dg.AssetExecutionContext,
    config: WeightingMaskConfig,
    vqgan_checkpoint: dict,
    dataset_split: pd.DataFrame,
    settings: PipelineSettings,
    inbox: BatchInbox,
) -> dg.Output[dict[str, np.ndarray]]:
    """What the m ``mask_calibration`` normal images teach: the paper's W = 1 - norm(mean
    |x - x_hat|), the per-pixel mean and standard deviation of the difference (our standardized
    variant), and their mean image, the golden sample of the baseline."""
    preset = settings.get_preset()
    rows = role_rows(dataset_split, "mask_calibration")
    if len(rows) == 0:
        raise dg.Failure("dataset_split has no mask_calibration images (m = 0)")
    images = load_images(rows, preset.image_size, inbox.storage_options())
    if config.alignment != "none":
        images = np.stack([align_to_reference(im, images[0], config.alignment)[0] for im in images])
    try:
        position = decide_position(images, config.position)
    except ValueError as exc:
        raise dg.Failure(f"weighting_mask: {exc}") from exc
    use_weights = config.enabled and position.fixed
    standardize = config.standardized and position.fixed
    context.log.info(f"product position: {position.describe()}")
    localize = settings.localize_config()
    extra_rows = role_rows(dataset_split, "vqgan_train", "vqgan_val")
    uses_features = standardize or localize.knn_bank > 0
    if not (uses_features and config.training_units_for_features):
        extra_rows = extra_rows.iloc[:0]

    def training_units() -> Iterator[np.ndarray]:
        # chunk by chunk: a paper-size training set (1200 units at 1024 px) would need 3.6 GB
        for start in range(0, len(extra_rows), FEATURE_CHUNK):
            chunk = load_images(
                extra_rows.iloc[start : start + FEATURE_CHUNK],
                preset.image_size,
                inbox.storage_options(),
            )
            if config.alignment != "none":
                chunk = np.stack(
                    [align_to_reference(im, images[0], config.alignment)[0] for im in chunk]
                )
            yield chunk

    checkpoint, choice = model_bundle(vqgan_checkpoint, settings)
    normal = compute_normal_variation(
        settings.inference_model(checkpoint.model),
        images,
        use_weights=use_weights,
        standardize=standardize,
        config=localize,
        batch_size=preset.batch_size,
        backbone=choice.backbone,
        feature_images=training_units if len(extra_rows) else None,
    )
    # the golden sample (mean normal image) of the incumbent AOI approach, a baseline
    arrays = {**normal.to_arrays(), "golden": golden_sample(images)}
    metadata: dict = {
        "m": len(rows),
        "position": position.describe(),
        "weighting_mask": use_weights,
        "standardized": standardize,
        "feature_statistics": "none" if normal.features is None else normal.features.backbone,
        "feature_statistics_units": 0 if normal.features is None else normal.features.count,
        "feature_covariance_shrinkage": (
            [] if normal.features is None else [round(v, 4) for v in normal.features.mean_shrinkage]
        ),
        "memory_bank": "none"
        if normal.memory is None
        else f"{len(normal.memory.bank)} x {normal.memory.bank.shape[1]} coreset of "
        f"{normal.memory.pool} positions from {normal.memory.units} normal units",
    }
    if normal.weights is not None:
        metadata["mean_weight"] = float(normal.weights.mean())
        metadata["share_below_0.5"] = float((normal.weights < 0.5).mean())
        metadata["heat_map"] = png_markdown(
            heatmap_figure(
                normal.weights,
                title=f"Weighting mask W from m = {len(rows)} normal units: dark = pixels whose "
                "reconstruction error normal units share (down-weighted)",
                label="W (1 = fully trusted pixel)",
                lo=0.0,
                hi=1.0,
            ),
            "weighting mask W",
        )
        metadata["reference_unit"] = image_markdown(images[0], "first mask-calibration unit")
    if normal.std is not None:
        metadata["normal_variation"] = png_markdown(
            heatmap_figure(
                normal.std,
                title="Per-pixel standard deviation of |x - x_hat| on normal units",
                label="std of the difference (intensity, 1 = full range)",
            ),
            "normal variation",
        )
    return dg.Output(
        arrays, data_version=dg.DataVersion(hash_arrays(arrays)[:16]), metadata=metadata
    )
