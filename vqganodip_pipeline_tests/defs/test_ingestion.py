"""Ingestion assets for a reference batch and a shift, the inbox sensor, and `defs` loading."""

from pathlib import Path

import dagster as dg
import pandas as pd

from vqganodip_pipeline.defs import ingestion
from vqganodip_pipeline.defs.keys import name_of
from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.sensors import InboxCursor, batch_inbox_sensor
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.storage import StorageLocation, io_managers
from vqganodip_pipeline_tests.builders import make_mvtec_tree, write_png


def make_inbox(root: Path) -> Path:
    make_mvtec_tree(root / "reference", n_train=24, n_test_good=8, per_defect=4)
    write_png(root / "shift-01" / "u1.png", 1)
    write_png(root / "shift-01" / "u2.png", 2)
    (root / "shift-01" / "broken.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_ingestion_of_a_reference_batch_and_a_shift_then_split(tmp_path: Path) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(reference_partitions.name, ["reference"])
    instance.add_dynamic_partitions(shift_partitions.name, ["shift-01"])
    resources = {
        **io_managers(StorageLocation(base_path=str(tmp_path / "storage"))),
        "inbox": BatchInbox(root=str(inbox_root)),
        "settings": PipelineSettings(preset="demo"),
    }
    assets = [ingestion.reference_images, ingestion.batch_images, ingestion.dataset_split]
    manifests = {}
    for key, node in (("reference", "reference_images"), ("shift-01", "batch_images")):
        outputs = [node, node.replace("images", "quarantine")]
        result = dg.materialize(
            assets, selection=outputs, partition_key=key, resources=resources, instance=instance
        )
        assert result.success
        manifests[key] = result.output_for_node(node, outputs[0])
        quarantine = result.output_for_node(node, outputs[1])
        materialization = result.asset_materializations_for_node(node)[0]
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
    # only the reference batch feeds the model side
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


def _tick(instance: dg.DagsterInstance, inbox: BatchInbox, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, resources={"inbox": inbox}, cursor=cursor)
    result = batch_inbox_sensor(context)
    if isinstance(result, dg.SkipReason):
        return result, context.cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, result.cursor


def test_sensor_registers_reference_batches_and_shifts_once(tmp_path: Path) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    (inbox_root / "incoming").mkdir()
    write_png(inbox_root / "incoming" / "a.png", 5)  # still being copied: too recent
    (inbox_root / "_staging").mkdir()
    write_png(inbox_root / "_staging" / "b.png", 6)  # "_" folders are never batches
    instance = dg.DagsterInstance.ephemeral()
    inbox = BatchInbox(root=str(inbox_root), settle_seconds=3600)
    (inbox_root / "reference" / "_READY").write_text("")
    result, cursor = _tick(instance, inbox, None)
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "reference_batches"
    assert list(request.partition_keys) == ["reference"]
    assert result.run_requests == []  # scoring is the automation's job
    skipped, cursor = _tick(instance, inbox, cursor)
    assert isinstance(skipped, dg.SkipReason)
    settled = BatchInbox(root=str(inbox_root), settle_seconds=0.0)
    result, cursor = _tick(instance, settled, cursor)
    assert instance.get_dynamic_partitions("shifts") == ["incoming", "shift-01"]
    assert instance.get_dynamic_partitions("reference_batches") == ["reference"]
    assert set(InboxCursor.parse(cursor).seen) == {"incoming", "reference", "shift-01"}


def test_sensor_promotes_a_shift_with_late_labels_and_reingests_a_corrected_batch(
    tmp_path: Path,
) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    instance = dg.DagsterInstance.ephemeral()
    inbox = BatchInbox(root=str(inbox_root), settle_seconds=0.0)
    _, cursor = _tick(instance, inbox, None)
    assert instance.get_dynamic_partitions("shifts") == ["shift-01"]
    # the operator confirms the labels of the shift afterwards
    (inbox_root / "shift-01" / "labels.csv").write_text("file,label\nu1.png,normal\n")
    result, cursor = _tick(instance, inbox, cursor)
    assert instance.get_dynamic_partitions("reference_batches") == ["reference", "shift-01"]
    # the labels changed the folder: the shift is ingested again, under a new run key
    keys = {(r.job_name, r.partition_key) for r in result.run_requests}
    assert ("process_batch", "shift-01") in keys
    first_keys = {r.run_key for r in result.run_requests}
    # a corrected image: re-ingested again, with another run key
    write_png(inbox_root / "shift-01" / "u2.png", 9)
    import os

    os.utime(inbox_root / "shift-01" / "u2.png", (1e9, 1e9))
    result, cursor = _tick(instance, inbox, cursor)
    assert {r.partition_key for r in result.run_requests} == {"shift-01"}
    assert not first_keys & {r.run_key for r in result.run_requests}
    skipped, _ = _tick(instance, inbox, cursor)
    assert isinstance(skipped, dg.SkipReason)


def test_sensor_rechecks_a_bounded_number_of_known_folders_per_tick(tmp_path: Path) -> None:
    from vqganodip_pipeline.defs.sensors import plan_tick

    inbox_root = tmp_path / "inbox"
    for n in range(5):
        write_png(inbox_root / f"shift-{n}" / "u.png", n)
    inbox = BatchInbox(root=str(inbox_root), settle_seconds=0.0)
    inspected: list[str] = []
    original = BatchInbox.inspect

    class Counting(BatchInbox):
        def inspect(self, name, now=None):  # type: ignore[no-untyped-def]
            inspected.append(name)
            return original(self, name, now)

    counting = Counting(root=str(inbox_root), settle_seconds=0.0)
    cursor = InboxCursor()
    plan = plan_tick(counting, cursor, set(), set(), recheck_per_tick=2)
    assert sorted(plan.new_shifts) == [f"shift-{n}" for n in range(5)]
    inspected.clear()
    shifts = set(plan.new_shifts)
    plan_tick(counting, cursor, set(), shifts, recheck_per_tick=2)
    assert inspected == ["shift-0", "shift-1"]
    inspected.clear()
    plan_tick(counting, cursor, set(), shifts, recheck_per_tick=2)
    assert inspected == ["shift-2", "shift-3"]
    assert inbox.ready_batches() == sorted(shifts)


def test_ready_markers_are_not_images(tmp_path: Path) -> None:
    inbox_root = make_inbox(tmp_path / "inbox")
    (inbox_root / "shift-01" / "_READY").write_text("")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shift_partitions.name, ["shift-01"])
    result = dg.materialize(
        [ingestion.batch_images],
        partition_key="shift-01",
        resources={
            **io_managers(StorageLocation(base_path=str(tmp_path / "storage"))),
            "inbox": BatchInbox(root=str(inbox_root)),
        },
        instance=instance,
    )
    quarantine = result.output_for_node("batch_images", "batch_quarantine")
    assert list(quarantine["relative_path"]) == ["broken.png"]


def test_definitions_load() -> None:
    from vqganodip_pipeline.definitions import defs

    keys = {name_of(k) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert all(k.path[0] == "vqganodip" for k in defs.resolve_asset_graph().get_all_asset_keys())
    assert {"reference_images", "batch_images", "batch_quarantine", "dataset_split"} <= keys
    assert "released_model" in keys
    for job in defs.resolve_all_job_defs():
        assert job.name


def test_split_of_a_first_deployment_with_one_labelled_batch(tmp_path: Path) -> None:
    # Dagster hands a single partition over as a bare frame: the split must still work.
    inbox_root = make_inbox(tmp_path / "inbox")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(reference_partitions.name, ["reference"])
    resources = {
        **io_managers(StorageLocation(base_path=str(tmp_path / "storage"))),
        "inbox": BatchInbox(root=str(inbox_root)),
        "settings": PipelineSettings(preset="tiny"),
    }
    assets = [ingestion.reference_images, ingestion.dataset_split]
    dg.materialize(
        assets,
        selection=["reference_images", "reference_quarantine"],
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
