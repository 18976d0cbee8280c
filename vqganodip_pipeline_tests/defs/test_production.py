"""Production semantics on a real Dagster instance (tiny preset): the release gate, exact
staleness through Dagster's own resolver, declarative automation, and the audit trail.

One deployment is built per module (a reference batch trained on, one shift scored) and shared
by the tests in file order; each test starts from what the previous one left, and says so where
it matters (the staleness tests start and end with nothing stale)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from vqganodip_pipeline.definitions import build_definitions
from vqganodip_pipeline.defs.instance import (
    execute_job,
    failed_checks_or_raise,
    prepare_instance_home,
    reclaim_dead_runs,
)
from vqganodip_pipeline.defs.keys import key, name_of
from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
from vqganodip_pipeline.defs.policies import TORCH_POOL
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.demo import PRODUCTION_BATCH, REFERENCE_BATCH, write_demo_batches
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.versioning import module_source

pytestmark = pytest.mark.slow


@dataclass
class Deployment:
    root: Path
    instance: dg.DagsterInstance
    settings: PipelineSettings

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def defs(self, **kwargs: Any) -> dg.Definitions:
        return build_definitions(
            storage_base=str(self.storage),
            inbox_root=str(self.inbox),
            settings=kwargs.pop("settings", self.settings),
            **kwargs,
        )

    def run(
        self, job: str, defs: dg.Definitions | None = None, **kwargs: Any
    ) -> dg.ExecuteInProcessResult:
        result = execute_job(defs or self.defs(), job, self.instance, **kwargs)
        failed_checks_or_raise(job, result)  # raises on any failure but a failed check
        return result

    def materialize(
        self, selection: list[str], defs: dg.Definitions | None = None, **kwargs: Any
    ) -> dg.ExecuteInProcessResult:
        defs = defs or self.defs()
        result = dg.materialize(
            [*(defs.assets or []), *(defs.asset_checks or [])],
            # an AssetSelection of assets includes their checks, as a job does
            selection=dg.AssetSelection.assets(*map(key, selection)),
            instance=self.instance,
            resources=defs.resources,
            raise_on_error=False,
            **kwargs,
        )
        failed_checks_or_raise("materialize", result)
        return result

    def stale(self, defs: dg.Definitions | None = None) -> set[str]:
        """Every asset (``name`` or ``name[partition]``) Dagster's resolver calls STALE."""
        graph = (defs or self.defs()).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(
            self.instance, graph, LoadingContextForTest(self.instance)
        )
        found = set()
        for asset_key in graph.get_all_asset_keys():
            node = graph.get(asset_key)
            if node.partitions_def is None:
                if resolver.get_status(asset_key) == StaleStatus.STALE:
                    found.add(name_of(asset_key))
                continue
            name = node.partitions_def.name
            for partition in self.instance.get_dynamic_partitions(name):
                if resolver.get_status(asset_key, partition) == StaleStatus.STALE:
                    found.add(f"{name_of(asset_key)}[{partition}]")
        return found

    def latest(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key(asset),
                asset_partitions=[partition] if partition else None,
            ),
            limit=1,
        ).records
        assert records, f"{asset} was never materialized"
        return {
            "run_id": records[0].run_id,
            "data_version": records[0].asset_materialization.tags["dagster/data_version"],
            **{k: v.value for k, v in records[0].asset_materialization.metadata.items()},
        }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    preset = get_preset("tiny")
    write_demo_batches(preset, root / "inbox", root / "truth")
    settings = PipelineSettings(preset="tiny", work_dir=str(root / "work"))
    # a persistent instance as the demo writes it (one vqganodip_torch slot), so that a second
    # process (the killed run below) shares it
    home = prepare_instance_home(root / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        deployment = Deployment(root, instance, settings)
        instance.add_dynamic_partitions(reference_partitions.name, [REFERENCE_BATCH])
        instance.add_dynamic_partitions(shift_partitions.name, [PRODUCTION_BATCH])
        deployment.run("ingest_reference", partition_key=REFERENCE_BATCH)
        trained = deployment.run("train_model")
        assert trained.success, "the tiny deployment must release a model"
        deployment.run("process_batch", partition_key=PRODUCTION_BATCH)
        yield deployment


MODEL_SIDE = {
    "dataset_split",
    "vqgan_checkpoint",
    "weighting_mask",
    "training_metrics",
    "training_patches",
    "composite_score_model",
    "released_model",
}
CHAIN = ("batch_reconstructions", "batch_metrics", "batch_patches", "batch_scores")


def chain(shift: str) -> set[str]:
    return {f"{name}[{shift}]" for name in CHAIN}


def test_production_scores_with_the_released_files_and_every_row_names_them(
    deployment: Deployment,
) -> None:
    release = deployment.latest("released_model")
    manifest = pd.read_json(deployment.storage / release["stored_path"], typ="series")
    artefacts = manifest["artefacts"]
    for name in ("vqgan_checkpoint", "weighting_mask", "composite_score_model"):
        latest = deployment.latest(name)
        assert artefacts[name]["digest"] == latest["stored_digest"]
        assert artefacts[name]["path"] == latest["stored_path"]
        assert (deployment.storage / latest["stored_path"]).is_file()
    scores_meta = deployment.latest("batch_scores", PRODUCTION_BATCH)
    scores = pd.read_parquet(deployment.storage / scores_meta["stored_path"])
    assert (scores["release_id"] == manifest["release_id"]).all()
    assert (scores["checkpoint_digest"] == artefacts["vqgan_checkpoint"]["digest"]).all()
    assert (scores["mask_digest"] == artefacts["weighting_mask"]["digest"]).all()
    assert (scores["classifier_digest"] == artefacts["composite_score_model"]["digest"]).all()
    assert (scores["batch"] == PRODUCTION_BATCH).all()
    assert deployment.stale() == set()


def test_a_failed_blocking_check_keeps_the_previous_release_serving(
    deployment: Deployment,
) -> None:
    before = deployment.latest("released_model")
    floors = {"config": {"min_val_psnr_db": 99.0}}
    result = deployment.run(
        "train_model", run_config={"ops": {"vqgan_checkpoint_vqgan_checkpoint_quality": floors}}
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["vqgan_checkpoint_quality"] is False
    assert "released_model" not in {
        name_of(e.asset_key) for e in result.get_asset_materialization_events()
    }
    assert deployment.latest("released_model")["run_id"] == before["run_id"]
    # the rejection is on released_model's timeline, with its reason
    observations = deployment.instance.fetch_observations(key("released_model"), limit=50).records
    reasons = [
        r.asset_observation.metadata["why"].value
        for r in observations
        if "rejected_by" in r.asset_observation.metadata
    ]
    assert any("PSNR" in why for why in reasons)
    # materializing released_model on its own cannot release the rejected checkpoint
    defs = deployment.defs()
    alone = dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=[key("released_model")],
        instance=deployment.instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert not alone.success
    (failure,) = alone.get_step_failure_events()
    assert "vqgan_checkpoint_quality failed" in failure.step_failure_data.error.message
    # a shift scored now still gets the previous release
    deployment.run("process_batch", partition_key=PRODUCTION_BATCH)
    scores = pd.read_parquet(
        deployment.storage / deployment.latest("batch_scores", PRODUCTION_BATCH)["stored_path"]
    )
    assert set(scores["release_id"]) == {before["release_id"]}
    # a passing retrain releases again: a new classifier file (its fit time differs), so a new
    # release id; the same data and seed compute the same, so the data version stays and the
    # scored shift stays fresh
    deployment.run("train_model")
    after = deployment.latest("released_model")
    assert after["run_id"] != before["run_id"]
    assert after["release_id"] != before["release_id"]
    assert after["data_version"] == before["data_version"]
    assert deployment.stale() == set()


def test_a_code_change_stales_exactly_the_assets_whose_code_imports_it(
    deployment: Deployment,
) -> None:
    module = "vqganodip_pipeline.scoring.thresholds"
    changed = deployment.defs(sources={module: module_source(module) + "\n# changed\n"})
    # the composite score (scoring/) and the batch decision (workflow/scoring.py imports
    # scoring/); not the metric tables, whose code never imports the threshold rule
    expected = {"composite_score_model", f"batch_scores[{PRODUCTION_BATCH}]"}
    assert deployment.stale(changed) == expected
    # the VQGAN, the mask, the split, the ingestion and the reconstructions do not import it
    assert deployment.stale() == set()
    # materializing the stale ones under the changed code clears them; identical results keep
    # their data versions, so nothing below them goes stale
    deployment.materialize(
        ["training_metrics", "training_patches", "composite_score_model"], changed
    )
    deployment.run("process_batch", changed, partition_key=PRODUCTION_BATCH)
    assert deployment.stale(changed) == set()
    # back to the shipped code: the same set again, cleared the same way
    assert deployment.stale() == expected
    deployment.materialize(["composite_score_model"])
    deployment.materialize(["batch_scores"], partition_key=PRODUCTION_BATCH)
    assert deployment.stale() == set()


def test_settings_that_change_results_stale_everything_past_ingestion(
    deployment: Deployment, tmp_path: Path
) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not the weights the deployment was built with")
    other = PipelineSettings(
        preset="tiny", work_dir=deployment.settings.work_dir, backbone_weights_path=str(weights)
    )
    stale = deployment.stale(deployment.defs(settings=other))
    assert stale >= MODEL_SIDE
    assert chain(PRODUCTION_BATCH) <= stale
    assert not {s for s in stale if s.startswith(("reference_", "batch_images", "batch_quar"))}
    # the device is not a result-changing setting
    on_cpu = PipelineSettings(preset="tiny", work_dir=deployment.settings.work_dir, device="cpu")
    assert deployment.stale(deployment.defs(settings=on_cpu)) == set()


def test_staleness_of_new_shifts_new_reference_data_and_changed_settings(
    deployment: Deployment,
) -> None:
    # a new production shift: its own chain is missing, nothing else changes
    shutil.copytree(deployment.inbox / PRODUCTION_BATCH, deployment.inbox / "shift-0002")
    deployment.instance.add_dynamic_partitions(shift_partitions.name, ["shift-0002"])
    deployment.materialize(["batch_images", "batch_quarantine"], partition_key="shift-0002")
    assert deployment.stale() == set()
    deployment.run("process_batch", partition_key="shift-0002")
    assert deployment.stale() == set()

    # a new labelled reference batch stales the split only (the shifts read the release)
    shutil.copytree(deployment.inbox / REFERENCE_BATCH, deployment.inbox / "reference-2")
    deployment.instance.add_dynamic_partitions(reference_partitions.name, ["reference-2"])
    deployment.run("ingest_reference", partition_key="reference-2")
    assert deployment.stale() == {"dataset_split"}

    # the split with another m (mask-calibration images): its direct children go stale
    split_config = {"ops": {"dataset_split": {"config": {"m": 4, "batches": [REFERENCE_BATCH]}}}}
    deployment.materialize(["dataset_split"], run_config=split_config)
    assert deployment.stale() == {
        "vqgan_checkpoint",
        "weighting_mask",
        "training_metrics",
        "training_patches",
        "composite_score_model",
    }
    # retraining clears the model side and releases; the new release stales every scored shift
    trained = deployment.run("train_model", run_config=split_config)
    assert trained.success
    assert deployment.stale() == chain(PRODUCTION_BATCH) | chain("shift-0002")
    for shift in (PRODUCTION_BATCH, "shift-0002"):
        deployment.run("process_batch", partition_key=shift)
    assert deployment.stale() == set()

    # a classifier setting: another classifier changes the model's data version, which stales
    # the release; releasing it stales the scored shifts
    current = deployment.latest("composite_score_model")["classifier"]
    other = next(c for c in ("lr", "et", "lda") if c.upper() != current.upper())
    config = {"ops": {"composite_score_model": {"config": {"classifiers": [other]}}}}
    deployment.materialize(["composite_score_model"], run_config=config)
    assert deployment.stale() == {"released_model"}
    deployment.materialize(["released_model"])
    assert deployment.stale() == chain(PRODUCTION_BATCH) | chain("shift-0002")
    for shift in (PRODUCTION_BATCH, "shift-0002"):
        deployment.run("process_batch", partition_key=shift)
    assert deployment.stale() == set()


class Automation:
    """Ticks of the declarative automation on the deployment, with the cursor carried over."""

    def __init__(self, deployment: Deployment, defs: dg.Definitions, start: datetime) -> None:
        self.deployment, self.defs, self.now, self.cursor = deployment, defs, start, None

    def tick(self, hours: float = 1.0) -> dict[str, set[str | None]]:
        """Advance the clock, evaluate every condition; ``{asset: requested partitions}``."""
        self.now += timedelta(hours=hours)
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.deployment.instance,
            evaluation_time=self.now,
            cursor=self.cursor,
        )
        self.cursor = result.cursor
        graph = self.defs.resolve_asset_graph()
        requested = {}
        for asset_key in graph.get_all_asset_keys():
            if result.get_num_requested(asset_key):
                partitioned = graph.get(asset_key).partitions_def is not None
                requested[name_of(asset_key)] = (
                    set(result.get_requested_partitions(asset_key)) if partitioned else {None}
                )
        return requested


def test_automation_scores_new_shifts_follows_changes_and_retrains_on_cron_only_if_changed(
    deployment: Deployment,
) -> None:
    # Saturday noon: the weekly cron tick (Sunday 02:00) is 14 hours away
    ticks = Automation(
        deployment, deployment.defs(), datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    )
    assert ticks.tick() == {}  # everything materialized: nothing to do
    # a newly registered shift: its whole chain, in one tick, with the current release
    shutil.copytree(deployment.inbox / PRODUCTION_BATCH, deployment.inbox / "shift-0003")
    deployment.instance.add_dynamic_partitions(shift_partitions.name, ["shift-0003"])
    requested = ticks.tick()
    assert requested == {
        name: {"shift-0003"} for name in ("batch_images", "batch_quarantine", *CHAIN)
    }
    deployment.run("process_batch", partition_key="shift-0003")
    assert ticks.tick() == {}
    # the cron tick passes with nothing changed: no retraining
    assert ticks.tick(hours=24) == {}
    # a blocking check failed on a new checkpoint: nothing downstream of it runs
    floors = {"config": {"min_val_psnr_db": 99.0}}
    deployment.materialize(
        ["vqgan_checkpoint"],
        run_config={"ops": {"vqgan_checkpoint_vqgan_checkpoint_quality": floors}},
    )
    assert ticks.tick() == {}
    # the next week's cron tick: the checkpoint's check still failed, so the model side
    # waits (retraining through a failed check would release nothing)
    assert "weighting_mask" not in ticks.tick(hours=24 * 7)
    # a passing checkpoint: its downstream follows on the next tick, the shifts are not
    # re-scored (rescore_on_release is off) ...
    deployment.materialize(["vqgan_checkpoint"])
    requested = ticks.tick()
    assert set(requested) == {
        "weighting_mask",
        "training_metrics",
        "training_patches",
        "composite_score_model",
        "released_model",
        "evaluation_report",
        "evaluation_report_html",
        "evaluation_figures",
    }
    deployment.run("train_model")
    assert ticks.tick() == {}
    # a new reference batch: ingested at once, but the model side waits for the cron tick
    shutil.copytree(deployment.inbox / REFERENCE_BATCH, deployment.inbox / "reference-3")
    deployment.instance.add_dynamic_partitions(reference_partitions.name, ["reference-3"])
    assert ticks.tick() == {
        "reference_images": {"reference-3"},
        "reference_quarantine": {"reference-3"},
    }
    deployment.run("ingest_reference", partition_key="reference-3")
    assert ticks.tick() == {}
    assert set(ticks.tick(hours=24 * 7)) >= MODEL_SIDE


def test_rescore_on_release_rescores_every_shift(deployment: Deployment) -> None:
    defs = deployment.defs(rescore_on_release=True)
    ticks = Automation(deployment, defs, datetime(2026, 12, 2, 12, tzinfo=timezone.utc))
    assert not {k for k in ticks.tick() if k.startswith("batch_")}
    deployment.materialize(["released_model"], defs)
    requested = ticks.tick()
    shifts = set(deployment.instance.get_dynamic_partitions(shift_partitions.name))
    for name in CHAIN:
        assert requested[name] == shifts, name
    assert "batch_images" not in requested


def test_trace_prints_the_chain_of_a_scored_image(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    from vqganodip_pipeline.defs.lineage import trace_image
    from vqganodip_pipeline.defs.storage import StorageLocation

    scores = pd.read_parquet(
        deployment.storage / deployment.latest("batch_scores", PRODUCTION_BATCH)["stored_path"]
    )
    row = scores.iloc[0]
    entries = trace_image(
        deployment.instance,
        StorageLocation(base_path=str(deployment.storage)),
        row["image_id"][:10],
    )
    mine = [e for e in entries if e["shift"] == PRODUCTION_BATCH]
    assert len(mine) == 1 and mine[0]["file_unchanged"] is True
    entry = mine[0]
    assert entry["decision"] == row["decision"] and entry["score"] == pytest.approx(row["score"])
    assert entry["release"]["release_id"] == row["release_id"]
    artefacts = entry["release"]["artefacts"]
    assert artefacts["vqgan_checkpoint"]["digest"] == row["checkpoint_digest"]
    assert artefacts["composite_score_model"]["digest"] == row["classifier_digest"]
    # the same image, copied into shift-0002 by the staleness test, appears once per shift
    assert sorted(e["shift"] for e in entries) == sorted({e["shift"] for e in entries})
    assert {PRODUCTION_BATCH, "shift-0002"} <= {e["shift"] for e in entries}
    # a file changed after scoring is reported as such
    path = Path(entry["file"])
    original = path.read_bytes()
    path.write_bytes(original + b"\0")
    try:
        changed = trace_image(
            deployment.instance, StorageLocation(base_path=str(deployment.storage)), row["image_id"]
        )
        assert [e["file_unchanged"] for e in changed if e["shift"] == PRODUCTION_BATCH] == [False]
    finally:
        path.write_bytes(original)


SCORE_IN_ANOTHER_PROCESS = """
import sys

import dagster as dg

from vqganodip_pipeline.definitions import build_definitions
from vqganodip_pipeline.defs.instance import execute_job
from vqganodip_pipeline.defs.settings import PipelineSettings

home, storage, inbox, work, shift = sys.argv[1:]
defs = build_definitions(
    storage_base=storage, inbox_root=inbox, settings=PipelineSettings(preset="tiny", work_dir=work)
)
with dg.DagsterInstance.from_config(home) as instance:
    execute_job(defs, "process_batch", instance, partition_key=shift)
"""


def test_a_scoring_run_killed_mid_batch_reruns_to_the_same_rows(deployment: Deployment) -> None:
    """SIGKILL (no cleanup runs) while ``batch_metrics`` works on the shift: the killed run's
    pool slot is reclaimed (else the re-run would wait for it forever), and the re-run scores
    every image of the shift exactly once, with the scores of before."""
    before = deployment.run("process_batch", partition_key=PRODUCTION_BATCH).output_for_node(
        "batch_scores"
    )  # scored with the release now serving
    script = deployment.root / "score.py"
    script.write_text(SCORE_IN_ANOTHER_PROCESS)
    args = [str(deployment.root / "dagster_home"), str(deployment.storage)]
    args += [str(deployment.inbox), deployment.settings.work_dir, PRODUCTION_BATCH]
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if 'Started execution of step "batch_metrics"' in line:
                # at once: on the tiny preset the step takes well under a second, and the
                # killed run must still hold its pool slot
                process.send_signal(signal.SIGKILL)
                break
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    finally:
        if process.poll() is None:
            process.kill()
    pool = deployment.instance.event_log_storage.get_concurrency_info(TORCH_POOL)
    (killed,) = pool.active_run_ids
    assert reclaim_dead_runs(deployment.instance) == [killed]
    assert not deployment.instance.event_log_storage.get_concurrency_info(TORCH_POOL).claimed_slots
    assert deployment.instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    rerun = deployment.run("process_batch", partition_key=PRODUCTION_BATCH)
    after = rerun.output_for_node("batch_scores")
    images = pd.read_parquet(
        deployment.storage / deployment.latest("batch_images", PRODUCTION_BATCH)["stored_path"]
    )
    assert after["image_id"].is_unique and len(after) == len(images)
    assert set(after["image_id"]) == set(images["image_id"])
    pd.testing.assert_frame_equal(
        after.set_index("image_id").sort_index()[["score", "decision"]],
        before.set_index("image_id").sort_index()[["score", "decision"]],
    )
