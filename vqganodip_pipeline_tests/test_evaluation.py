"""`vqganodip evaluate`: clear errors before training, and a complete report on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqganodip_pipeline.cli import main
from vqganodip_pipeline.data.synthetic import write_mvtec_dataset
from vqganodip_pipeline.evaluation import DatasetError, EvaluationConfig, prepare
from vqganodip_pipeline.reporting import validate_report
from vqganodip_pipeline_tests.builders import write_png


def test_missing_path_unknown_layout_and_no_abnormal_images_fail_before_training(
    tmp_path: Path,
) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        prepare(EvaluationConfig(dataset=str(tmp_path / "absent")))
    with pytest.raises(DatasetError, match="unknown layout 'coco'"):
        prepare(EvaluationConfig(dataset=str(tmp_path), layout="coco"))
    for i in range(4):
        write_png(tmp_path / "normal" / f"{i}.png", i)
    with pytest.raises(DatasetError, match="no abnormal images found"):
        prepare(EvaluationConfig(dataset=str(tmp_path), layout="folders"))


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
    assert main(["evaluate", "--dataset", str(dataset), "--preset", "tiny", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["layout"] == "mvtec" and report["image_size"] == 64
    assert report["n_abnormal"] == 24 and report["n_normal"] == 60
    assert {"paper", "honest"} <= set(report["protocols"])
    # the paper protocol's in-sample threshold misses nothing by construction
    assert report["protocols"]["paper"]["zfn"]["missed"] == 0
    assert {"raw_mse", "golden_sample"} <= set(report["baselines"])
    assert 0.0 <= report["localization_hit_rate"] <= 1.0
    assert report["seconds_per_image"]["end_to_end"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Protocols" in html
    assert (out / "metrics.parquet").is_file()
