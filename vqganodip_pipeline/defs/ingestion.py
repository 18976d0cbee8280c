"""Ingestion assets: manifests with their quarantine of reference batches and of production
shifts (one ingestion step for both), and the seeded dataset split of the reference data."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from vqganodip_pipeline.data import split
from vqganodip_pipeline.data.images import DEFAULT_MAX_PIXELS
from vqganodip_pipeline.data.loading import load_image
from vqganodip_pipeline.data.manifest import build_manifest, label_counts
from vqganodip_pipeline.data.sources import scan_source
from vqganodip_pipeline.data.split import SplitConfig, assign_roles, role_counts
from vqganodip_pipeline.defs.automation import CHECK_AUTOMATION
from vqganodip_pipeline.defs.metadata import (
    counts_table,
    frame_table,
    image_markdown,
    table_metadata,
)
from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
from vqganodip_pipeline.defs.policies import IO_RETRY, stops_on_interrupt
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.hashing import hash_frame
from vqganodip_pipeline.viz import contact_sheet

THUMBNAILS = 12


class BatchImagesConfig(dg.Config):
    """How to read a batch folder."""

    layout: str = Field(
        default="",
        description="mvtec, deeppcb, folders or folder; empty = the inbox's (auto-detected)",
    )
    expected_width: int = Field(default=0, description="required width in px; 0 = any")
    expected_height: int = Field(default=0, description="required height in px; 0 = any")
    expected_channels: int = Field(
        default=0, description="required channels (1 grey, 3 RGB); 0 = any"
    )
    deeppcb_train_fraction: float = Field(
        default=0.5, description="share of DeepPCB pairs on the reconstruction side"
    )
    seed: int = Field(default=0, description="seeds the DeepPCB pair split and max_groups")
    mixed_sizes: bool = Field(
        default=False,
        description="accept images of another size than the batch's most common one (they are "
        "resized to the working size); off = they are quarantined",
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        description="a file whose header declares more pixels is quarantined undecoded",
    )
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


def ingest_batch_folder(
    context: dg.AssetExecutionContext, config: BatchImagesConfig, inbox: BatchInbox
) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Scan ``<inbox>/<partition>``, read every file once: (manifest, quarantine, and the
    metadata of each). The one ingestion step of reference batches and shifts."""
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
        max_pixels=config.max_pixels,
        # local inboxes: links must stay inside the inbox (on S3 there are no links)
        landing_zone=None if "://" in inbox.root else inbox.root,
        mixed_sizes=config.mixed_sizes,
    )
    for row in quarantine.itertuples():
        context.log.warning(f"quarantined {row.uri}: {row.reason}")
    context.log.info(
        f"batch {batch}: {len(found)} images read ({layout} layout), {len(quarantine)} quarantined"
    )
    sizes = found.groupby(["width", "height"]).size() if len(found) else pd.Series(dtype=int)
    grid = thumbnail_grid(found, inbox)
    found_metadata = {
        **table_metadata(found),
        "layout": layout,
        "source": root,
        "labels": counts_table(label_counts(found)),
        "sizes": dg.MetadataValue.md(
            ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.items()) or "none"
        ),
        **({"samples": grid} if grid is not None else {}),
    }
    quarantine_metadata = {
        **table_metadata(quarantine),
        "quarantined": frame_table(quarantine[["relative_path", "reason"]])
        if len(quarantine)
        else dg.MetadataValue.md("nothing quarantined"),
    }
    return found, quarantine, found_metadata, quarantine_metadata


def _outputs(names: tuple[str, str], ingested: tuple) -> Iterator[dg.Output]:
    found, quarantine, found_metadata, quarantine_metadata = ingested
    yield dg.Output(
        found,
        output_name=names[0],
        data_version=dg.DataVersion(hash_frame(found)[:16]),
        metadata=found_metadata,
    )
    yield dg.Output(
        quarantine,
        output_name=names[1],
        data_version=dg.DataVersion(hash_frame(quarantine)[:16]),
        metadata=quarantine_metadata,
    )


MANIFEST_DESCRIPTION = (
    "Manifest of the readable images of a batch: content-hash id, URI, size, channels, label, "
    "defect type, mask or boxes, capture statistics."
)
QUARANTINE_DESCRIPTION = "Files of the batch that could not be used, each with its reason."


def ingestion_asset(
    prefix: str,
    partitions: dg.DynamicPartitionsDefinition,
    group: str,
    what: str,
) -> dg.AssetsDefinition:
    """The ``<prefix>_images`` + ``<prefix>_quarantine`` multi-asset of one kind of batch
    folder (reference batches and shifts are read the same way, by one step)."""
    images, quarantine = f"{prefix}_images", f"{prefix}_quarantine"

    @dg.multi_asset(
        name=images,
        outs={
            images: dg.AssetOut(
                io_manager_key="parquet_io_manager",
                description=f"{MANIFEST_DESCRIPTION} {what}",
            ),
            quarantine: dg.AssetOut(
                io_manager_key="parquet_io_manager", description=QUARANTINE_DESCRIPTION
            ),
        },
        partitions_def=partitions,
        group_name=group,
        retry_policy=IO_RETRY,
    )
    @stops_on_interrupt
    def ingest(
        context: dg.AssetExecutionContext, config: BatchImagesConfig, inbox: BatchInbox
    ) -> Iterator[dg.Output]:
        yield from _outputs((images, quarantine), ingest_batch_folder(context, config, inbox))

    return ingest


reference_images = ingestion_asset(
    "reference", reference_partitions, "reference", "Labelled reference data for the model side."
)
batch_images = ingestion_asset("batch", shift_partitions, "production", "A production shift.")


def has_images(manifest: pd.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=len(manifest) > 0,
        metadata={"images": len(manifest)},
        description=None if len(manifest) else "every file of the batch was quarantined",
    )


@dg.asset_check(
    automation_condition=CHECK_AUTOMATION,
    asset="batch_images",
    blocking=True,
    partitions_def=shift_partitions,
    description="The shift has readable images.",
)
def batch_has_images(batch_images: pd.DataFrame) -> dg.AssetCheckResult:
    return has_images(batch_images)


@dg.asset_check(
    automation_condition=CHECK_AUTOMATION,
    asset="reference_images",
    blocking=True,
    partitions_def=reference_partitions,
    description="The reference batch has readable images.",
)
def reference_has_images(reference_images: pd.DataFrame) -> dg.AssetCheckResult:
    return has_images(reference_images)


class DatasetSplitConfig(dg.Config):
    """Which labelled batches feed the model side, and the sizes of the roles."""

    batches: list[str] = Field(
        default_factory=list, description="labelled batches to use; empty = all of them"
    )
    m: int = Field(default=0, description="mask-calibration images; 0 = the preset's m")
    val_fraction: float = Field(
        default=0.1, description="share of the reconstruction-side normals validating the VQGAN"
    )
    max_val: int = Field(default=32, description="at most this many VQGAN validation images")
    holdout_fraction: float = Field(
        default=-1.0, description="share of evaluation groups in holdout; < 0 = the preset's"
    )
    balance_normals: bool = Field(
        default=True,
        description="move surplus normals from the classifier set to the reconstruction side",
    )
    seed: int = Field(default=0, description="seeds every role assignment")


@dg.asset(
    io_manager_key="parquet_io_manager",
    group_name="model",
    # reference batches registered but not ingested yet are skipped
    ins={"reference_images": dg.AssetIn(metadata={"allow_missing_partitions": True})},
)
def dataset_split(
    context: dg.AssetExecutionContext,
    config: DatasetSplitConfig,
    reference_images: dict[str, pd.DataFrame],
    settings: PipelineSettings,
) -> dg.Output[pd.DataFrame]:
    """Labelled images of the chosen reference batches, each assigned a seeded role:
    vqgan_train, vqgan_val, mask_calibration, classifier_set, holdout (or unused)."""
    chosen = config.batches or sorted(reference_images)
    missing = sorted(set(chosen) - set(reference_images))
    if missing and config.batches:
        raise dg.Failure(f"reference batches not ingested yet: {', '.join(missing)}")
    frames = [reference_images[b] for b in chosen if len(reference_images[b])]
    labelled = [f for f in frames if f["label"].isin(["normal", "abnormal"]).any()]
    if not labelled:
        raise dg.Failure(
            "no labelled images in the chosen reference batches; ingest a labelled batch "
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
            "roles": frame_table(counts, index=True),
        },
    )


__all__ = [
    "batch_has_images",
    "batch_images",
    "dataset_split",
    "reference_has_images",
    "reference_images",
]
