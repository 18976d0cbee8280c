"""Audit trail of one decision: ``vqganodip trace IMAGE_ID``.

From the Dagster instance (runs and materializations) and the asset storage (local or S3) it
finds every scored row of an image, by its content-hash id (a unique prefix is enough), and
prints the chain: shift and file, whether the file still has the bytes that were scored, the
``batch_scores`` materialization and its run, the release that decided it and, for each
artefact of that release, its stored file, digest and the run that made it; then the score,
threshold, decision and the statement of risk the threshold came with.
"""

from typing import Any

import dagster as dg
import pandas as pd

from vqganodip_pipeline import serialization
from vqganodip_pipeline.data.fs import read_bytes
from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.defs.release import RELEASED
from vqganodip_pipeline.defs.storage import StorageLocation, StoredFileError, read_verified
from vqganodip_pipeline.hashing import image_id as content_id


class TraceError(LookupError):
    """The image or a link of its chain cannot be found; the message says which."""


def _stored(location: StorageLocation, metadata: dict[str, Any]) -> bytes:
    return read_verified(location, str(metadata["stored_path"]), str(metadata["stored_digest"]))


def _metadata(record: Any) -> dict[str, Any]:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def find_release(instance: dg.DagsterInstance, location: StorageLocation, release_id: str) -> dict:
    """The manifest of release ``release_id``, from its materialization in the instance."""
    for record in instance.fetch_materializations(key(RELEASED), limit=1000).records:
        metadata = _metadata(record)
        if metadata.get("release_id") == release_id:
            manifest = serialization.json_to_dict(_stored(location, metadata))
            return {**manifest, "materialization_run_id": record.run_id}
    raise TraceError(f"release {release_id}: no materialization of {RELEASED} has that id")


def trace_image(
    instance: dg.DagsterInstance,
    location: StorageLocation,
    image_id: str,
    storage_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every scored row of ``image_id`` (or a unique prefix of it) with its full lineage."""
    if len(image_id) < 6:
        raise TraceError("give at least 6 characters of the image id")
    scores_key = key("batch_scores")
    found = []
    releases: dict[str, dict[str, Any]] = {}  # manifests read once per release
    for shift in sorted(instance.get_materialized_partitions(scores_key)):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=scores_key, asset_partitions=[shift]), limit=1
        ).records
        if not records:
            continue
        metadata = _metadata(records[0])
        scores = serialization.parquet_to_frame(_stored(location, metadata))
        rows = scores[scores["image_id"].astype(str).str.startswith(image_id)]
        for row in rows.to_dict("records"):
            found.append(
                _chain(instance, location, row, shift, records[0], storage_options, releases)
            )
    if not found:
        raise TraceError(f"image {image_id}: not in the latest batch_scores of any shift")
    ids = {entry["image_id"] for entry in found}
    if len(ids) > 1:
        raise TraceError(f"image id prefix {image_id} is ambiguous: {', '.join(sorted(ids))}")
    return found


def _chain(
    instance: dg.DagsterInstance,
    location: StorageLocation,
    row: dict[str, Any],
    shift: str,
    record: Any,
    storage_options: dict[str, Any] | None,
    releases: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    try:
        unchanged: bool | None = content_id(read_bytes(str(row["uri"]), storage_options)) == str(
            row["image_id"]
        )
    except (OSError, ValueError):
        unchanged = None  # the file is gone or unreachable
    release_id = str(row.get("release_id", ""))
    manifest = None
    if release_id and release_id not in releases:
        try:
            releases[release_id] = find_release(instance, location, release_id)
        except (TraceError, StoredFileError) as error:
            releases[release_id] = {"error": str(error)}
    if release_id:
        manifest = releases[release_id]
    return {
        "image_id": str(row["image_id"]),
        "shift": shift,
        "file": str(row["uri"]),
        "file_unchanged": unchanged,
        "score": float(row["score"]),
        "threshold": float(row["threshold"]),
        "decision": str(row["decision"]),
        "seen_in_training": bool(row.get("seen_in_training", False)),
        "scored_by_run": record.run_id,
        "scored_at": pd.Timestamp(record.timestamp, unit="s", tz="UTC").isoformat(),
        "release_id": release_id,
        "digests": {
            name: str(row.get(f"{name}_digest", ""))
            for name in ("checkpoint", "mask", "classifier")
        },
        "release": manifest,
    }


def format_trace(entries: list[dict[str, Any]]) -> str:
    """The chain of :func:`trace_image` as lines a person reads."""
    lines = []
    for entry in entries:
        unchanged = {True: "yes", False: "NO (changed since scoring)", None: "cannot be read"}
        lines += [
            f"image {entry['image_id']}",
            f"  shift        {entry['shift']}",
            f"  file         {entry['file']}  (same bytes as scored: "
            f"{unchanged[entry['file_unchanged']]})",
            f"  scored       run {entry['scored_by_run']} at {entry['scored_at']}",
            f"  decision     {entry['decision']}: score {entry['score']:.4f} against threshold "
            f"{entry['threshold']:.4f}"
            + ("  (an image the model side learnt from)" if entry["seen_in_training"] else ""),
            f"  release      {entry['release_id']}",
        ]
        manifest = entry["release"] or {}
        if "error" in manifest:
            lines.append(f"    {manifest['error']}")
        for name, artefact in manifest.get("artefacts", {}).items():
            lines.append(
                f"    {name:<22} {artefact['path']}  digest {artefact['digest']}  "
                f"made by run {artefact['run_id']} at {artefact['materialized_at']}"
            )
        if manifest.get("checks_passed"):
            lines.append(f"    checks passed: {', '.join(manifest['checks_passed'])}")
        if manifest.get("risk"):
            lines.append(f"    threshold's risk: {manifest['risk']}")
    return "\n".join(lines)
