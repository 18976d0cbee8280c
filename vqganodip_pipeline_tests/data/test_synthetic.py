"""The synthetic PCBA generator: determinism, exact defect masks, bounded normal variation,
resolution independence and the MVTec-AD tree it writes."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vqganodip_pipeline.data.sources import scan_mvtec
from vqganodip_pipeline.data.synthetic import (
    DEFECT_TYPES,
    MANIFEST_NAME,
    BoardLayout,
    SyntheticSet,
    Variation,
    generate_images,
    make_layout,
    render_unit,
    write_mvtec_dataset,
)

NONE = Variation.none()


@pytest.fixture(scope="module")
def layout() -> BoardLayout:
    return make_layout(0)


def _footprint(layout: BoardLayout, size: int) -> np.ndarray:
    """Pixels of the nominal part bodies and their pads (what placement jitter can move)."""
    s = size / layout.size_mm
    out = np.zeros((size, size), dtype=bool)

    def rect(cx: float, cy: float, w: float, h: float, angle: float) -> None:
        if round(angle) % 180 == 90:
            w, h = h, w
        x0, x1 = math.floor((cx - w / 2) * s), math.ceil((cx + w / 2) * s)
        y0, y1 = math.floor((cy - h / 2) * s), math.ceil((cy + h / 2) * s)
        out[max(y0, 0) : y1, max(x0, 0) : x1] = True

    for comp in layout.components:
        rect(comp.x, comp.y, comp.package.length, comp.package.width, comp.angle)
        for pad in comp.pads:
            rect(pad.cx, pad.cy, pad.along, pad.across, pad.angle)
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=np.ones((2 * r + 1, 2 * r + 1), dtype=bool))


# --- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes() -> None:
    a_img, a_mask = render_unit(make_layout(3), size=96, seed=11, defect="scratch")
    b_img, b_mask = render_unit(make_layout(3), size=96, seed=11, defect="scratch")
    assert a_img.tobytes() == b_img.tobytes()
    assert a_mask.tobytes() == b_mask.tobytes()
    assert a_img.dtype == np.uint8 and a_img.shape == (96, 96, 3)
    assert a_mask.dtype == bool and a_mask.shape == (96, 96)


def test_different_seeds_and_layouts_differ(layout: BoardLayout) -> None:
    a, _ = render_unit(layout, size=96, seed=1)
    b, _ = render_unit(layout, size=96, seed=2)
    assert np.any(a != b)
    other = make_layout(1)
    assert [c.ref for c in other.components] != [c.ref for c in layout.components] or any(
        (c.x, c.y) != (d.x, d.y) for c, d in zip(other.components, layout.components, strict=False)
    )
    c, _ = render_unit(other, size=96, seed=1, variation=NONE)
    d, _ = render_unit(layout, size=96, seed=1, variation=NONE)
    assert np.abs(c.astype(int) - d.astype(int)).mean() > 10


def test_board_is_busy(layout: BoardLayout) -> None:
    families = {c.family for c in layout.components}
    assert len(layout.components) >= 30
    assert {"R", "C", "U", "Q", "D"} <= families
    assert {c.package.name for c in layout.components} >= {"0402", "0603", "0805", "TQFP-32"}


# --- exact defect masks ------------------------------------------------------------------------
@pytest.mark.parametrize("defect_size", ["small", "large"])
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exact_difference_with_defect_free_unit(
    layout: BoardLayout, defect: str, defect_size: str
) -> None:
    normal, empty = render_unit(layout, size=96, seed=5)
    image, mask = render_unit(layout, size=96, seed=5, defect=defect, defect_size=defect_size)
    assert not empty.any()
    np.testing.assert_array_equal(mask, np.any(image != normal, axis=-1))
    assert mask.sum() >= 4
    # the defect stands out, and it is local: a small defect touches a small part of the image
    diff = np.abs(image.astype(int) - normal.astype(int)).max(axis=-1)
    assert diff.max() >= 24
    assert mask.mean() < (0.02 if defect_size == "small" else 0.1)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_small_defects_stay_visible_at_low_resolution(layout: BoardLayout, defect: str) -> None:
    for size in (64, 128):
        normal, _ = render_unit(layout, size=size, seed=9)
        image, mask = render_unit(layout, size=size, seed=9, defect=defect, defect_size="small")
        np.testing.assert_array_equal(mask, np.any(image != normal, axis=-1))
        assert mask.sum() >= 4, (defect, size)


def test_large_defects_are_larger_than_small_ones(layout: BoardLayout) -> None:
    small = large = 0
    for defect in DEFECT_TYPES:
        small += render_unit(layout, size=96, seed=1, defect=defect)[1].sum()
        large += render_unit(layout, size=96, seed=1, defect=defect, defect_size="large")[1].sum()
    assert large > 2 * small


def test_mask_exact_without_noise_too(layout: BoardLayout) -> None:
    normal, _ = render_unit(layout, size=64, seed=3, variation=NONE)
    image, mask = render_unit(layout, size=64, seed=3, defect="missing", variation=NONE)
    np.testing.assert_array_equal(mask, np.any(image != normal, axis=-1))
    assert mask.any()


# --- normal variation ----------------------------------------------------------------------------
def test_no_variation_renders_every_seed_identically(layout: BoardLayout) -> None:
    a, _ = render_unit(layout, size=96, seed=1, variation=NONE)
    b, _ = render_unit(layout, size=96, seed=987654, variation=NONE)
    assert a.tobytes() == b.tobytes()


def test_serial_code_varies_only_inside_its_block(layout: BoardLayout) -> None:
    only_code = dataclasses.replace(NONE, serial_code=True)
    a, _ = render_unit(layout, size=128, seed=1, variation=only_code)
    b, _ = render_unit(layout, size=128, seed=2, variation=only_code)
    diff = np.any(a != b, axis=-1)
    r0, r1, c0, c1 = layout.serial_box_px(128)
    inside = np.zeros_like(diff)
    inside[r0:r1, c0:c1] = True
    assert diff[inside].mean() > 0.1  # the code really changes, module by module
    assert not (diff & ~_dilate(inside, 2)).any()  # lens blur spreads at most 2 px


@pytest.mark.parametrize(("size", "jitter_mm"), [(256, 0.25), (128, 0.5)])
def test_placement_jitter_stays_within_its_bound(
    layout: BoardLayout, size: int, jitter_mm: float
) -> None:
    """Parts moved by at most J px change pixels only within J (+ antialiasing and lens blur)
    of the nominal part and pad footprints; a 3x larger jitter breaks that bound."""
    reference, _ = render_unit(layout, size=size, seed=0, variation=NONE)
    j_px = Variation(jitter_mm=jitter_mm).jitter_px(size)
    # the footprint is rounded outwards to whole pixels, which covers antialiasing; an edge moved
    # by j_px reaches ceil(j_px) pixels further, and the lens blur (radius 2 px) 2 more
    allowed = _dilate(_footprint(layout, size), math.ceil(j_px) + 2)
    assert allowed.mean() < 0.9  # the check covers a real part of the board

    def outside(jitter: float, seed: int) -> int:
        v = dataclasses.replace(NONE, jitter_mm=jitter)
        img, _ = render_unit(layout, size=size, seed=seed, variation=v)
        changed = np.any(img != reference, axis=-1)
        return int((changed & ~allowed).sum()), int(changed.sum())

    for seed in range(1, 5):
        n_out, n_changed = outside(jitter_mm, seed)
        assert n_changed > 0
        assert n_out == 0
    # the same check catches a jitter three times as large (so it is not vacuous)
    assert all(outside(3 * jitter_mm, seed)[0] > 0 for seed in range(1, 5))


def test_solder_and_marking_variation_stay_on_their_parts(layout: BoardLayout) -> None:
    size = 128
    parts = _dilate(_footprint(layout, size), 3)
    for v in (dataclasses.replace(NONE, solder=0.2), dataclasses.replace(NONE, marking=True)):
        a, _ = render_unit(layout, size=size, seed=1, variation=v)
        b, _ = render_unit(layout, size=size, seed=2, variation=v)
        changed = np.any(a != b, axis=-1)
        assert changed.any()
        assert not (changed & ~parts).any()


def test_lighting_and_noise_change_the_whole_image(layout: BoardLayout) -> None:
    for v in (
        dataclasses.replace(NONE, illumination=1.0),
        dataclasses.replace(NONE, noise_sigma=2.0),
    ):
        a, _ = render_unit(layout, size=64, seed=1, variation=v)
        b, _ = render_unit(layout, size=64, seed=2, variation=v)
        assert np.any(a != b, axis=-1).mean() > 0.3
        # bounded: a normal unit is still the same board
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 12


def test_default_variation_is_bounded(layout: BoardLayout) -> None:
    """Two good units differ far less than a good unit and a board of another product."""
    a, _ = render_unit(layout, size=96, seed=1)
    b, _ = render_unit(layout, size=96, seed=2)
    c, _ = render_unit(make_layout(5), size=96, seed=1)
    same = np.abs(a.astype(int) - b.astype(int)).mean()
    other = np.abs(a.astype(int) - c.astype(int)).mean()
    assert same < other / 2


# --- resolution ---------------------------------------------------------------------------------
def test_layout_renders_consistently_at_128_and_256(layout: BoardLayout) -> None:
    small, _ = render_unit(layout, size=128, seed=4, variation=NONE)
    big, _ = render_unit(layout, size=256, seed=4, variation=NONE)
    assert small.shape == (128, 128, 3) and big.shape == (256, 256, 3)
    down = big.astype(float).reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    err = np.abs(down - small.astype(float)).mean()
    assert err < 8.0  # same board at both resolutions (a shifted board gives ~40)
    shifted = np.abs(np.roll(down, 3, axis=1) - small.astype(float)).mean()
    assert shifted > 3 * err


def test_jitter_px_scales_with_resolution() -> None:
    v = Variation()
    assert v.jitter_px(256) == pytest.approx(2.0)
    assert v.jitter_px(1024) == pytest.approx(8.0)


def test_serial_box_px_matches_label(layout: BoardLayout) -> None:
    img, _ = render_unit(layout, size=128, seed=1, variation=NONE)
    r0, r1, c0, c1 = layout.serial_box_px(128)
    label = img[r0 + 2 : r1 - 2, c0 + 2 : c1 - 2].astype(int)
    assert 0 < r0 < r1 <= 128 and 0 < c0 < c1 <= 128
    # white label with dark modules: both very bright and very dark pixels inside
    assert (label.mean(axis=-1) > 200).mean() > 0.2
    assert (label.mean(axis=-1) < 80).mean() > 0.1


# --- sets ----------------------------------------------------------------------------------------
def test_generate_images_balances_defects_and_matches_render_unit(layout: BoardLayout) -> None:
    n_abn = 2 * len(DEFECT_TYPES)
    ds = generate_images(3, n_abn, size=64, seed=7)
    assert isinstance(ds, SyntheticSet)
    assert ds.images.shape == (3 + n_abn, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (3 + n_abn, 64, 64) and ds.masks.dtype == bool
    assert ds.labels == ["normal"] * 3 + ["abnormal"] * n_abn
    assert ds.defect_types[:3] == ["good"] * 3
    assert sorted(ds.defect_types[3:]) == sorted(list(DEFECT_TYPES) * 2)
    # each type gets one small and one large defect
    pairs = {(t, s) for t, s in zip(ds.defect_types[3:], ds.defect_sizes[3:], strict=True)}
    assert len(pairs) == n_abn
    assert len(set(ds.seeds)) == len(ds.seeds)
    assert not ds.masks[:3].any() and all(m.any() for m in ds.masks[3:])
    for i in (0, 5):
        img, mask = render_unit(
            layout,
            size=64,
            seed=ds.seeds[i],
            defect=None if ds.labels[i] == "normal" else ds.defect_types[i],
            defect_size=ds.defect_sizes[i] or "small",
        )
        np.testing.assert_array_equal(img, ds.images[i])
        np.testing.assert_array_equal(mask, ds.masks[i])


def test_generate_images_is_deterministic_and_seeded() -> None:
    a = generate_images(2, 1, size=48, seed=3)
    b = generate_images(2, 1, size=48, seed=3)
    c = generate_images(2, 1, size=48, seed=4)
    assert a.images.tobytes() == b.images.tobytes() and a.seeds == b.seeds
    assert a.seeds != c.seeds


# --- MVTec tree -----------------------------------------------------------------------------------
def test_write_mvtec_dataset_layout(tmp_path: Path) -> None:
    root = write_mvtec_dataset(tmp_path / "pcba", n_normal=6, n_abnormal=12, size=48, seed=1)
    assert root == tmp_path / "pcba"
    train = sorted(p.name for p in (root / "train" / "good").iterdir())
    test_good = sorted(p.name for p in (root / "test" / "good").iterdir())
    assert train == ["000.png", "001.png", "002.png"]  # n_test_normal = min(12, 6 // 2) = 3
    assert test_good == ["000.png", "001.png", "002.png"]
    defect_dirs = sorted(p.name for p in (root / "test").iterdir() if p.name != "good")
    assert defect_dirs == sorted(DEFECT_TYPES)
    assert sum(len(list((root / "test" / d).iterdir())) for d in defect_dirs) == 12
    for d in defect_dirs:
        for img_path in sorted((root / "test" / d).iterdir()):
            assert re.fullmatch(r"\d{3}\.png", img_path.name)
            mask_path = root / "ground_truth" / d / f"{img_path.stem}_mask.png"
            with Image.open(img_path) as im, Image.open(mask_path) as mk:
                assert im.mode == "RGB" and im.size == (48, 48)
                assert mk.mode == "L" and mk.size == im.size
                values = set(np.unique(np.asarray(mk)).tolist())
            assert values <= {0, 255} and 255 in values
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["params"]["n_test_normal"] == 3
    assert len(manifest["files"]) == 18
    # the project's MVTec reader sees the same thing
    entries = scan_mvtec(str(root))
    assert sum(e.label == "normal" for e in entries) == 6
    assert sum(e.label == "abnormal" and e.mask_uri is not None for e in entries) == 12


def test_write_mvtec_dataset_masks_match_render_unit(tmp_path: Path) -> None:
    root = write_mvtec_dataset(
        tmp_path / "d", n_normal=1, n_abnormal=2, size=40, seed=2, n_test_normal=0
    )
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    layout = make_layout(0)
    for entry in manifest["files"]:
        defect = None if entry["defect_type"] == "good" else entry["defect_type"]
        img, mask = render_unit(
            layout,
            size=40,
            seed=entry["seed"],
            defect=defect,
            defect_size=entry["defect_size"] or "small",
        )
        np.testing.assert_array_equal(np.asarray(Image.open(root / entry["image"])), img)
        if entry["mask"]:
            np.testing.assert_array_equal(np.asarray(Image.open(root / entry["mask"])) > 0, mask)


def test_write_mvtec_dataset_never_overwrites(tmp_path: Path) -> None:
    kwargs = dict(n_normal=2, n_abnormal=1, size=32, seed=0)
    root = write_mvtec_dataset(tmp_path / "d", **kwargs)
    stamp = (root / "train" / "good" / "000.png").stat().st_mtime_ns
    assert write_mvtec_dataset(tmp_path / "d", **kwargs) == root  # exactly this dataset: no-op
    assert (root / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_mvtec_dataset(tmp_path / "d", **{**kwargs, "seed": 1})
    (root / "train" / "good" / "extra.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_mvtec_dataset(tmp_path / "d", **kwargs)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_mvtec_dataset(foreign, **kwargs)
    assert (foreign / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_mvtec_dataset(empty, **kwargs) / MANIFEST_NAME).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


# --- bad arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(size=16, seed=0), "size must be >= 32"),
        (dict(size=64.0, seed=0), "size must be an int"),
        (dict(size=64, seed=-1), "seed must be a non-negative int"),
        (dict(size=64, seed=0, defect="crack"), "unknown defect 'crack'"),
        (dict(size=64, seed=0, defect="missing", defect_size="huge"), "unknown defect_size"),
    ],
)
def test_render_unit_rejects_bad_arguments(layout: BoardLayout, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_unit(layout, **kwargs)


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_normal must be >= 0"):
        generate_images(-1, 2, size=64, seed=0)
    with pytest.raises(ValueError, match="n_abnormal must be >= 0"):
        write_mvtec_dataset(tmp_path / "x", n_normal=2, n_abnormal=-3, size=64, seed=0)
    with pytest.raises(ValueError, match="size must be >= 32"):
        write_mvtec_dataset(tmp_path / "x", n_normal=2, n_abnormal=1, size=8, seed=0)
    with pytest.raises(ValueError, match=r"n_test_normal \(3\) cannot exceed"):
        write_mvtec_dataset(
            tmp_path / "x", n_normal=2, n_abnormal=1, size=32, seed=0, n_test_normal=3
        )
    with pytest.raises(ValueError, match="unknown defect_size"):
        generate_images(1, 1, size=32, seed=0, defect_size="tiny")
    with pytest.raises(ValueError, match="layout must be a BoardLayout"):
        render_unit("board", size=64, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Variation\.jitter_mm"):
        Variation(jitter_mm=-0.1)
    with pytest.raises(ValueError, match=r"Variation\.serial_code"):
        Variation(serial_code=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="make_layout: seed"):
        make_layout(-2)
    assert not (tmp_path / "x").exists()


def test_defect_type_names_are_folder_safe() -> None:
    assert len(set(DEFECT_TYPES)) == len(DEFECT_TYPES) >= 9
    for name in DEFECT_TYPES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
