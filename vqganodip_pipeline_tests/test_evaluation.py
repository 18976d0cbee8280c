"""`vqganodip evaluate`: clear errors before training, and a complete report on a tiny run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from vqganodip_pipeline.cli import main
from vqganodip_pipeline.data.sources import DatasetLayoutError, SourceEntry, sample_groups
from vqganodip_pipeline.data.synthetic import write_mvtec_dataset
from vqganodip_pipeline.evaluation import (
    DatasetError,
    EvaluationConfig,
    check_dataset_path,
    run_evaluation,
)
from vqganodip_pipeline.reporting import validate_report
from vqganodip_pipeline.workflow.report import check_targets
from vqganodip_pipeline_tests.builders import write_png


def test_missing_path_unknown_layout_and_no_abnormal_images_fail_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path / "absent")))
    with pytest.raises(DatasetError, match="unknown layout 'coco'"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path), layout="coco"))
    with pytest.raises(DatasetError, match="position must be one of"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path), position="loose"))
    with pytest.raises(DatasetError, match=r"--downsampling 6: .*power of two"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path), downsampling=6))
    check_dataset_path(EvaluationConfig(dataset=str(tmp_path), downsampling=4))
    with pytest.raises(DatasetError, match=r"--backbone-layers: .*'3,,6'"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path), backbone_layers="3,,6"))
    check_dataset_path(EvaluationConfig(dataset=str(tmp_path), backbone_layers="3,6,10"))
    with pytest.raises(DatasetError, match="engine must be one of"):
        check_dataset_path(EvaluationConfig(dataset=str(tmp_path), engine="tensorrt"))
    with monkeypatch.context() as patch:  # a runtime that is not installed, before training
        patch.setitem(sys.modules, "openvino", None)
        with pytest.raises(
            DatasetError, match=r"--engine openvino: .*pip install -e '\.\[engines\]'"
        ):
            check_dataset_path(EvaluationConfig(dataset=str(tmp_path), engine="openvino"))
    data = tmp_path / "data"
    for i in range(4):
        write_png(data / "normal" / f"{i}.png", i)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="no abnormal images found"):
        run_evaluation(EvaluationConfig(dataset=str(data), layout="folders"), out, log=print)
    # one abnormal image cannot fill the calibration part and the folds: refused before training
    write_png(data / "abnormal" / "0.png", 99)
    with pytest.raises(DatasetError, match="too few labelled images"):
        run_evaluation(EvaluationConfig(dataset=str(data), layout="folders"), out, log=print)
    assert not (out / "work").exists()  # no training started


def test_cli_reports_bad_input_as_an_error_line(tmp_path: Path, capsys) -> None:
    code = main(["evaluate", "--dataset", str(tmp_path / "x"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "dataset path does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tiny_evaluation_writes_a_complete_report(tmp_path: Path) -> None:
    dataset = write_mvtec_dataset(
        tmp_path / "synthetic", n_normal=60, n_abnormal=24, size=64, seed=3
    )
    out = tmp_path / "report"
    # the VQGAN's own encoder as the patch backbone, named in the report
    arguments = ["--preset", "tiny", "--backbone", "vqgan_encoder", "--out", str(out)]
    assert main(["evaluate", "--dataset", str(dataset), *arguments]) == 0
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["backbone"].startswith("vqgan_encoder[")
    assert report["layout"] == "mvtec" and report["image_size"] == 64
    assert report["n_abnormal"] == 24 and report["n_normal"] == 60
    assert {"paper", "honest"} <= set(report["protocols"])
    # the paper protocol's in-sample threshold misses nothing by construction
    assert report["protocols"]["paper"]["zfn"]["missed"] == 0
    assert {"raw_mse", "golden_sample"} <= set(report["baselines"])
    assert 0.0 <= report["localization_hit_rate"] <= 1.0
    # both AUROCs of the honest composite, as its leaderboard row has them
    composite = next(r for r in report["leaderboards"]["honest"] if r["classifier"] == "composite")
    assert report["auroc"] == composite["auroc_pooled"]
    assert report["auroc_fold_mean"] == composite["auroc_fold_mean"]
    assert report["baselines"]["raw_mse"]["auroc_fold_mean"] == next(
        r["auroc_fold_mean"]
        for r in report["leaderboards"]["honest"]
        if r["classifier"] == "raw_mse"
    )
    assert report["seconds_per_image"]["end_to_end"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Protocols" in html
    # the shipped threshold's statement of risk and the shortcut check are in the report
    shipped = report["shipped"]
    assert shipped["n_calibration"] >= 1 and shipped["k"] == 1 and shipped["n_below"] == 0
    assert "exchangeable" in shipped["statement"] and shipped["statement"] in html.replace(
        "&#x27;", "'"
    )
    assert "capture_shortcut" in report["baselines"] and "Shortcut check" in html
    assert {"ingest_reference", "train_model", "evaluate_model"} <= set(report["runs_seconds"])

    # One path: the same asset graph materialized directly with its defaults (as the demo and
    # the UI do), in another storage, instance and work folder, gives the same metric table.
    metrics = pd.read_parquet(out / "metrics.parquet")
    direct = materialize_directly(dataset, tmp_path / "direct", preset="tiny")
    pd.testing.assert_frame_equal(
        metrics.sort_values("image_id").reset_index(drop=True),
        direct.sort_values("image_id").reset_index(drop=True),
    )


def materialize_directly(dataset: Path, root: Path, preset: str) -> pd.DataFrame:
    """training_metrics of ingest_reference + train_model run with default configs."""
    import dagster as dg

    from vqganodip_pipeline.definitions import build_definitions
    from vqganodip_pipeline.defs.partitions import reference_partitions
    from vqganodip_pipeline.defs.settings import PipelineSettings

    defs = build_definitions(
        storage_base=str(root / "storage"),
        inbox_root=str(dataset.parent),
        settings=PipelineSettings(
            preset=preset, backbone="vqgan_encoder", work_dir=str(root / "work")
        ),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(reference_partitions.name, [dataset.name])
        defs.resolve_job_def("ingest_reference").execute_in_process(
            instance=instance, partition_key=dataset.name
        )
        # a tiny model may fail a blocking check; the metric table is made before the holdout one
        result = defs.resolve_job_def("train_model").execute_in_process(
            instance=instance, raise_on_error=False
        )
        return result.output_for_node("training_metrics", "training_metrics")


def test_sample_groups_keeps_whole_groups_and_is_seeded() -> None:
    entries = [
        SourceEntry(uri=f"p{i // 2}_{i % 2}.png", relative_path="", group_id=f"pair{i // 2}")
        for i in range(20)
    ] + [SourceEntry(uri=f"single{i}.png", relative_path="") for i in range(5)]
    subset = sample_groups(entries, 6, seed=3)
    keys = [e.group_id or e.uri for e in subset]
    assert len(set(keys)) == 6
    for key in set(keys):  # a pair is never split
        assert keys.count(key) == (2 if key.startswith("pair") else 1)
    assert subset == sample_groups(entries, 6, seed=3)
    assert subset != sample_groups(entries, 6, seed=4)
    assert sample_groups(entries, 100, seed=0) == entries
    with pytest.raises(DatasetLayoutError, match="max_groups"):
        sample_groups(entries, 0, seed=0)


def test_check_targets_compares_with_numbers_and_other_report_values() -> None:
    report = {
        "auroc": 0.93,
        "protocols": {"honest": {"zfn": {"accuracy": 0.8}}},
        "baselines": {"raw_mse": {"zfn": {"accuracy": 0.85}}},
        "seconds_per_image": {"end_to_end": 0.4},
    }
    checked = check_targets(
        report,
        [
            {"name": "auroc", "path": "auroc", "op": ">=", "value": 0.99},
            {
                "name": "beats raw MSE",
                "path": "protocols.honest.zfn.accuracy",
                "op": ">=",
                "value": "baselines.raw_mse.zfn.accuracy",
            },
            {"name": "latency", "path": "seconds_per_image.end_to_end", "op": "<=", "value": 0.5},
        ],
    )
    assert [c["met"] for c in checked] == [False, False, True]
    assert checked[0]["gap"] == pytest.approx(0.06)
    assert checked[1]["gap"] == pytest.approx(0.05)
    assert "baselines.raw_mse.zfn.accuracy = 0.85" in checked[1]["target"]
    assert checked[2]["gap"] == 0.0
    with pytest.raises(KeyError, match="no 'nope'"):
        check_targets(report, [{"name": "x", "path": "nope", "op": ">=", "value": 1}])
    with pytest.raises(ValueError, match="op must be"):
        check_targets(report, [{"name": "x", "path": "auroc", "op": ">", "value": 1}])


@pytest.mark.slow
def test_a_candidate_whose_blocking_check_fails_is_still_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vqganodip_pipeline.evaluation as evaluation

    dataset = write_mvtec_dataset(
        tmp_path / "synthetic", n_normal=48, n_abnormal=24, size=64, seed=5
    )
    plain = evaluation.run_config

    def strict(config: EvaluationConfig) -> dict:
        full = plain(config)
        # a floor no tiny VQGAN reaches: the blocking quality check fails
        full["ops"]["vqgan_checkpoint_vqgan_checkpoint_quality"] = {
            "config": {"min_val_psnr_db": 99.0}
        }
        return full

    monkeypatch.setattr(evaluation, "run_config", strict)
    lines: list[str] = []
    _, html_path, report = run_evaluation(
        EvaluationConfig(dataset=str(dataset), preset="tiny"), tmp_path / "out", log=lines.append
    )
    assert [c["check"] for c in report["failed_checks"]] == [
        "vqgan_checkpoint:vqgan_checkpoint_quality"
    ]
    assert "< 99.0 dB" in report["failed_checks"][0]["why"]
    assert any("stopped train_model" in line for line in lines)
    page = html_path.read_text()
    assert "check failed" in page and "evaluates it anyway" in page
    validate_report(json.loads((tmp_path / "out" / "report.json").read_text()))
