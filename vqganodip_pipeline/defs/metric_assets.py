"""Metric tables: ``training_metrics`` for the classifier set and holdout, and per batch the
reconstructions, the selected patches and the metric table."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from vqganodip_pipeline.data.loading import iter_image_batches, load_images
from vqganodip_pipeline.defs.automation import on_checked_asset_request
from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.defs.metadata import frame_table, image_markdown, table_metadata
from vqganodip_pipeline.defs.model_assets import model_bundle
from vqganodip_pipeline.defs.partitions import shift_partitions
from vqganodip_pipeline.defs.policies import COMPUTE_RETRY, TORCH_POOL, stops_on_interrupt
from vqganodip_pipeline.defs.release import Release
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.storage import StorageLocation, read_verified, store_part
from vqganodip_pipeline.hashing import hash_frame, hash_strings
from vqganodip_pipeline.localize.mask import NormalVariation
from vqganodip_pipeline.model.checkpoint import checkpoint_from_payload
from vqganodip_pipeline.model.engines import compile_vqgan
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.pipeline import (
    assemble_table,
    best_hit_rate,
    compute_metric_table,
    metric_rows,
    reconstruction_frame,
)
from vqganodip_pipeline.scoring.baselines import single_metric_auroc
from vqganodip_pipeline.scoring.table import metric_columns
from vqganodip_pipeline.serialization import arrays_to_npz, bytes_to_checkpoint, npz_to_arrays
from vqganodip_pipeline.viz import draw_boxes
from vqganodip_pipeline.workflow.progress import Throughput
from vqganodip_pipeline.workflow.roles import ground_truth_masks, role_rows


def normal_of(mask: dict[str, np.ndarray]) -> NormalVariation:
    return NormalVariation.from_arrays(mask)


def patches_figure(image: np.ndarray, patches: pd.DataFrame, limit: int = 25) -> np.ndarray:
    """The image with its best ``limit`` selected patches drawn (raw variant)."""
    best = patches[patches["variant"] == "raw"].nsmallest(limit, "rank")
    boxes = list(best[["top", "left", "size", "size"]].itertuples(index=False, name=None))
    return draw_boxes(image, boxes)


def table_summary(metrics: pd.DataFrame) -> dict:
    metric_cols = metric_columns(metrics)
    return {
        "metric_columns": len(metric_cols),
        "images": len(metrics),
    }


@dg.multi_asset(
    outs={
        "training_metrics": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            description="The metric table of the classifier_set and holdout images.",
        ),
        "training_patches": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            description="The q selected patches of every one of those images and variant.",
        ),
    },
    group_name="model",
    pool=TORCH_POOL,
    retry_policy=COMPUTE_RETRY,
)
@stops_on_interrupt
def training_metrics(
    context: dg.AssetExecutionContext,
    dataset_split: pd.DataFrame,
    vqgan_checkpoint: dict,
    weighting_mask: dict,
    settings: PipelineSettings,
    inbox: BatchInbox,
):
    """The metric table of the ``classifier_set`` and ``holdout`` images (one row per image)
    and their selected patches (what the report draws, without running the model again)."""
    preset = settings.get_preset()
    rows = role_rows(dataset_split, "classifier_set", "holdout")
    checkpoint, choice = model_bundle(vqgan_checkpoint, settings)
    context.log.info(f"perceptual backbone: {choice.note}")
    masks = ground_truth_masks(rows, preset.image_size, inbox.storage_options())

    throughput = Throughput("training_metrics", len(rows), context.log.info)

    def progress(done: int, total: int) -> None:
        throughput.update(done - throughput.done)

    result = compute_metric_table(
        settings.inference_model(checkpoint.model),
        checkpoint.discriminator,
        choice.backbone,
        rows,
        (
            images
            for _, images in iter_image_batches(
                rows, preset.batch_size, preset.image_size, inbox.storage_options()
            )
        ),
        normal=normal_of(weighting_mask),
        config=settings.localize_config(),
        golden=weighting_mask.get("golden"),
        masks=masks,
        batch_size=preset.batch_size,
        progress=progress,
    )
    metrics = result.metrics
    metadata = {
        **table_metadata(metrics),
        **table_summary(metrics),
        "backbone": choice.note,
        "seconds_per_image": {k: v / max(len(rows), 1) for k, v in result.seconds.items()},
    }
    metadata["seconds_per_image"] = dg.MetadataValue.json(metadata["seconds_per_image"])
    hit_rate = best_hit_rate(metrics)
    if hit_rate is not None:
        metadata["localization_hit_rate"] = hit_rate
    labelled = metrics[metrics["label"].isin(["normal", "abnormal"])]
    if labelled["label"].nunique() == 2:
        aurocs = single_metric_auroc(labelled).sort_values(ascending=False)
        metadata["metric_auroc_top20"] = frame_table(
            aurocs.head(20).rename("auroc").to_frame(), index=True
        )
    abnormal = rows[rows["label"] == "abnormal"].head(1)
    if len(abnormal):
        image = load_images(abnormal, preset.image_size, inbox.storage_options())[0]
        image_id = str(abnormal.iloc[0]["image_id"])
        drawn = patches_figure(image, result.patches[result.patches["image_id"] == image_id])
        metadata["selected_patches"] = image_markdown(drawn, "abnormal image with its patches")
    yield dg.Output(
        metrics,
        output_name="training_metrics",
        data_version=dg.DataVersion(hash_frame(metrics)[:16]),
        metadata=metadata,
    )
    yield dg.Output(
        result.patches,
        output_name="training_patches",
        data_version=dg.DataVersion(hash_frame(result.patches)[:16]),
        metadata=table_metadata(result.patches),
    )


def reconstruction_parts_folder(context: dg.AssetExecutionContext) -> str:
    """Where a shift's reconstruction parts are stored, relative to the storage base: beside
    the asset's own versions (``<asset key>/<partition>/parts``)."""
    return "/".join([*context.asset_key.path, context.partition_key, "parts"])


@dg.asset(
    io_manager_key="json_io_manager",
    partitions_def=shift_partitions,
    group_name="production",
    pool=TORCH_POOL,
    retry_policy=COMPUTE_RETRY,
)
@stops_on_interrupt
def batch_reconstructions(
    context: dg.AssetExecutionContext,
    batch_images: pd.DataFrame,
    released_model: dict,
    settings: PipelineSettings,
    inbox: BatchInbox,
    storage: StorageLocation,
) -> dg.Output[dict]:
    """x_hat of every readable image of the shift by the released VQGAN, with the model's
    per-image outputs, stored one reconstruction batch at a time as content-addressed ``.npz``
    parts: the value is the list of parts (path, digest, image ids), so memory stays bounded
    by one batch however large the shift."""
    preset = settings.get_preset()
    if len(batch_images) == 0:
        raise dg.Failure(f"batch {context.partition_key}: no readable images to reconstruct")
    release = Release(released_model, storage)
    context.log.info(f"release {release.release_id}: VQGAN {release.digest('vqgan_checkpoint')}")
    checkpoint = checkpoint_from_payload(
        bytes_to_checkpoint(release.stored_bytes("vqgan_checkpoint"))
    )
    # the release's engine, not the settings': a shift is reconstructed as the units that
    # calibrated its threshold were
    model = compile_vqgan(checkpoint.model, release.engine)
    context.log.info(f"reconstructions by the {release.engine} engine")
    folder = reconstruction_parts_folder(context)
    parts: list[dict] = []
    mse_sum = 0.0
    throughput = Throughput(
        f"batch_reconstructions[{context.partition_key}]", len(batch_images), context.log.info
    )
    for rows, images in iter_image_batches(
        batch_images, preset.batch_size, preset.image_size, inbox.storage_options()
    ):
        result = reconstruct(
            model,
            images,
            batch_size=preset.batch_size,
            discriminator=checkpoint.discriminator,
        )
        frame = reconstruction_frame(result)
        ids = rows["image_id"].to_numpy(dtype=str)
        arrays = {
            "image_id": ids,
            "x_hat": result.x_hat,
            **{f"output_{c}": frame[c].to_numpy(np.float64) for c in frame.columns},
        }
        stored = store_part(storage, folder, arrays_to_npz(arrays), ".npz")
        parts.append({**stored, "image_ids": ids.tolist()})
        mse_sum += float(frame["mse"].sum())
        throughput.update(len(images))
    value = {"images": len(batch_images), "release_id": release.release_id, "parts": parts}
    return dg.Output(
        value,
        data_version=dg.DataVersion(hash_strings(part["digest"] for part in parts)[:16]),
        metadata={
            "images": len(batch_images),
            "parts": len(parts),
            "images_per_second": throughput.images_per_second,
            "mean_mse": mse_sum / len(batch_images),
            "release_id": release.release_id,
            "engine": release.engine,
        },
    )


def iter_reconstructions(
    value: dict, batch_images: pd.DataFrame, storage: StorageLocation
) -> Iterator[tuple[pd.DataFrame, dict[str, np.ndarray]]]:
    """(rows of ``batch_images``, their stored reconstruction part) one part at a time, each
    part's digest verified and its image ids checked against the rows (in order)."""
    ids = batch_images["image_id"].astype(str).tolist()
    stored_ids = [image_id for part in value["parts"] for image_id in part["image_ids"]]
    if stored_ids != ids:
        raise dg.Failure("batch_reconstructions does not match batch_images: rematerialize it")
    position = 0
    for part in value["parts"]:
        arrays = npz_to_arrays(read_verified(storage, part["path"], part["digest"]))
        rows = batch_images.iloc[position : position + len(part["image_ids"])]
        if arrays["image_id"].tolist() != rows["image_id"].astype(str).tolist():
            raise dg.Failure(
                f"{part['path']}: its images are not the ones batch_reconstructions lists for "
                "them: rematerialize batch_reconstructions"
            )
        position += len(rows)
        yield rows, arrays


@dg.multi_asset(
    outs={
        "batch_metrics": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            description="The metric table of the batch (one row per image).",
        ),
        "batch_patches": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            description="The q selected patches of every image and variant, with distances.",
        ),
    },
    partitions_def=shift_partitions,
    group_name="production",
    pool=TORCH_POOL,
    retry_policy=COMPUTE_RETRY,
)
@stops_on_interrupt
def batch_metrics(
    context: dg.AssetExecutionContext,
    batch_images: pd.DataFrame,
    batch_reconstructions: dict,
    released_model: dict,
    settings: PipelineSettings,
    inbox: BatchInbox,
    storage: StorageLocation,
):
    """GanoDIP localisation and the metric table of the shift's reconstructed images, with the
    released checkpoint, mask and statistics."""
    preset = settings.get_preset()
    release = Release(released_model, storage)
    weighting_mask = npz_to_arrays(release.stored_bytes("weighting_mask"))
    _, choice = model_bundle(
        bytes_to_checkpoint(release.stored_bytes("vqgan_checkpoint")), settings
    )
    context.log.info(f"perceptual backbone: {choice.note}")
    normal, localize = normal_of(weighting_mask), settings.localize_config()
    records, patch_frames = [], []
    seconds: dict[str, float] = {}
    throughput = Throughput(
        f"batch_metrics[{context.partition_key}]", len(batch_images), context.log.info
    )
    for rows, part in iter_reconstructions(batch_reconstructions, batch_images, storage):
        outputs = {k.removeprefix("output_"): v for k, v in part.items() if k.startswith("output_")}
        new_records, new_patches = metric_rows(
            rows,
            load_images(rows, preset.image_size, inbox.storage_options()),
            part["x_hat"],
            pd.DataFrame(outputs),
            choice.backbone,
            normal=normal,
            config=localize,
            golden=weighting_mask.get("golden"),
            masks=ground_truth_masks(rows, preset.image_size, inbox.storage_options()),
            seconds=seconds,
        )
        records += new_records
        patch_frames += new_patches
        throughput.update(len(rows))
    metrics, patches = assemble_table(records, patch_frames)
    yield dg.Output(
        metrics,
        output_name="batch_metrics",
        data_version=dg.DataVersion(hash_frame(metrics)[:16]),
        metadata={
            **table_metadata(metrics),
            **table_summary(metrics),
            "backbone": choice.note,
            "images_per_second": throughput.images_per_second,
            "seconds_per_image": dg.MetadataValue.json(
                {k: v / max(len(metrics), 1) for k, v in seconds.items()}
            ),
        },
    )
    yield dg.Output(
        patches,
        output_name="batch_patches",
        data_version=dg.DataVersion(hash_frame(patches)[:16]),
        metadata=table_metadata(patches),
    )


@dg.asset_check(
    automation_condition=on_checked_asset_request("batch_metrics"),
    asset="batch_metrics",
    additional_ins={"batch_images": dg.AssetIn(key("batch_images"))},  # prefix: not added
    blocking=True,
    partitions_def=shift_partitions,
    description="The metric table is complete: one row per image, every metric finite.",
)
def batch_metrics_complete(
    batch_metrics: pd.DataFrame, batch_images: pd.DataFrame
) -> dg.AssetCheckResult:
    metric_cols = metric_columns(batch_metrics)
    values = batch_metrics[metric_cols].to_numpy(np.float64)
    bad_rows = batch_metrics.loc[~np.isfinite(values).all(axis=1), "image_id"].tolist()
    same_images = list(batch_metrics["image_id"]) == list(batch_images["image_id"])
    return dg.AssetCheckResult(
        passed=bool(same_images and not bad_rows),
        metadata={"rows": len(batch_metrics), "non_finite_rows": len(bad_rows)},
        description=None
        if same_images and not bad_rows
        else f"rows differ from batch_images: {not same_images}; non-finite: {bad_rows[:5]}",
    )
