"""IO managers round-trip assets on local disk and on a real S3 endpoint (moto_server)."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from upath import UPath

from vqganodip_pipeline.data.fs import StorageUnreachableError
from vqganodip_pipeline.defs.storage import POINTER, StorageLocation, io_managers

PARTS = dg.StaticPartitionsDefinition(["p1", "p2"])


class Knob(dg.Config):
    value: int = 1


def make_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(io_manager_key="parquet_io_manager", partitions_def=PARTS)
    def table(context: dg.AssetExecutionContext, config: Knob) -> pd.DataFrame:
        return pd.DataFrame({"part": [context.partition_key] * 3, "v": [config.value] * 3})

    @dg.asset(io_manager_key="array_io_manager")
    def arrays(config: Knob) -> dict[str, np.ndarray]:
        return {"x": np.full((4, 4), config.value, np.uint8), "ids": np.array(["a", "b"])}

    @dg.asset(io_manager_key="checkpoint_io_manager")
    def checkpoint(config: Knob) -> dict:
        return {"state": {"w": torch.full((2,), float(config.value))}, "config": {"k": 3}}

    @dg.asset(io_manager_key="model_io_manager")
    def fitted(config: Knob) -> dict:
        return {"model": ("ridge", config.value)}

    @dg.asset(io_manager_key="parquet_io_manager")
    def summary(
        table: dict[str, pd.DataFrame], arrays: dict, checkpoint: dict, fitted: dict
    ) -> pd.DataFrame:
        pooled = pd.concat(table.values(), ignore_index=True)
        return pd.DataFrame(
            {
                "rows": [len(pooled)],
                "x": [int(arrays["x"].sum())],
                "w": [float(checkpoint["state"]["w"].sum())],
                "m": [fitted["model"][1]],
            }
        )

    return [table, arrays, checkpoint, fitted, summary]


def run_all(location: StorageLocation, value: int) -> dg.Definitions:
    assets = make_assets()
    resources = io_managers(location)
    run_config = {"ops": {name: {"config": {"value": value}} for name in ("table", "arrays")}}
    run_config["ops"].update({n: {"config": {"value": value}} for n in ("checkpoint", "fitted")})
    for key in ("p1", "p2"):
        result = dg.materialize(
            [assets[0]],
            partition_key=key,
            resources=resources,
            run_config=_only(run_config, "table"),
        )
        assert result.success
    result = dg.materialize(
        assets,
        resources=resources,
        selection=["arrays", "checkpoint", "fitted", "summary"],
        run_config=_without(run_config, "table"),
    )
    assert result.success
    summary = result.output_for_node("summary")
    assert summary.to_dict("records") == [
        {"rows": 6, "x": 16 * value, "w": 2.0 * value, "m": value}
    ]
    return result


def _only(run_config: dict, name: str) -> dict:
    return {"ops": {name: run_config["ops"][name]}}


def _without(run_config: dict, name: str) -> dict:
    return {"ops": {k: v for k, v in run_config["ops"].items() if k != name}}


def check_versions_kept(base: UPath) -> None:
    """Two materializations with different content: both files kept, pointer on the newest."""
    for key in ("arrays", "checkpoint", "fitted", "table/p1", "table/p2"):
        folder = base.joinpath(*key.split("/"))
        files = sorted(p.name for p in folder.iterdir() if p.name != POINTER)
        assert len(files) == 2, (key, files)
        assert (folder / POINTER).read_text().strip() in files


def test_round_trip_on_local_disk_keeps_every_version(tmp_path) -> None:
    location = StorageLocation(base_path=str(tmp_path / "store"))
    run_all(location, 1)
    run_all(location, 2)
    check_versions_kept(UPath(tmp_path / "store"))
    # materializing identical content again adds no file
    run_all(location, 2)
    check_versions_kept(UPath(tmp_path / "store"))


def test_round_trip_on_s3(s3_bucket: str, s3_endpoint: str) -> None:
    location = StorageLocation(base_path=f"s3://{s3_bucket}/assets", endpoint_url=s3_endpoint)
    run_all(location, 1)
    run_all(location, 3)
    check_versions_kept(UPath(f"s3://{s3_bucket}/assets", endpoint_url=s3_endpoint))


def test_unreachable_bucket_is_a_clear_error(s3_endpoint: str, aws_credentials: None) -> None:
    location = StorageLocation(base_path="s3://no-such-bucket/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageUnreachableError, match="s3://no-such-bucket/x"):
        location.upath()


def test_read_verified_checks_the_recorded_digest_and_stays_inside_the_storage(
    tmp_path: Path,
) -> None:
    from vqganodip_pipeline.defs.storage import StoredFileError, read_verified
    from vqganodip_pipeline.hashing import sha256_hex

    location = StorageLocation(base_path=str(tmp_path / "storage"))
    data = b"a released artefact"
    digest = sha256_hex(data)[:16]
    target = tmp_path / "storage" / "asset" / f"{digest}.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    assert read_verified(location, f"asset/{digest}.bin", digest) == data
    target.write_bytes(data + b"!")  # tampered or truncated after the release named it
    with pytest.raises(StoredFileError, match="does not match"):
        read_verified(location, f"asset/{digest}.bin", digest)
    with pytest.raises(StoredFileError, match="missing"):
        read_verified(location, "asset/0000000000000000.bin", "0000000000000000")
    (tmp_path / "outside.bin").write_bytes(data)
    with pytest.raises(StoredFileError, match="not a path inside"):
        read_verified(location, "../outside.bin", digest)


def test_trace_reads_scores_and_release_from_s3(
    s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    import json

    from vqganodip_pipeline import serialization
    from vqganodip_pipeline.defs.keys import key
    from vqganodip_pipeline.defs.lineage import format_trace, trace_image
    from vqganodip_pipeline.hashing import image_id, sha256_hex

    base = f"s3://{s3_bucket}/assets"
    root = UPath(base, endpoint_url=s3_endpoint)
    location = StorageLocation(base_path=base, endpoint_url=s3_endpoint)
    unit = tmp_path / "unit.png"
    unit.write_bytes(b"pretend png bytes")

    def store(asset: str, data: bytes, suffix: str, partition: str | None = None) -> dict:
        digest = sha256_hex(data)[:16]
        relative = "/".join([asset, *([partition] if partition else []), digest + suffix])
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        return {"stored_path": relative, "stored_digest": digest}

    artefacts = {
        name: {**store(name, name.encode(), ".bin"), "run_id": "r0", "materialized_at": "t"}
        for name in ("vqgan_checkpoint", "weighting_mask", "composite_score_model")
    }
    manifest = {
        "release_id": "rel0000000000001",
        "artefacts": {
            name: {"path": a["stored_path"], "digest": a["stored_digest"], **a}
            for name, a in artefacts.items()
        },
        "checks_passed": ["vqgan_checkpoint:vqgan_checkpoint_quality"],
        "risk": "a statement",
    }
    scores = pd.DataFrame(
        {
            "image_id": [image_id(unit.read_bytes())],
            "uri": [str(unit)],
            "score": [0.7],
            "threshold": [0.5],
            "decision": ["to_operator"],
            "release_id": ["rel0000000000001"],
            "checkpoint_digest": [artefacts["vqgan_checkpoint"]["stored_digest"]],
            "mask_digest": [artefacts["weighting_mask"]["stored_digest"]],
            "classifier_digest": [artefacts["composite_score_model"]["stored_digest"]],
        }
    )
    with dg.DagsterInstance.ephemeral() as instance:
        release_meta = store("released_model", json.dumps(manifest).encode(), ".json")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                key("released_model"),
                metadata={**release_meta, "release_id": "rel0000000000001"},
            )
        )
        scores_meta = store(
            "batch_scores", serialization.frame_to_parquet(scores), ".parquet", "shift-9"
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(key("batch_scores"), partition="shift-9", metadata=scores_meta)
        )
        (entry,) = trace_image(instance, location, scores["image_id"][0][:8])
    assert entry["shift"] == "shift-9" and entry["decision"] == "to_operator"
    assert entry["file_unchanged"] is True
    assert entry["release"]["artefacts"]["weighting_mask"]["digest"] == scores["mask_digest"][0]
    assert "rel0000000000001" in format_trace([entry])


def test_inbox_on_s3_sees_folders_that_arrive_between_ticks(
    s3_bucket: str, s3_endpoint: str
) -> None:
    import boto3

    from vqganodip_pipeline.defs.resources import BatchInbox

    # the line uploads with its own client, not through this process's (cached) filesystem
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def upload(key: str, data: bytes) -> None:
        client.put_object(Bucket=s3_bucket, Key=f"inbox/{key}", Body=data)

    upload("shift-1/a.png", b"x")
    inbox = BatchInbox(root=f"s3://{s3_bucket}/inbox", endpoint_url=s3_endpoint, settle_seconds=0.0)
    assert inbox.ready_batches() == ["shift-1"]
    # a long-lived sensor process: fsspec's cached listing must not hide the new folder
    upload("shift-2/b.png", b"y")
    assert inbox.ready_batches() == ["shift-1", "shift-2"]
    before = inbox.inspect("shift-2").fingerprint
    upload("shift-2/c.png", b"z")
    assert inbox.inspect("shift-2").fingerprint != before


def test_stored_parts_round_trip_are_never_rewritten_and_are_checked_on_read(
    tmp_path: Path,
) -> None:
    from vqganodip_pipeline.defs.metric_assets import iter_reconstructions
    from vqganodip_pipeline.defs.storage import StoredFileError, store_part
    from vqganodip_pipeline.serialization import arrays_to_npz

    location = StorageLocation(base_path=str(tmp_path / "storage"))
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(5)]
    parts = []
    for chunk in (ids[:2], ids[2:4], ids[4:]):  # a shift reconstructed two images at a time
        arrays = {
            "image_id": np.array(chunk),
            "x_hat": rng.random((len(chunk), 8, 8, 3), dtype=np.float32),
            "output_mse": rng.random(len(chunk)),
        }
        entry = store_part(location, "recon/shift-1/parts", arrays_to_npz(arrays), ".npz")
        parts.append({**entry, "image_ids": chunk, "x_hat": arrays["x_hat"]})
    first = tmp_path / "storage" / parts[0]["path"]
    stamp = first.stat().st_mtime_ns
    again = store_part(location, "recon/shift-1/parts", first.read_bytes(), ".npz")
    assert again["path"] == parts[0]["path"] and first.stat().st_mtime_ns == stamp
    value = {"parts": [{k: p[k] for k in ("path", "digest", "image_ids")} for p in parts]}
    images = pd.DataFrame({"image_id": ids, "uri": [f"{i}.png" for i in ids]})
    streamed = list(iter_reconstructions(value, images, location))
    assert [rows["image_id"].tolist() for rows, _ in streamed] == [p["image_ids"] for p in parts]
    for (_, arrays), part in zip(streamed, parts, strict=True):
        np.testing.assert_array_equal(arrays["x_hat"], part["x_hat"])
    with pytest.raises(dg.Failure, match="does not match batch_images"):
        list(iter_reconstructions(value, images.iloc[::-1], location))
    original = first.read_bytes()
    first.write_bytes(original[:-1])  # damaged after the asset named it
    with pytest.raises(StoredFileError, match="does not match"):
        list(iter_reconstructions(value, images, location))
    store_part(location, "recon/shift-1/parts", original, ".npz")  # a rerun repairs it
    assert (
        first.read_bytes() == original
        and len(list(iter_reconstructions(value, images, location))) == 3
    )
    with pytest.raises(StoredFileError, match="not a folder inside"):
        store_part(location, "../outside", b"x", ".npz")
