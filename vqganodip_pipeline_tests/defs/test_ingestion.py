"""Ingestion assets materialized for two batch partitions, the sensor, and `defs` loading."""

from pathlib import Path

import dagster as dg
import pandas as pd

from vqganodip_pipeline.defs import ingestion
from vqganodip_pipeline.defs.partitions import batch_partitions
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.sensors import batch_inbox_sensor
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.storage import StorageLocation, io_managers
from vqganodip_pipeline_tests.builders import make_mvtec_tree, write_png


def make_inbox(root: Path) -> Path:
    make_mvtec_tree(root / "reference", n_train=24, n_test_good=8, per_defect=4)
    write_png(root / "shift-01" / "u1.png", 1)
    write_png(root / "shift-01" / "u2.png", 2)
    (root / "shift-01" / "broken.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_ingestion_for_two_partitions_then_split(tmp_path: Path) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(batch_partitions.name, ["reference", "shift-01"])
    resources = {
        **io_managers(StorageLocation(base_path=str(tmp_path / "storage"))),
        "inbox": BatchInbox(root=str(inbox_root)),
        "settings": PipelineSettings(preset="demo"),
    }
    assets = [ingestion.batch_images, ingestion.dataset_split]
    manifests = {}
    for key in ("reference", "shift-01"):
        result = dg.materialize(
            assets,
            selection=["batch_images", "batch_quarantine"],
            partition_key=key,
            resources=resources,
            instance=instance,
        )
        assert result.success
        manifests[key] = result.output_for_node("batch_images", "batch_images")
        quarantine = result.output_for_node("batch_images", "batch_quarantine")
        materialization = result.asset_materializations_for_node("batch_images")[0]
        assert materialization.metadata["dagster/row_count"].value == len(manifests[key])
        assert "samples" in materialization.metadata
    assert len(manifests["reference"]) == 24 + 8 + 8
    assert list(quarantine["relative_path"]) == ["broken.png"]
    assert (manifests["shift-01"]["label"] == "unknown").all()

    result = dg.materialize(
        assets, selection=["dataset_split"], resources=resources, instance=instance
    )
    assert result.success
    split = result.output_for_node("dataset_split")
    # only the labelled batch feeds the model side
    assert set(split["batch"]) == {"reference"}
    counts = split.groupby("role").size()
    assert counts["classifier_set"] + counts["holdout"] == 16
    # the data version is the content hash: re-running on the same data keeps it
    again = dg.materialize(
        assets, selection=["dataset_split"], resources=resources, instance=instance
    )
    assert again.success
    pd.testing.assert_frame_equal(again.output_for_node("dataset_split"), split)
    versions = [
        run.asset_materializations_for_node("dataset_split")[0].tags["dagster/data_version"]
        for run in (result, again)
    ]
    assert versions[0] == versions[1] and len(versions[0]) == 16


def test_sensor_registers_ready_batches_once(tmp_path: Path) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    (inbox_root / "incoming").mkdir()
    write_png(inbox_root / "incoming" / "a.png", 5)  # still being copied: too recent
    instance = dg.DagsterInstance.ephemeral()
    inbox = BatchInbox(root=str(inbox_root), settle_seconds=3600)
    (inbox_root / "reference" / "_READY").write_text("")
    context = dg.build_sensor_context(instance=instance, resources={"inbox": inbox})
    result = batch_inbox_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["reference"]
    instance.add_dynamic_partitions(batch_partitions.name, ["reference"])
    assert isinstance(batch_inbox_sensor(context), dg.SkipReason)
    settled = BatchInbox(root=str(inbox_root), settle_seconds=0.0)
    context = dg.build_sensor_context(instance=instance, resources={"inbox": settled})
    result = batch_inbox_sensor(context)
    assert sorted(r.partition_key for r in result.run_requests) == ["incoming", "shift-01"]


def test_definitions_load() -> None:
    from vqganodip_pipeline.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"batch_images", "batch_quarantine", "dataset_split"} <= keys
    for job in defs.resolve_all_job_defs():
        assert job.name


def test_split_of_a_first_deployment_with_one_labelled_batch(tmp_path: Path) -> None:
    # Dagster hands a single partition over as a bare frame: the split must still work.
    inbox_root = make_inbox(tmp_path / "inbox")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(batch_partitions.name, ["reference"])
    resources = {
        **io_managers(StorageLocation(base_path=str(tmp_path / "storage"))),
        "inbox": BatchInbox(root=str(inbox_root)),
        "settings": PipelineSettings(preset="tiny"),
    }
    assets = [ingestion.batch_images, ingestion.dataset_split]
    dg.materialize(
        assets,
        selection=["batch_images", "batch_quarantine"],
        partition_key="reference",
        resources=resources,
        instance=instance,
    )
    result = dg.materialize(
        assets, selection=["dataset_split"], resources=resources, instance=instance
    )
    assert result.success
    split = result.output_for_node("dataset_split")
    assert set(split["batch"]) == {"reference"} and len(split) == 40
    # the tiny preset's m = 6 mask-calibration images (capped at a quarter of the recon side)
    assert (split["role"] == "mask_calibration").sum() == min(6, 24 // 4)
