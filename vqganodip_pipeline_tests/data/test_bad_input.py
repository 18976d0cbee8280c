"""A corpus of bad inputs: every one is quarantined (or read correctly) with a reason that names
the problem, and the rest of the batch is read as usual."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqganodip_pipeline.data.images import ImageDecodeError, decode_image
from vqganodip_pipeline.data.manifest import build_manifest
from vqganodip_pipeline.data.sources import SourceEntry, scan_source
from vqganodip_pipeline_tests.builders import write_png


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares ``width`` x ``height`` pixels (the data is 1 px)."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def test_a_header_declaring_too_many_pixels_is_refused_before_decoding() -> None:
    # PIL itself refuses this one at the header (400 000 000 pixels), before any decoding
    with pytest.raises(ImageDecodeError, match=r"big\.png: too many pixels .*400000000 pixels"):
        decode_image(bomb_header(20000, 20000), "big.png")
    # under PIL's own limit, ours applies (64 MP by default), also from the header alone
    with pytest.raises(ImageDecodeError, match=r"header declares 9000x9000 px, more than"):
        decode_image(bomb_header(9000, 9000), "big.png")
    # and under a lower configured limit, a plainly large image too
    with pytest.raises(ImageDecodeError, match="more than the limit of 100 pixels"):
        decode_image(png_bytes(np.zeros((20, 20, 3), np.uint8)), "a.png", max_pixels=100)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    decoded = decode_image(png_bytes(ramp), "ramp16.png")
    grey = decoded.pixels[:, :, 0].astype(int)
    np.testing.assert_array_equal(grey, np.round(ramp / 257.0).astype(int))
    # most of the ramp stays below white (clipping made 1020 of 1024 pixels 255)
    assert (grey == 255).sum() <= 4 and decoded.channels == 1


def test_palette_images_count_the_channels_they_decode_to() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    decoded = decode_image(png_bytes(rgb, mode="P"), "palette.png")
    assert decoded.channels == 3 and decoded.pixels.shape == (8, 8, 3)


def test_one_failing_file_is_quarantined_with_its_reason_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    (tmp_path / "big.png").write_bytes(bomb_header(20000, 20000))
    entries = [
        SourceEntry(uri=str(tmp_path / n), relative_path=n) for n in ("a.png", "big.png", "b.png")
    ]

    calls = {"n": 0}

    def flaky_read(uri: str, options=None) -> bytes:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if uri.endswith("b.png"):
            raise RuntimeError("the share went away")
        return Path(uri).read_bytes()

    import vqganodip_pipeline.data.fs as fs_module

    original = fs_module.read_bytes
    fs_module.read_bytes = flaky_read  # type: ignore[assignment]
    try:
        manifest, quarantine = build_manifest(entries, "b")
    finally:
        fs_module.read_bytes = original  # type: ignore[assignment]
    assert list(manifest["relative_path"]) == ["a.png"]
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert "too many pixels" in reasons["big.png"] and "400000000" in reasons["big.png"]
    assert "RuntimeError: the share went away" in reasons["b.png"]


def test_images_of_another_size_than_the_batch_are_quarantined_unless_allowed(
    tmp_path: Path,
) -> None:
    for n in range(3):
        write_png(tmp_path / f"ok{n}.png", n, size=16)
    write_png(tmp_path / "odd.png", 9, size=12)
    _, entries = scan_source(str(tmp_path), "folder")
    manifest, quarantine = build_manifest(entries, "b")
    assert sorted(manifest["relative_path"]) == ["ok0.png", "ok1.png", "ok2.png"]
    (reason,) = quarantine["reason"]
    assert "12x12 differs from the batch's 16x16" in reason
    mixed, none = build_manifest(entries, "b", mixed_sizes=True)
    assert len(mixed) == 4 and len(none) == 0


def test_links_that_leave_the_landing_zone_are_not_followed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_png(inbox / "shift" / "a.png", 1)
    write_png(tmp_path / "elsewhere" / "secret.png", 2)
    (inbox / "shift" / "leak.png").symlink_to(tmp_path / "elsewhere" / "secret.png")
    (inbox / "shift" / "alias.png").symlink_to(inbox / "shift" / "a.png")  # inside: fine
    _, entries = scan_source(str(inbox / "shift"), "folder")
    manifest, quarantine = build_manifest(entries, "shift", landing_zone=str(inbox))
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert "resolves outside the landing zone" in reasons["leak.png"]
    # the alias is read; being the same bytes as a.png, it is a duplicate, not a leak
    assert reasons["alias.png"].startswith("duplicate content of")
    assert list(manifest["relative_path"]) == ["a.png"]


def labelled_folder(
    root: Path, csv_text: bytes | str, files: tuple[str, ...] = ("a.png", "b.png")
) -> Path:
    for n, name in enumerate(files):
        write_png(root / name, n + 1)
    data = csv_text.encode() if isinstance(csv_text, str) else csv_text
    (root / "labels.csv").write_bytes(data)
    return root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.png\n", r"labels\.csv:2: expected the columns file, label, got 1"),
        (b"file,label\na.png,normal\nb.png,d\xe9faut\n", r"labels\.csv:3: not UTF-8 text"),
        ("file,label\na.png,normal\na.png,abnormal\n", r"labels\.csv:3: a\.png is labelled"),
        ("file,label\n../x.png,normal\n", r"labels\.csv:2: '\.\./x\.png' is not a file"),
        ("file,label\na.png,maybe\n", r"labels\.csv:2: unknown label 'maybe'"),
        ("name,label\na.png,normal\n", r"labels\.csv: needs the columns"),
    ],
)
def test_bad_labels_csv_is_an_error_naming_file_and_line(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    from vqganodip_pipeline.data.sources import DatasetLayoutError

    root = labelled_folder(tmp_path / "shift", text)
    with pytest.raises(DatasetLayoutError, match=message):
        scan_source(str(root), "folder")


def test_labels_csv_rows_match_exactly_and_missing_files_are_quarantined(tmp_path: Path) -> None:
    root = labelled_folder(
        tmp_path / "shift",
        "file,label\n./a.png,normal\na.png,normal\nB.PNG,abnormal\n.c.png,abnormal\n",
        files=("a.png", "b.png", ".c.png"),
    )
    _, entries = scan_source(str(root), "folder")
    manifest, quarantine = build_manifest(entries, "shift")
    labels = dict(zip(manifest["relative_path"], manifest["label"], strict=True))
    # "./a.png" and "a.png" are one file, listed twice with one label; ".c.png" keeps its dot
    assert labels == {"a.png": "normal", "b.png": "unknown", ".c.png": "abnormal"}
    (reason,) = quarantine["reason"]
    assert "labels.csv:4 but not in the folder" in reason
    assert "b.png exists: names match exactly, case included" in reason


def test_identical_bytes_with_two_labels_are_both_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "shift"
    data = write_png(root / "a.png", 1)
    (root / "a_copy.png").write_bytes(data)
    write_png(root / "b.png", 2)
    (root / "labels.csv").write_text(
        "file,label\na.png,normal\na_copy.png,abnormal\nb.png,normal\n"
    )
    _, entries = scan_source(str(root), "folder")
    manifest, quarantine = build_manifest(entries, "shift")
    assert list(manifest["relative_path"]) == ["b.png"]
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    assert set(reasons) == {"a.png", "a_copy.png"}
    assert all("conflicting labels" in r for r in reasons.values())
