"""Capture statistics and the shortcut baseline: values against numpy references, near chance on
synthetic boards, high where the abnormal images carry a capture offset; DeepPCB read binary."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from vqganodip_pipeline.data.capture import CAPTURE_COLUMNS, capture_statistics
from vqganodip_pipeline.data.images import binarize, decode_image
from vqganodip_pipeline.data.loading import load_image
from vqganodip_pipeline.data.manifest import build_manifest
from vqganodip_pipeline.data.sources import scan_source
from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.scoring.baselines import CaptureShortcut, shortcut_statistics
from vqganodip_pipeline.scoring.table import metric_columns

DEEPPCB = Path(__file__).resolve().parents[3] / "shared" / "data" / "deeppcb-trainval"


def test_statistics_match_numpy_references() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    stats = capture_statistics(image, channels=3)
    assert list(stats) == list(CAPTURE_COLUMNS)
    grey = image.astype(float).mean(axis=2)
    assert stats["capture__height"] == 40 and stats["capture__width"] == 48
    assert stats["capture__mean_g"] == pytest.approx(image[:, :, 1].mean())
    assert stats["capture__grey_std"] == pytest.approx(grey.std())
    gradient = (np.diff(grey, axis=1) ** 2).mean() + (np.diff(grey, axis=0) ** 2).mean()
    assert stats["capture__gradient_energy"] == pytest.approx(gradient)
    histogram = np.histogram(np.rint(grey), bins=16, range=(0, 256))[0] / grey.size
    np.testing.assert_allclose([stats[f"capture__hist_{i:02d}"] for i in range(16)], histogram)
    assert stats["capture__grey_levels"] == len(np.unique(np.rint(grey)))


def test_jpeg_compression_shows_in_blockiness_and_grey_levels() -> None:
    units = generate_images(2, 0, size=128, seed=3)
    image = units.images[0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=15)
    jpeg = decode_image(buffer.getvalue(), "q15.jpg").pixels
    plain = capture_statistics(image, 3)
    compressed = capture_statistics(jpeg, 3)
    assert compressed["capture__blockiness"] > plain["capture__blockiness"] + 0.2
    assert plain["capture__blockiness"] == pytest.approx(1.0, abs=0.3)


def _cross_validated_auroc(frame: pd.DataFrame) -> float:
    y = (frame["label"] == "abnormal").to_numpy(int)
    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(frame, y):
        model = CaptureShortcut().fit(frame.iloc[train], y[train])
        scores[test] = model.score(frame.iloc[test])
    return float(roc_auc_score(y, scores))


def _frame(images: np.ndarray, labels: list[str]) -> pd.DataFrame:
    rows = [capture_statistics(image, 3) for image in images]
    return pd.DataFrame(rows).assign(label=labels)


@pytest.fixture(scope="module")
def boards():
    return generate_images(60, 60, size=64, seed=11)


def test_shortcut_baseline_is_near_chance_on_synthetic_boards(boards) -> None:
    auroc = _cross_validated_auroc(_frame(boards.images, list(boards.labels)))
    assert 0.3 <= auroc <= 0.7, auroc


@pytest.mark.parametrize("offset", ["brightness", "jpeg"])
def test_shortcut_baseline_finds_a_capture_offset(boards, offset: str) -> None:
    images = boards.images.copy()
    abnormal = np.asarray(boards.labels) == "abnormal"
    for i in np.flatnonzero(abnormal):
        if offset == "brightness":
            images[i] = np.clip(images[i].astype(int) + 12, 0, 255).astype(np.uint8)
        else:
            buffer = io.BytesIO()
            Image.fromarray(images[i]).save(buffer, format="JPEG", quality=30)
            images[i] = decode_image(buffer.getvalue(), "x.jpg").pixels
    frame = _frame(images, list(boards.labels))
    assert _cross_validated_auroc(frame) >= 0.9
    top = shortcut_statistics(frame)
    assert len(top) == 3 and top[0]["auroc"] >= 0.9


def test_capture_columns_ride_along_but_are_never_metrics(tmp_path: Path) -> None:
    frame = _frame(np.zeros((2, 8, 8, 3), np.uint8), ["normal", "abnormal"])
    frame["patch__fid__sum__raw"] = [0.1, 0.2]
    assert metric_columns(frame) == ["patch__fid__sum__raw"]


def test_binarize_gives_two_levels() -> None:
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    binary = binarize(ramp)
    assert set(np.unique(binary)) == {0, 255}
    assert (binary[0, :128] == 0).all() and (binary[0, 128:] == 255).all()


@pytest.mark.skipif(not DEEPPCB.is_dir(), reason=f"DeepPCB data not found at {DEEPPCB}")
def test_deeppcb_reader_yields_binary_images_and_removes_the_jpeg_shortcut() -> None:
    _, entries = scan_source(str(DEEPPCB), "deeppcb", seed=0)
    entries = entries[:120]
    manifest, _ = build_manifest(entries, "deeppcb")
    assert manifest["binarize"].all()
    for row in manifest.head(4).to_dict("records"):
        assert set(np.unique(load_image(row))) <= {0, 255}
    # the upstream JPEG quality differs (templates ~16 grey levels, tested ~80): read binarised,
    # both classes have exactly two
    assert (manifest["capture__grey_levels"] <= 2).all()
    auroc = _cross_validated_auroc(manifest)
    assert auroc < 0.75, auroc
    raw = decode_image(Path(entries[0].uri.removeprefix("file://")).read_bytes(), "raw").pixels
    assert len(np.unique(raw)) > 2  # the file itself is not binary
