"""Ingestion assets: batch manifests with their quarantine, and the seeded dataset split."""

import dagster as dg
import pandas as pd
from pydantic import Field

from vqganodip_pipeline.data import fs as data_fs
from vqganodip_pipeline.data import manifest, sources, split
from vqganodip_pipeline.data.loading import load_image
from vqganodip_pipeline.data.manifest import build_manifest, label_counts
from vqganodip_pipeline.data.sources import scan_source
from vqganodip_pipeline.data.split import SplitConfig, assign_roles, role_counts
from vqganodip_pipeline.defs.metadata import (
    counts_markdown,
    frame_markdown,
    image_markdown,
    table_metadata,
)
from vqganodip_pipeline.defs.partitions import batch_partitions
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.hashing import hash_frame
from vqganodip_pipeline.versioning import code_version
from vqganodip_pipeline.viz import contact_sheet

INGEST_VERSION = code_version(sources, manifest, data_fs)
SPLIT_VERSION = code_version(split)
THUMBNAILS = 12


class BatchImagesConfig(dg.Config):
    """How to read a batch folder."""

    layout: str = ""  # "" = the inbox's layout (auto-detected by default)
    expected_width: int = 0  # 0 = accept any size
    expected_height: int = 0
    expected_channels: int = 0  # 0 = accept any; 1 gray, 3 RGB
    deeppcb_train_fraction: float = 0.5  # share of DeepPCB pairs on the reconstruction side
    seed: int = Field(default=0, description="seeds the DeepPCB pair split and max_groups")
    max_groups: int = Field(
        default=0,
        description="read a seeded subset of this many image groups (a DeepPCB pair is one "
        "group, any other image its own), e.g. to bound an evaluation; 0 = all",
    )


def thumbnail_grid(frame: pd.DataFrame, inbox: BatchInbox) -> dg.MarkdownMetadataValue | None:
    """A grid of up to 12 images of a manifest (labelled ones first), with label captions."""
    if len(frame) == 0:
        return None
    order = frame.assign(_unknown=frame["label"].eq("unknown")).sort_values(
        ["_unknown", "label", "defect_type"]
    )
    sample = order.groupby("label", group_keys=False).head(THUMBNAILS // 2).head(THUMBNAILS)
    rows = sample.to_dict("records")
    images = [load_image(row, 128, inbox.storage_options()) for row in rows]
    captions = [f"{row['label'][:3]} {row['defect_type']}" for row in rows]
    return image_markdown(contact_sheet(images, captions, columns=6, thumb=128), "samples")


@dg.multi_asset(
    outs={
        "batch_images": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=INGEST_VERSION,
            description="Manifest of the readable images of a batch: content-hash id, URI, size, "
            "channels, label, defect type, mask or boxes.",
        ),
        "batch_quarantine": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=INGEST_VERSION,
            description="Files of the batch that could not be used, each with its reason.",
        ),
    },
    partitions_def=batch_partitions,
    group_name="production",
)
def batch_images(context: dg.AssetExecutionContext, config: BatchImagesConfig, inbox: BatchInbox):
    """Scan the batch folder ``<inbox>/<partition>`` and read every file once."""
    batch = context.partition_key
    root = inbox.batch_uri(batch)
    layout, entries = scan_source(
        root,
        config.layout or inbox.layout,
        inbox.storage_options(),
        train_fraction=config.deeppcb_train_fraction,
        seed=config.seed,
        max_groups=config.max_groups or None,
    )
    if not entries:
        raise dg.Failure(f"batch {batch!r}: {root} holds no image files")
    expected_size = (
        (config.expected_width, config.expected_height)
        if config.expected_width and config.expected_height
        else None
    )
    found, quarantine = build_manifest(
        entries,
        batch,
        storage_options=inbox.storage_options(),
        expected_size=expected_size,
        expected_channels=config.expected_channels or None,
        layout=layout,
    )
    for row in quarantine.itertuples():
        context.log.warning(f"quarantined {row.uri}: {row.reason}")
    context.log.info(
        f"batch {batch}: {len(found)} images read ({layout} layout), {len(quarantine)} quarantined"
    )
    sizes = found.groupby(["width", "height"]).size() if len(found) else pd.Series(dtype=int)
    grid = thumbnail_grid(found, inbox)
    yield dg.Output(
        found,
        output_name="batch_images",
        data_version=dg.DataVersion(hash_frame(found)[:16]),
        metadata={
            **table_metadata(found),
            "layout": layout,
            "source": root,
            "labels": counts_markdown(label_counts(found)),
            "sizes": dg.MetadataValue.md(
                ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.items()) or "none"
            ),
            **({"samples": grid} if grid is not None else {}),
        },
    )
    yield dg.Output(
        quarantine,
        output_name="batch_quarantine",
        data_version=dg.DataVersion(hash_frame(quarantine)[:16]),
        metadata={
            **table_metadata(quarantine),
            "quarantined": dg.MetadataValue.md(
                frame_markdown(quarantine[["relative_path", "reason"]])
            )
            if len(quarantine)
            else dg.MetadataValue.md("nothing quarantined"),
        },
    )


@dg.asset_check(
    asset="batch_images",
    blocking=True,
    partitions_def=batch_partitions,
    description="The batch has readable images.",
)
def batch_has_images(batch_images: pd.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=len(batch_images) > 0,
        metadata={"images": len(batch_images)},
        description=None if len(batch_images) else "every file of the batch was quarantined",
    )


class DatasetSplitConfig(dg.Config):
    """Which labelled batches feed the model side, and the sizes of the roles."""

    batches: list[str] = Field(
        default_factory=list, description="labelled batches to use; empty = all of them"
    )
    m: int = Field(default=0, description="mask-calibration images; 0 = the preset's m")
    val_fraction: float = 0.1
    max_val: int = 32
    holdout_fraction: float = Field(
        default=-1.0, description="share of evaluation groups in holdout; < 0 = the preset's"
    )
    balance_normals: bool = True
    seed: int = 0


@dg.asset(
    io_manager_key="parquet_io_manager",
    code_version=SPLIT_VERSION,
    group_name="model",
    # batches registered but not ingested yet are skipped (and named in the log)
    ins={"batch_images": dg.AssetIn(metadata={"allow_missing_partitions": True})},
)
def dataset_split(
    context: dg.AssetExecutionContext,
    config: DatasetSplitConfig,
    batch_images: dict[str, pd.DataFrame],
    settings: PipelineSettings,
) -> dg.Output[pd.DataFrame]:
    """Labelled images of the chosen batches, each assigned a seeded role: vqgan_train,
    vqgan_val, mask_calibration, classifier_set, holdout (or unused)."""
    chosen = config.batches or sorted(batch_images)
    missing = sorted(set(chosen) - set(batch_images))
    if missing and config.batches:
        raise dg.Failure(f"batches not ingested yet: {', '.join(missing)}")
    frames = [batch_images[b] for b in chosen if len(batch_images[b])]
    labelled = [f for f in frames if f["label"].isin(["normal", "abnormal"]).any()]
    if not labelled:
        raise dg.Failure(
            "no labelled images in the chosen batches; ingest a labelled batch "
            "(MVTec / DeepPCB / folders layout, or a folder with labels.csv)"
        )
    pooled = pd.concat(labelled, ignore_index=True).drop_duplicates("image_id")
    preset = settings.get_preset()
    split_config = SplitConfig(
        m=config.m or preset.m,
        val_fraction=config.val_fraction,
        max_val=config.max_val,
        holdout_fraction=(
            config.holdout_fraction if config.holdout_fraction >= 0 else preset.holdout_fraction
        ),
        balance_normals=config.balance_normals,
        seed=config.seed,
    )
    try:
        result = assign_roles(pooled, split_config)
    except split.SplitError as exc:
        raise dg.Failure(str(exc)) from exc
    counts = role_counts(result)
    context.log.info("roles:\n" + counts.to_string())
    return dg.Output(
        result,
        data_version=dg.DataVersion(hash_frame(result)[:16]),
        metadata={
            **table_metadata(result),
            "batches": dg.MetadataValue.json(chosen),
            "roles": dg.MetadataValue.md(frame_markdown(counts, index=True)),
        },
    )


__all__ = ["batch_has_images", "batch_images", "dataset_split"]
