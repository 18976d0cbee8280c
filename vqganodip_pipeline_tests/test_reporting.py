"""The evaluation report: schema check, stable JSON, self-contained HTML, files on disk."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vqganodip_pipeline.data.images import decode_image, encode_png
from vqganodip_pipeline.reporting import (
    REQUIRED_KEYS,
    fmt_pct,
    fmt_seconds,
    render_html,
    report_problems,
    sort_leaderboard,
    to_json,
    validate_report,
    write_report,
)
from vqganodip_pipeline.scoring.conformal import conformal_threshold


def metrics(accuracy: float, fpr: float, fnr: float, tp: int, fp: int, tn: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    return {
        "accuracy": accuracy,
        "precision": precision,
        "fpr": fpr,
        "fnr": fnr,
        "missed": fn,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "threshold": 0.5,
    }


def confusion(tp: int, fp: int, tn: int, fn: int) -> dict:
    n = tp + fp + tn + fn
    return metrics((tp + tn) / n, fp / (fp + tn), fn / (tp + fn), tp, fp, tn, fn)


def example_report() -> dict[str, Any]:
    """A complete report; honest ZFN: tp=20 fp=7 tn=33 fn=0 -> accuracy 53/60 = 88.33 %."""
    honest_zfn = confusion(20, 7, 33, 0)
    honest_zfn["threshold"] = 0.1234
    return {
        "title": "VQGanoDIP evaluation: synthetic-pcba (demo preset)",
        "dataset": "synthetic-pcba",
        "layout": "fixed",
        "preset": "demo",
        "image_size": 64,
        "created": "2024-05-01T12:34:56+00:00",
        "n_normal": 100,
        "n_abnormal": 30,
        "roles": {
            "vqgan_train": {"normal": 40, "abnormal": 0},
            "mask_calibration": {"normal": 10, "abnormal": 0},
            "classifier_set": {"normal": 40, "abnormal": 20},
            "holdout": {"normal": 10, "abnormal": 10},
        },
        "protocols": {
            "paper": {
                "classifier": "ET",
                "std": confusion(18, 1, 39, 2),
                "zfn": confusion(20, 5, 35, 0),
                "note": "leave-one-out; threshold chosen on the evaluated images",
            },
            "honest": {
                "classifier": "ET",
                "std": confusion(17, 2, 38, 3),
                "zfn": honest_zfn,
                "note": "5 outer folds",
            },
        },
        "shipped": {
            "classifier": "ET",
            "n_fit": 80,
            **conformal_threshold(np.linspace(0.2, 0.9, 16), np.ones(16, dtype=int)).to_dict(),
        },
        "holdout": {"std": confusion(9, 0, 10, 1), "zfn": confusion(10, 2, 8, 0)},
        "auroc": 0.9567,
        "auroc_fold_mean": 0.9812,
        "baselines": {
            "raw_mse": {
                "std": confusion(12, 6, 34, 8),
                "zfn": confusion(20, 30, 10, 0),
                "auroc": 0.71,
            },
        },
        "leaderboards": {
            "paper": [
                {"classifier": "RF", "accuracy_std": 0.9, "accuracy_zfn": 0.8, "missed_zfn": 0},
                {"classifier": "ET", "accuracy_std": 0.95, "accuracy_zfn": 0.9167},
            ],
            "honest": [
                {"classifier": "KNN", "zfn_accuracy": 0.5, "std_accuracy": 0.7, "params": "{}"},
                {"classifier": "ET", "zfn_accuracy": 0.8833, "std_accuracy": 0.9167},
            ],
        },
        "localization_hit_rate": 0.85,
        "seconds_per_image": {"reconstruct": 0.012, "localize": 0.25, "end_to_end": 1.5},
        "peak_rss_mb": 812.5,
        "targets": [
            {
                "name": "honest ZFN accuracy",
                "target": ">= 80 %",
                "measured": "88.33 %",
                "met": True,
            },
            {"name": "end-to-end time", "target": "<= 1 s", "measured": "1.5 s", "met": False},
        ],
        "versions": {"torch": "2.13.0", "numpy": "2.1.0"},
        "machine": {"platform": "Linux", "cpu_count": 2},
        "figures": {"scores": {"file": "figures/scores.png", "caption": "Composite scores"}},
    }


def png_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))


class _Collector(HTMLParser):
    """Tags, attributes and visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, name, value) for name, value in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    collector.close()
    return collector


def cells_of_row(page: str, label_start: str) -> list[str]:
    """Text of the <td> cells of the table row whose first cell starts with ``label_start``."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, flags=re.S):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells and cells[0].startswith(label_start):
            return cells
    raise AssertionError(f"no row starting with {label_start!r}")


# ---------------------------------------------------------------------------- validation


def test_complete_example_is_valid_and_required_keys_cover_the_brief() -> None:
    validate_report(example_report())
    for path in (
        "title",
        "dataset",
        "preset",
        "n_normal",
        "n_abnormal",
        "protocols.paper.std.accuracy",
        "protocols.honest.zfn.fnr",
        "protocols.honest.zfn.missed",
        "auroc",
        "baselines",
        "localization_hit_rate",
        "seconds_per_image.end_to_end",
        "peak_rss_mb",
        "versions",
        "machine",
    ):
        assert path in REQUIRED_KEYS
    assert "holdout" not in REQUIRED_KEYS and "figures" not in REQUIRED_KEYS


def test_minimal_report_without_optional_sections_is_valid_and_renders() -> None:
    report = example_report()
    for key in ("layout", "image_size", "created", "roles", "holdout", "leaderboards"):
        del report[key]
    for key in ("targets", "figures"):
        del report[key]
    report["localization_hit_rate"] = None
    for protocol in report["protocols"].values():
        for key in ("classifier", "note"):
            protocol.pop(key, None)
    validate_report(report)
    page = render_html(report)
    assert "Not measured" in page
    assert 'id="targets"' not in page and 'id="figures"' not in page


def test_every_missing_required_path_is_named() -> None:
    report = example_report()
    del report["protocols"]["honest"]["zfn"]["fnr"]
    del report["protocols"]["paper"]["std"]
    del report["seconds_per_image"]["end_to_end"]
    del report["peak_rss_mb"]
    del report["baselines"]["raw_mse"]["zfn"]["missed"]
    del report["localization_hit_rate"]
    with pytest.raises(ValueError) as info:
        validate_report(report)
    message = str(info.value)
    for path in (
        "protocols.honest.zfn.fnr: missing",
        "protocols.paper.std: missing",
        "seconds_per_image.end_to_end: missing",
        "peak_rss_mb: missing",
        "baselines.raw_mse.zfn.missed: missing",
        "localization_hit_rate: missing",
    ):
        assert path in message
    assert "6 problem(s)" in message


def test_ill_typed_values_are_named_with_their_path() -> None:
    report = example_report()
    report["n_abnormal"] = "30"
    report["auroc"] = 95.67  # a percentage where a fraction belongs
    report["protocols"]["honest"]["zfn"]["missed"] = True  # a bool is not a count
    report["protocols"]["paper"] = []
    report["targets"][1]["met"] = "no"
    problems = report_problems(report)
    assert any(p.startswith("n_abnormal: expected an integer") for p in problems)
    assert any(p.startswith("auroc: expected a number in [0, 1]") for p in problems)
    assert any(p.startswith("protocols.honest.zfn.missed: expected an integer") for p in problems)
    assert any(p.startswith("protocols.paper: expected an object") for p in problems)
    assert any(p.startswith("targets[1].met: expected true or false") for p in problems)
    assert len(problems) == 5


def test_nan_and_inf_are_rejected_anywhere_with_their_path() -> None:
    report = example_report()
    report["protocols"]["honest"]["zfn"]["precision"] = float("nan")
    report["baselines"]["raw_mse"]["std"]["threshold"] = float("inf")
    report["machine"]["load"] = [0.5, np.float64("nan")]  # outside the typed schema
    report["leaderboards"]["honest"][0]["extra"] = -math.inf
    problems = report_problems(report)
    assert problems == [
        "protocols.honest.zfn.precision: nan is not a valid JSON number",
        "baselines.raw_mse.std.threshold: inf is not a valid JSON number",
        "leaderboards.honest[0].extra: -inf is not a valid JSON number",
        "machine.load[1]: nan is not a valid JSON number",
    ]
    with pytest.raises(ValueError, match=r"machine\.load\[1\]"):
        to_json(report)


def test_to_json_is_sorted_stable_and_converts_numpy_scalars() -> None:
    report = example_report()
    report["n_normal"] = np.int64(100)
    report["auroc"] = np.float64(0.9567)
    text = to_json(report)
    assert text == to_json(copy.deepcopy(report))
    loaded = json.loads(text)
    assert loaded["n_normal"] == 100 and loaded["auroc"] == 0.9567
    keys = re.findall(r'^  "([^"]+)":', text, flags=re.M)
    assert keys == sorted(keys) and len(keys) == len(example_report())
    with pytest.raises(ValueError, match="Path is not JSON-serialisable"):
        to_json({**report, "machine": {"cwd": Path("/tmp")}})


# ---------------------------------------------------------------------------- HTML


def test_formatting_helpers() -> None:
    assert fmt_pct(0.8793) == "87.93"
    assert fmt_pct(1.0) == "100.00"
    assert fmt_pct(float("nan")) == "\u2013" and fmt_pct(None) == "\u2013"
    assert fmt_seconds(1.5) == "1.50 s" and fmt_seconds(0.012) == "12.0 ms"


def test_html_shows_the_table1_figures_in_paper_format() -> None:
    page = render_html(example_report())
    honest = cells_of_row(page, "Honest protocol (ET)")
    # accuracy STD/ZFN, precision STD/ZFN, FPR STD/ZFN, FNR STD/ZFN, missed STD/ZFN, thr, AUROC
    assert honest[1:] == [
        "91.67",  # (17 + 38) / 60
        "88.33",  # (20 + 33) / 60
        "89.47",  # 17 / 19
        "74.07",  # 20 / 27
        "5.00",
        "17.50",
        "15.00",
        "0.00",
        "3 of 20",
        "0 of 20",
        "0.1234",
        "\u2013",
    ]
    paper = cells_of_row(page, "Paper protocol (ET)")
    assert paper[2] == "91.67" and paper[6] == "12.50"  # ZFN accuracy 55/60, ZFN FPR 5/40
    assert cells_of_row(page, "Holdout")[2] == "90.00"
    baseline = cells_of_row(page, "Baseline: raw_mse")
    assert baseline[2] == "50.00" and baseline[-1] == "0.710"
    # The summary states the honest figure with the shipped threshold's calibration size and its
    # 95 % bound (1 - 0.05^(1/16) = 17.07 %), under its assumption.
    summary = re.search(r'<p class="summary">(.*?)</p>', page, flags=re.S)
    assert summary is not None
    text = re.sub(r"<[^>]+>", "", summary.group(1))
    assert "88.33 %" in text and "16 unseen abnormal images" in text and "17.07 %" in text
    assert "exchangeable" in text
    assert "AUROC 0.957 pooled over the unseen folds, 0.981 as the mean of each fold" in text
    assert "synthetic-pcba" in text
    # without the fold mean (reports of earlier versions) the sentence still closes
    older = example_report()
    del older["auroc_fold_mean"]
    older_page = render_html(older, {"scores": png_bytes()})
    older_summary = re.search(r'<p class="summary">(.*?)</p>', older_page, flags=re.S)
    assert older_summary is not None and "AUROC 0.957." in re.sub(
        r"<[^>]+>", "", older_summary.group(1)
    )
    assert "k/(n+1)" in page and "5.9%" in page  # the expected-miss form, 1/17


def test_html_sections_in_order_and_tags_for_targets() -> None:
    page = render_html(example_report(), {"scores": png_bytes()})
    order = [
        "Targets",
        "Protocols",
        "Leaderboards",
        "Data roles",
        "Localisation",
        "Timing and memory",
        "Figures",
        "Versions and machine",
    ]
    positions = [page.index(f"<h2>{title}</h2>") for title in order]
    assert positions == sorted(positions)
    assert page.index('class="summary"') < positions[0]
    assert page.count('class="tag met"') == 1 and page.count('class="tag missed"') == 1
    assert "1 of 2 targets met" in page
    assert cells_of_row(page, "classifier_set")[1:] == ["40", "20", "60"]
    assert cells_of_row(page, "all")[1:] == ["100", "30", "130"]
    assert "85.00 %" in page  # localisation hit rate
    assert cells_of_row(page, "localize")[1:] == ["250.0 ms", "16.7"]
    assert "812.5 MiB" in page
    environment = page[positions[-1] :]
    assert "<details>" in environment and "2.13.0" in environment and "cpu_count" in environment


def test_leaderboards_are_sorted_by_zfn_accuracy() -> None:
    page = render_html(example_report())
    boards = page[page.index("<h2>Leaderboards</h2>") : page.index("<h2>Data roles</h2>")]
    paper_part, honest_part = boards.split("<h3>Honest protocol</h3>")
    assert paper_part.index(">ET<") < paper_part.index(">RF<")
    assert honest_part.index(">ET<") < honest_part.index(">KNN<")
    assert "91.67" in paper_part and "88.33" in honest_part  # rates shown in percent
    rows = [{"classifier": "b", "accuracy_zfn": None}, {"classifier": "a", "accuracy_zfn": 0.5}]
    rows.append({"classifier": "c", "accuracy_zfn": 0.5, "accuracy_std": 0.9})
    assert [r["classifier"] for r in sort_leaderboard(rows)] == ["c", "a", "b"]


def test_figure_is_embedded_as_data_uri_that_decodes_to_the_png() -> None:
    figure = png_bytes(3)
    page = render_html(example_report(), {"scores": figure})
    collector = parse(page)
    sources = [value for tag, name, value in collector.attrs if tag == "img" and name == "src"]
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    decoded = base64.b64decode(sources[0].split(",", 1)[1])
    assert decoded == figure
    assert decode_image(decoded, "embedded").pixels.shape == (8, 12, 3)
    assert "Composite scores" in "".join(collector.text)


def test_page_is_self_contained_and_escapes_hostile_strings() -> None:
    report = example_report()
    report["dataset"] = '<script>alert("x")</script>'
    report["title"] = "A & B <b>bold</b>"
    report["baselines"]['<img src="http://evil">'] = report["baselines"]["raw_mse"]
    report["versions"]["evil"] = "<iframe src=//evil>"
    page = render_html(report, {"scores": png_bytes()})
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "A &amp; B &lt;b&gt;bold&lt;/b&gt;" in page
    collector = parse(page)
    assert "iframe" not in collector.tags and collector.tags.count("img") == 1
    for tag, name, value in collector.attrs:
        if name in ("src", "href"):
            assert value is not None and not value.lower().startswith(("http", "//"))
            assert value.startswith(("data:image/png;base64,", "#")), (tag, value)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_bad_figures_are_rejected_with_their_name() -> None:
    with pytest.raises(ValueError, match="figure 'scores': expected PNG bytes"):
        render_html(example_report(), {"scores": b"GIF89a not a png"})
    with pytest.raises(ValueError, match=r"figure name '\.\./x'"):
        render_html(example_report(), {"../x": png_bytes()})


# ---------------------------------------------------------------------------- files


def test_write_report_writes_files_and_completes_figure_entries(tmp_path: Path) -> None:
    report = example_report()
    figures = {"scores": png_bytes(1), "mask": png_bytes(2)}
    original = copy.deepcopy(report)
    json_path, html_path = write_report(tmp_path / "out", report, figures)
    assert report == original  # the caller's dict is left alone
    assert json_path == tmp_path / "out" / "report.json"
    assert html_path == tmp_path / "out" / "report.html"
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written["figures"] == {
        "scores": {"file": "figures/scores.png", "caption": "Composite scores"},
        "mask": {"file": "figures/mask.png", "caption": "mask"},
    }
    for name, data in figures.items():
        assert (tmp_path / "out" / written["figures"][name]["file"]).read_bytes() == data
    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "figures",
        "report.html",
        "report.json",
    ]


def test_write_report_moves_a_previous_report_aside(tmp_path: Path) -> None:
    first = example_report()
    write_report(tmp_path, first, {"scores": png_bytes(1)}, {"metrics.parquet": b"first"})
    second = example_report()
    second["created"] = "2024-06-02T08:00:00+00:00"
    second["protocols"]["honest"]["zfn"] = confusion(20, 10, 30, 0)  # 50/60 = 83.33 %
    write_report(tmp_path, second, {"scores": png_bytes(2)}, {"metrics.parquet": b"second"})

    previous = tmp_path / "previous-2024-05-01T12-34-56-00-00"
    assert sorted(p.name for p in previous.iterdir()) == [
        "figures",
        "metrics.parquet",
        "report.html",
        "report.json",
    ]
    assert (previous / "metrics.parquet").read_bytes() == b"first"
    assert (tmp_path / "metrics.parquet").read_bytes() == b"second"
    old = json.loads((previous / "report.json").read_text(encoding="utf-8"))
    new = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert old["created"] == first["created"] and new["created"] == second["created"]
    assert cells_of_row((previous / "report.html").read_text("utf-8"), "Honest")[2] == "88.33"
    assert cells_of_row((tmp_path / "report.html").read_text("utf-8"), "Honest")[2] == "83.33"
    assert (previous / "figures" / "scores.png").read_bytes() == png_bytes(1)
    assert (tmp_path / "figures" / "scores.png").read_bytes() == png_bytes(2)

    # Same created time again: the second move goes to a fresh folder, nothing is lost.
    third = {key: value for key, value in second.items() if key != "figures"}
    write_report(tmp_path, third, {})
    again = tmp_path / "previous-2024-06-02T08-00-00-00-00"
    assert json.loads((again / "report.json").read_text("utf-8"))["created"] == second["created"]
    assert not (tmp_path / "figures").exists()
    write_report(tmp_path, third, {})
    assert (tmp_path / "previous-2024-06-02T08-00-00-00-00-2" / "report.json").exists()


def test_invalid_report_leaves_existing_files_untouched(tmp_path: Path) -> None:
    write_report(tmp_path, example_report(), {"scores": png_bytes()})
    before = (tmp_path / "report.json").read_text("utf-8")
    bad = example_report()
    bad["auroc"] = float("nan")
    with pytest.raises(ValueError, match="auroc"):
        write_report(tmp_path, bad, {"scores": png_bytes()})
    assert (tmp_path / "report.json").read_text("utf-8") == before
    assert not any(p.name.startswith("previous-") for p in tmp_path.iterdir())


def test_write_report_rejects_figure_entries_without_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lists \['scores'\] but no PNG bytes"):
        write_report(tmp_path, example_report(), {})
    assert list(tmp_path.iterdir()) == []
