"""Readers and manifests on real files: MVTec tree, DeepPCB, plain folders with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vqganodip_pipeline.data.images import encode_png
from vqganodip_pipeline.data.loading import load_images, load_mask
from vqganodip_pipeline.data.manifest import MANIFEST_COLUMNS, build_manifest, label_counts
from vqganodip_pipeline.data.sources import (
    DatasetLayoutError,
    detect_layout,
    parse_deeppcb_boxes,
    scan_source,
)
from vqganodip_pipeline.hashing import image_id
from vqganodip_pipeline_tests.builders import make_mvtec_tree, write_png
from vqganodip_pipeline_tests.builders import write_png as _png


def test_mvtec_tree_gives_labels_masks_and_splits(tmp_path: Path) -> None:
    make_mvtec_tree(tmp_path)
    layout, entries = scan_source(str(tmp_path))
    assert layout == "mvtec"
    manifest, quarantine = build_manifest(entries, "b1")
    assert len(quarantine) == 0
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert label_counts(manifest) == {"normal": 4, "abnormal": 2, "unknown": 0}
    assert sorted(manifest["source_split"].unique()) == ["test", "train"]
    scratch = manifest[manifest["defect_type"] == "scratch"].iloc[0]
    assert scratch["mask_uri"].endswith("ground_truth/scratch/000_mask.png")
    mask = load_mask(scratch.to_dict())
    expected = np.zeros((16, 16), bool)
    expected[4:8, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    # the id is the content hash of the file
    first = manifest.iloc[0]
    assert first["image_id"] == image_id(Path(first["uri"]).read_bytes())
    assert (manifest["group_id"] == manifest["image_id"]).all()
    images = load_images(manifest, size=8)
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8


def test_folder_with_bad_files_quarantines_each_with_its_reason(tmp_path: Path) -> None:
    good = _png(tmp_path / "a.png", 1)
    _png(tmp_path / "sub" / "b.png", 2, gray=True)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("operator notes, not an image")
    # a PNG saved with a .jpg extension is still a readable image
    (tmp_path / "wrong_ext.jpg").write_bytes(_png(tmp_path / "tmp.bin", 3))
    (tmp_path / "tmp.bin").unlink()
    (tmp_path / "copy.png").write_bytes(good)

    layout, entries = scan_source(str(tmp_path))
    assert layout == "folder"
    manifest, quarantine = build_manifest(entries, "batch-7")
    assert sorted(manifest["relative_path"]) == ["a.png", "sub/b.png", "wrong_ext.jpg"]
    gray = manifest.set_index("relative_path").loc["sub/b.png"]
    assert gray["channels"] == 1 and gray["label"] == "unknown"
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert set(reasons) == {"empty.png", "truncated.png", "notes.txt", "copy.png"}
    assert "empty" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "not a recognised image" in reasons["notes.txt"]
    assert reasons["copy.png"].startswith("duplicate content of")
    assert (quarantine["batch"] == "batch-7").all()


def test_expected_size_and_channels_quarantine_mismatches(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png", 1, size=16)
    _png(tmp_path / "small.png", 2, size=12)
    _png(tmp_path / "gray.png", 3, size=16, gray=True)
    _, entries = scan_source(str(tmp_path), "folder")
    manifest, quarantine = build_manifest(entries, "b", expected_size=(16, 16), expected_channels=3)
    assert list(manifest["relative_path"]) == ["ok.png"]
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert "12x12 differs from the expected 16x16" in reasons["small.png"]
    assert "1 channel(s) where 3 are expected" in reasons["gray.png"]


def test_labels_csv_labels_listed_files(tmp_path: Path) -> None:
    _png(tmp_path / "u1.png", 1)
    _png(tmp_path / "u2.png", 2)
    _png(tmp_path / "u3.png", 3)
    (tmp_path / "labels.csv").write_text("file,label,defect_type\nu1.png,ok,\nu2.png,NG,bridge\n")
    _, entries = scan_source(str(tmp_path))
    manifest, _ = build_manifest(entries, "b")
    by_name = manifest.set_index("relative_path")
    assert by_name.loc["u1.png", "label"] == "normal"
    assert (by_name.loc["u2.png", "label"], by_name.loc["u2.png", "defect_type"]) == (
        "abnormal",
        "bridge",
    )
    assert by_name.loc["u3.png", "label"] == "unknown"
    (tmp_path / "labels.csv").write_text("file,label\nu1.png,maybe\n")
    with pytest.raises(DatasetLayoutError, match=r"labels.csv:2: unknown label 'maybe'"):
        scan_source(str(tmp_path))


def test_folders_layout_with_masks(tmp_path: Path) -> None:
    _png(tmp_path / "normal" / "n1.png", 1)
    _png(tmp_path / "abnormal" / "bridge" / "a1.png", 2)
    _png(tmp_path / "abnormal" / "a2.png", 3)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a1_mask.png").write_bytes(encode_png(np.full((16, 16), 255, np.uint8)))
    assert detect_layout(str(tmp_path)) == "folders"
    _, entries = scan_source(str(tmp_path))
    manifest, _ = build_manifest(entries, "b")
    by_name = manifest.set_index("relative_path")
    assert by_name.loc["abnormal/bridge/a1.png", "defect_type"] == "bridge"
    assert by_name.loc["abnormal/bridge/a1.png", "mask_uri"].endswith("masks/a1_mask.png")
    assert by_name.loc["abnormal/a2.png", "defect_type"] == "abnormal"
    assert by_name.loc["normal/n1.png", "label"] == "normal"


def test_missing_dataset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        scan_source(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetLayoutError, match="unknown layout 'zip'"):
        scan_source(str(tmp_path), "zip")


def test_deeppcb_box_parsing_accepts_spaces_and_commas() -> None:
    assert parse_deeppcb_boxes("1 2 3 4 5\n\n6,7,8,9,1\n", "x.txt") == (
        (1, 2, 3, 4, 5),
        (6, 7, 8, 9, 1),
    )
    with pytest.raises(DatasetLayoutError, match=r"x\.txt:1"):
        parse_deeppcb_boxes("1 2 3\n", "x.txt")


def test_deeppcb_pairs_share_a_group_and_a_side(deeppcb_root: Path, tmp_path: Path) -> None:
    # A 20-pair subset of the real data, listed in a copy of trainval.txt (images stay in place).
    lines = (deeppcb_root / "trainval.txt").read_text().splitlines()[:20]
    (tmp_path / "trainval.txt").write_text("\n".join(lines))
    for line in lines:
        image_rel, boxes_rel = line.split()
        stem = image_rel[: -len(".jpg")]
        for rel in (f"{stem}_temp.jpg", f"{stem}_test.jpg", boxes_rel):
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(deeppcb_root / rel)
    layout, entries = scan_source(str(tmp_path), train_fraction=0.5, seed=3)
    assert layout == "deeppcb"
    manifest, quarantine = build_manifest(entries, "deeppcb")
    assert len(quarantine) == 0 and len(manifest) == 40
    assert label_counts(manifest) == {"normal": 20, "abnormal": 20, "unknown": 0}
    for _, pair in manifest.groupby("group_id"):
        assert sorted(pair["label"]) == ["abnormal", "normal"]
        assert pair["source_split"].nunique() == 1
    assert set(manifest["source_split"]) == {"train", "test"}
    assert (manifest["width"] == 640).all() and (manifest["height"] == 640).all()
    abnormal = manifest[manifest["label"] == "abnormal"].iloc[0]
    boxes = json.loads(abnormal["boxes"])
    assert boxes and all(len(b) == 5 for b in boxes)
    mask = load_mask(abnormal.to_dict(), size=320)
    x1, y1, x2, y2, _ = boxes[0]
    assert mask.shape == (320, 320)
    assert mask[(y1 + y2) // 4, (x1 + x2) // 4]
    # a listed file that is missing is quarantined with the reason
    missing = tmp_path / f"{lines[0].split()[0][:-4]}_test.jpg"
    missing.unlink()
    _, entries = scan_source(str(tmp_path))
    _, quarantine = build_manifest(entries, "deeppcb")
    assert list(quarantine["reason"]) == ["listed in trainval.txt but missing"]


def _elpv_tree(root: Path, rows: list[tuple[str, float, str]]) -> Path:
    for n, (rel, _, _) in enumerate(rows):
        write_png(root / rel, n, gray=True)
    (root / "labels.csv").write_text(
        "".join(f"{rel}  {p!r:<20s}{kind}\n" for rel, p, kind in rows)  # the package's spacing
    )
    return root


def test_elpv_layout_reads_certain_labels_and_quarantines_unsure_ones(tmp_path: Path) -> None:
    root = _elpv_tree(
        tmp_path / "elpv",
        [
            ("images/cell0001.png", 1.0, "mono"),
            ("images/cell0002.png", 0.0, "poly"),
            ("images/cell0003.png", 1 / 3, "mono"),
            ("images/cell0004.png", 2 / 3, "poly"),
            ("images/cell0005.png", 0.0, "mono"),
        ],
    )
    layout, entries = scan_source(str(root))
    assert layout == "elpv"
    manifest, quarantine = build_manifest(entries, "elpv")
    assert dict(zip(manifest["relative_path"], manifest["label"], strict=True)) == {
        "images/cell0001.png": "abnormal",
        "images/cell0002.png": "normal",
        "images/cell0005.png": "normal",
    }
    assert list(manifest["defect_type"]) == ["defective_mono", "good", "good"]
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert sorted(reasons) == ["images/cell0003.png", "images/cell0004.png"]
    assert "probability 0.33 (an unsure rating)" in reasons["images/cell0003.png"]
    # a plain batch folder with an images/ sub-folder and a file,label labels.csv stays a folder
    plain = tmp_path / "plain"
    write_png(plain / "images" / "a.png", 1)
    (plain / "labels.csv").write_text("file,label\nimages/a.png,normal\n")
    assert scan_source(str(plain))[0] == "folder"


def test_elpv_rows_that_cannot_be_read_name_file_and_line(tmp_path: Path) -> None:
    root = _elpv_tree(tmp_path / "elpv", [("images/cell0001.png", 1.0, "mono")])
    (root / "labels.csv").write_text("images/cell0001.png 1.0 mono\nimages/cell0001.png 0.0 mono\n")
    with pytest.raises(DatasetLayoutError, match=r"labels\.csv:2: .*already listed on line 1"):
        scan_source(str(root), "elpv")
    (root / "labels.csv").write_text("images/cell0001.png 1.5 mono\n")
    with pytest.raises(DatasetLayoutError, match=r"labels\.csv:1: probability 1\.5 not in"):
        scan_source(str(root), "elpv")


def test_the_real_elpv_package_reads_as_its_documented_counts() -> None:
    elpv = pytest.importorskip("elpv_dataset", reason="elpv-dataset not installed (bench extra)")
    root = Path(elpv.__file__).parent / "data"
    layout, entries = scan_source(str(root))
    assert layout == "elpv" and len(entries) == 2624
    labels = [e.label for e in entries]
    assert labels.count("normal") == 1508 and labels.count("abnormal") == 715
    assert sum(bool(e.problems) for e in entries) == 2624 - 1508 - 715
