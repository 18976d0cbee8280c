"""Manifests: one row per readable image with its content hash, size, label and provenance;
and the quarantine table of files that could not be used, each with its reason."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from vqganodip_pipeline.data.capture import CAPTURE_COLUMNS, capture_statistics
from vqganodip_pipeline.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    binarize,
    decode_image,
)
from vqganodip_pipeline.data.sources import SourceEntry
from vqganodip_pipeline.hashing import image_id

MANIFEST_COLUMNS: dict[str, str] = {
    "image_id": "string",
    "uri": "string",
    "relative_path": "string",
    "width": "int64",
    "height": "int64",
    "channels": "int64",
    "format": "string",
    "file_bytes": "int64",
    "label": "string",
    "defect_type": "string",
    "mask_uri": "string",
    "boxes": "string",  # JSON list of [x1, y1, x2, y2, type] in the image's own pixels
    "source_split": "string",
    "group_id": "string",
    "batch": "string",
    "layout": "string",  # the layout the batch was read in (sources.LAYOUTS)
    "binarize": "bool",  # the reader thresholds the pixels back to binary (DeepPCB)
    **dict.fromkeys(CAPTURE_COLUMNS, "float64"),  # data/capture.py, on the pixels as read
}
QUARANTINE_COLUMNS: dict[str, str] = {
    "uri": "string",
    "relative_path": "string",
    "batch": "string",
    "reason": "string",
    "file_bytes": "int64",
}


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MANIFEST_COLUMNS.items()})


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in QUARANTINE_COLUMNS.items()})


def _inspect(
    entry: SourceEntry,
    read: Callable[[str], bytes],
    expected_size: tuple[int, int] | None,
    expected_channels: int | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    landing_zone: str | None = None,
) -> tuple[dict[str, Any] | None, str | None, int]:
    """Read and decode one entry: (manifest row, None, bytes) or (None, reason, bytes). Any
    error with one file is that file's reason: the rest of the batch goes on."""
    try:
        return _inspect_file(
            entry, read, expected_size, expected_channels, max_pixels, landing_zone
        )
    except Exception as exc:  # one bad file must not fail the batch; its reason says what
        return None, f"unexpected error while reading ({type(exc).__name__}: {exc})", 0


def _inspect_file(
    entry: SourceEntry,
    read: Callable[[str], bytes],
    expected_size: tuple[int, int] | None,
    expected_channels: int | None,
    max_pixels: int,
    landing_zone: str | None,
) -> tuple[dict[str, Any] | None, str | None, int]:
    if entry.problems:
        return None, "; ".join(entry.problems), 0
    outside = _outside(entry.uri, landing_zone)
    if outside:
        return None, outside, 0
    try:
        data = read(entry.uri)
    except (OSError, ValueError) as exc:
        return None, f"cannot read file: {exc}", 0
    try:
        decoded = decode_image(data, entry.uri, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return None, exc.reason, len(data)
    if expected_size is not None and (decoded.width, decoded.height) != tuple(expected_size):
        return (
            None,
            f"size {decoded.width}x{decoded.height} differs from the expected "
            f"{expected_size[0]}x{expected_size[1]}",
            len(data),
        )
    if expected_channels is not None and decoded.channels != expected_channels:
        return (
            None,
            f"{decoded.channels} channel(s) where {expected_channels} are expected",
            len(data),
        )
    pixels = binarize(decoded.pixels) if entry.binarize else decoded.pixels
    row = {
        "image_id": image_id(data),
        "uri": entry.uri,
        "relative_path": entry.relative_path,
        "width": decoded.width,
        "height": decoded.height,
        "channels": decoded.channels,
        "format": decoded.format,
        "file_bytes": len(data),
        "label": entry.label,
        "defect_type": entry.defect_type,
        "mask_uri": entry.mask_uri,
        "boxes": json.dumps([list(box) for box in entry.boxes]),
        "source_split": entry.source_split,
        "group_id": entry.group_id,
        "binarize": entry.binarize,
        **capture_statistics(pixels, decoded.channels),
    }
    return row, None, len(data)


def _outside(uri: str, landing_zone: str | None) -> str | None:
    """Why a local file may not be read: a link (or path) that resolves outside the landing
    zone. None when it is inside, or for object stores (no links there)."""
    if landing_zone is None or ("://" in uri and not uri.startswith("file://")):
        return None
    path = uri.removeprefix("file://")
    real, zone = os.path.realpath(path), os.path.realpath(landing_zone.removeprefix("file://"))
    if os.path.commonpath([real, zone]) != zone:
        return f"resolves outside the landing zone {zone} (to {real}): not read"
    return None


def build_manifest(
    entries: Sequence[SourceEntry],
    batch: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    expected_size: tuple[int, int] | None = None,
    expected_channels: int | None = None,
    max_workers: int = 8,
    layout: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    landing_zone: str | None = None,
    mixed_sizes: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and decode every entry; return (manifest, quarantine).

    Go to the quarantine table with their reason, the rest of the batch being unaffected:
    unreadable, empty, truncated or non-image files; headers over ``max_pixels``; local files
    (links included) that resolve outside ``landing_zone``; files of an unexpected size
    (``expected_size`` as (width, height)) or channel count; byte-identical duplicates; and,
    unless ``mixed_sizes``, images of another size than the batch's most common one (the
    pipeline would otherwise resize them silently). Rows keep the entries' order.
    """
    from vqganodip_pipeline.data.fs import read_bytes

    def read(uri: str) -> bytes:
        return read_bytes(uri, storage_options)

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        results = list(
            pool.map(
                lambda e: _inspect(
                    e, read, expected_size, expected_channels, max_pixels, landing_zone
                ),
                entries,
            )
        )

    reference = None if mixed_sizes or expected_size else _most_common_size(results)
    rows: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    first_label: dict[str, str] = {}
    conflicts: set[str] = set()
    for entry, (row, reason, n_bytes) in zip(entries, results, strict=True):
        if row is not None and row["image_id"] in seen:
            first = seen[row["image_id"]]
            if first_label[row["image_id"]] != row["label"]:
                # the same bytes cannot be both: neither copy is trusted
                conflicts.add(row["image_id"])
                reason = (
                    f"same bytes as {first}, which is labelled {first_label[row['image_id']]}; "
                    f"labelled {row['label']} here: conflicting labels"
                )
            else:
                reason = f"duplicate content of {first}"
            row = None
        if row is not None and reference and (row["width"], row["height"]) != reference:
            reason = (
                f"size {row['width']}x{row['height']} differs from the batch's "
                f"{reference[0]}x{reference[1]} (its most common size; set mixed_sizes to "
                "accept and resize)"
            )
            row = None
        if row is None:
            quarantined.append(
                {
                    "uri": entry.uri,
                    "relative_path": entry.relative_path,
                    "batch": batch,
                    "reason": reason,
                    "file_bytes": n_bytes,
                }
            )
            continue
        seen[row["image_id"]] = entry.uri
        first_label[row["image_id"]] = row["label"]
        row["group_id"] = row["group_id"] or row["image_id"]
        row["batch"] = batch
        row["layout"] = layout
        rows.append(row)

    for row in [r for r in rows if r["image_id"] in conflicts]:
        rows.remove(row)
        quarantined.append(
            {
                "uri": row["uri"],
                "relative_path": row["relative_path"],
                "batch": batch,
                "reason": f"labelled {row['label']}, but a byte-identical copy in the batch has "
                "another label: conflicting labels",
                "file_bytes": row["file_bytes"],
            }
        )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)) if rows else empty_manifest()
    quarantine = (
        pd.DataFrame(quarantined, columns=list(QUARANTINE_COLUMNS))
        if quarantined
        else empty_quarantine()
    )
    return manifest.astype(MANIFEST_COLUMNS), quarantine.astype(QUARANTINE_COLUMNS)


def _most_common_size(
    results: Sequence[tuple[dict[str, Any] | None, Any, Any]],
) -> tuple[int, int] | None:
    sizes = pd.Series([(r["width"], r["height"]) for r, _, _ in results if r is not None])
    return None if sizes.empty else tuple(sizes.value_counts().index[0])  # type: ignore[return-value]


def boxes_of(row: Mapping[str, Any]) -> list[tuple[int, int, int, int, int]]:
    """The DeepPCB-style boxes of a manifest row."""
    raw = row.get("boxes") or "[]"
    return [tuple(int(v) for v in box) for box in json.loads(raw)]  # type: ignore[misc]


def label_counts(manifest: pd.DataFrame) -> dict[str, int]:
    counts = manifest["label"].value_counts().to_dict() if len(manifest) else {}
    return {label: int(counts.get(label, 0)) for label in ("normal", "abnormal", "unknown")}
