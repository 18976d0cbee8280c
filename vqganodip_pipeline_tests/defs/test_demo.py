"""The README's main job, end to end on the tiny preset: every asset materialized, the checks
recorded, the production batch scored, and the results readable from a persistent instance."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from vqganodip_pipeline.cli import main
from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.reporting import validate_report


@pytest.mark.slow
def test_demo_runs_the_whole_graph_on_the_tiny_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["demo", "--preset", "tiny", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[demo] production batch: 8 units" in out
    assert "honest protocol (unseen folds)" in out

    instance = dg.DagsterInstance.get()
    for name in (
        "released_model",
        "dataset_split",
        "vqgan_checkpoint",
        "weighting_mask",
        "training_metrics",
        "training_patches",
        "composite_score_model",
        "evaluation_report",
        "evaluation_report_html",
    ):
        assert instance.get_latest_materialization_event(key(name)) is not None, name
    for name in ("batch_images", "batch_reconstructions", "batch_metrics", "batch_scores"):
        event = instance.get_latest_materialization_event(key(name))
        assert event is not None and event.dagster_event.partition == "shift-0001", name
    # the feature statistics learn from every normal unit outside the classifier set
    mask_event = instance.get_latest_materialization_event(key("weighting_mask"))
    mask_metadata = mask_event.asset_materialization.metadata
    assert mask_metadata["feature_statistics_units"].value > mask_metadata["m"].value
    # synthetic boards are measured to be at a fixed position: the mask and statistics apply
    assert mask_metadata["position"].value.startswith("fixed (auto:")
    assert mask_metadata["weighting_mask"].value and mask_metadata["standardized"].value
    assert all(0 <= v <= 1 for v in mask_metadata["feature_covariance_shrinkage"].value)
    # the shipped threshold says which rule set it and whether the gap rule lowered it
    composite_event = instance.get_latest_materialization_event(key("composite_score_model"))
    composite_metadata = composite_event.asset_materialization.metadata
    assert composite_metadata["threshold_rule"].value == "gap"
    lowered = composite_metadata["threshold_lowered_to_normals"].value
    assert ("just above the highest score" in composite_metadata["risk"].value) == lowered
    scores_event = instance.get_latest_materialization_event(key("batch_scores"))
    metadata = scores_event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 8
    stored = Path(metadata["stored_file"].value)
    assert stored.is_file() and stored.is_relative_to(tmp_path / "storage")
    assert "release" in out and "scored by release" in out
    # the audit trail of one scored unit, from the instance and storage the demo wrote
    scores = pd.read_parquet(stored)
    image = str(scores.iloc[0]["image_id"])
    assert main(["trace", image[:8], "--storage", str(tmp_path / "storage")]) == 0
    trail = capsys.readouterr().out
    assert f"image {image}" in trail and "shift-0001" in trail
    assert scores.iloc[0]["release_id"] in trail
    assert scores.iloc[0]["checkpoint_digest"] in trail and "same bytes as scored: yes" in trail
    report_event = instance.get_latest_materialization_event(key("evaluation_report"))
    report_file = Path(report_event.asset_materialization.metadata["stored_file"].value)
    report = json.loads(report_file.read_text())
    validate_report(report)
    assert report["n_abnormal"] > 0 and report["n_normal"] > 0
    assert report["seconds_per_image"]["end_to_end"] > 0
    # a second run reuses the batches and the stored data; nothing stored is overwritten
    files_before = {p: p.stat().st_mtime for p in (tmp_path / "storage").rglob("*.parquet")}
    assert main(["demo", "--preset", "tiny", "--workdir", str(tmp_path)]) == 0
    for path, mtime in files_before.items():
        assert path.stat().st_mtime == mtime, f"{path} was rewritten"
