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


# ---- the whole corpus in one batch ---------------------------------------------------------


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    rgb = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _bad_crc(seed: int) -> bytes:
    data = bytearray(png_bytes(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), np.uint8)))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # one byte of the compressed pixels, its chunk CRC now wrong
    return bytes(data)


def bad_input_corpus(folder: Path, outside: Path) -> dict[str, str | None]:
    """Write a batch of good and bad files into ``folder``; returns ``{name: expected}``, the
    expected being ``None`` for a file that must be read, else a phrase of its reason."""
    rng = np.random.default_rng(0)
    rgb = lambda seed: np.random.default_rng(seed).integers(0, 255, (16, 16, 3), np.uint8)  # noqa: E731
    cases: dict[str, tuple[bytes, str | None]] = {
        "good0.png": (png_bytes(rgb(0)), None),
        "good1.png": (png_bytes(rgb(1)), None),
        "good2.png": (png_bytes(rgb(2)), None),
        "UPPER.PNG": (png_bytes(rgb(3)), None),
        "photo.jpg": (_jpeg(4), None),
        "ramp16.png": (png_bytes(rng.integers(0, 65535, (16, 16)).astype(np.uint16)), None),
        "palette.png": (png_bytes(rgb(5), mode="P"), None),
        "empty.png": (b"", "empty file"),
        "truncated.png": (png_bytes(rgb(6))[:60], "truncated image"),
        "text.png": (b"this is not an image\n", "not a recognised image format"),
        "notes.txt": (b"operator notes\n", "not a recognised image format"),
        "bad_crc.png": (_bad_crc(7), "undecodable"),
        "bomb.png": (bomb_header(20000, 20000), "too many pixels"),
        "bomb9k.png": (bomb_header(9000, 9000), "more than the limit"),
        "small.png": (png_bytes(rgb(8)[:12, :12]), "differs from the batch's 16x16"),
        "zz_copy_of_good0.png": (png_bytes(rgb(0)), "duplicate content of"),  # after good0
    }
    folder.mkdir(parents=True)
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    outside.mkdir(parents=True)
    (outside / "secret.png").write_bytes(png_bytes(rgb(9)))
    (folder / "leak.png").symlink_to(outside / "secret.png")
    expected = {name: reason for name, (_, reason) in cases.items()}
    expected["leak.png"] = "resolves outside the landing zone"
    return expected


def test_the_bad_input_corpus_loses_no_image_and_says_why_for_each(tmp_path: Path) -> None:
    expected = bad_input_corpus(tmp_path / "inbox" / "shift", tmp_path / "elsewhere")
    _, entries = scan_source(str(tmp_path / "inbox" / "shift"), "folder")
    manifest, quarantine = build_manifest(entries, "shift", landing_zone=str(tmp_path / "inbox"))
    read = set(manifest["relative_path"])
    reasons = dict(zip(quarantine["relative_path"], quarantine["reason"], strict=True))
    lost = sorted(set(expected) - read - set(reasons))
    print(
        f"bad-input corpus: {len(expected)} cases, {len(read)} read, "
        f"{len(reasons)} quarantined, {len(lost)} lost"
    )
    for name in sorted(expected):
        print(f"  {name:20s} {'read' if name in read else reasons.get(name, 'LOST')}")
    assert lost == [] and not read & set(reasons)
    assert read == {name for name, reason in expected.items() if reason is None}
    for name, reason in expected.items():
        if reason is not None:
            assert reason in reasons[name], (name, reasons[name])


@pytest.mark.parametrize(
    ("listing", "annotation", "message"),
    [
        (b"g/1.jpg g/1.txt\ng/2.jpg\n", b"1 2 3 4 1\n", r"trainval\.txt:2: expected two paths"),
        (
            b"g/1.jpg g/1.txt\n\ng/1.jpg g/1.txt\n",
            b"",
            r"trainval\.txt:3: .*already listed on line 1",
        ),
        (b"g/1.jpg ../../etc/passwd\n", b"", r"trainval\.txt:1: '\.\./\.\./etc/passwd' leaves"),
        (b"g/1.jpg g/1.txt\n\xff\n", b"", r"trainval\.txt: not UTF-8 text \(byte 16\)"),
        (b"g/1.jpg g/1.txt\n", b"1 2 3 4 1\n1 2 x 4 1\n", r"g/1\.txt:2: non-numeric box"),
        (b"g/1.jpg g/1.txt\n", b"1 2 3 4 \xe9\n", r"g/1\.txt: not UTF-8 text"),
    ],
)
def test_bad_deeppcb_lists_and_annotations_name_file_and_line(
    tmp_path: Path, listing: bytes, annotation: bytes, message: str
) -> None:
    from vqganodip_pipeline.data.sources import DatasetLayoutError

    write_png(tmp_path / "g" / "1_temp.jpg", 1)
    write_png(tmp_path / "g" / "1_test.jpg", 2)
    (tmp_path / "g" / "1.txt").write_bytes(annotation)
    (tmp_path / "trainval.txt").write_bytes(listing)
    with pytest.raises(DatasetLayoutError, match=message):
        scan_source(str(tmp_path), "deeppcb")
