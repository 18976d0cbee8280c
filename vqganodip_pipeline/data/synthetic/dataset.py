"""Sets of synthetic units: in memory, or written in the MVTec-AD folder layout."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..images import encode_png
from .defects import DEFECT_SIZES, DEFECT_TYPES
from .layout import make_layout
from .render import check_seed, check_size, render_unit

GENERATOR_VERSION = 1  # bump whenever rendering changes what a (seed, size) produces
MANIFEST_NAME = "synthetic.json"
_DEFECT_SIZE_CHOICES = (*DEFECT_SIZES, "mixed")


@dataclass
class SyntheticSet:
    """Rendered units. ``labels`` are "normal" / "abnormal"; ``defect_types`` "good" for normal
    units; ``defect_sizes`` "" for normal units."""

    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray  # (N, H, W) bool
    labels: list[str]
    defect_types: list[str]
    seeds: list[int]
    defect_sizes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class _Planned:
    seed: int
    defect: str | None
    defect_size: str


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def unit_seeds(seed: int, n: int) -> list[int]:
    """``n`` distinct unit seeds derived from ``seed``."""
    if n == 0:
        return []
    rng = np.random.default_rng([seed, 0x5EED])
    return [int(v) for v in rng.choice(2**31 - 1, size=n, replace=False)]


def plan_units(n_normal: int, n_abnormal: int, seed: int, defect_size: str) -> list[_Planned]:
    """Normal units first, then abnormal ones with defect types cycled over DEFECT_TYPES and,
    for "mixed", small and large alternating so that each type gets both."""
    seeds = unit_seeds(seed, n_normal + n_abnormal)
    plan = [_Planned(s, None, "") for s in seeds[:n_normal]]
    t = len(DEFECT_TYPES)
    for j, s in enumerate(seeds[n_normal:]):
        size = DEFECT_SIZES[(j + j // t) % 2] if defect_size == "mixed" else defect_size
        plan.append(_Planned(s, DEFECT_TYPES[j % t], size))
    return plan


def _check_common(
    n_normal: object,
    n_abnormal: object,
    size: object,
    seed: object,
    layout_seed: object,
    defect_size: object,
) -> tuple[int, int, int, int, int]:
    n_normal = _check_count(n_normal, "n_normal")
    n_abnormal = _check_count(n_abnormal, "n_abnormal")
    size = check_size(size)
    seed = check_seed(seed)
    layout_seed = check_seed(layout_seed, "layout_seed")
    if defect_size not in _DEFECT_SIZE_CHOICES:
        choices = ", ".join(_DEFECT_SIZE_CHOICES)
        raise ValueError(f"unknown defect_size {defect_size!r}; expected one of {choices}")
    return n_normal, n_abnormal, size, seed, layout_seed


def generate_images(
    n_normal: int,
    n_abnormal: int,
    *,
    size: int,
    seed: int,
    layout_seed: int = 0,
    defect_size: str = "mixed",
) -> SyntheticSet:
    """Render ``n_normal`` good and ``n_abnormal`` defective units of one product.

    Defect types cycle over DEFECT_TYPES (balanced); ``defect_size`` is "small", "large" or
    "mixed" (both sizes for every type).
    """
    n_normal, n_abnormal, size, seed, layout_seed = _check_common(
        n_normal, n_abnormal, size, seed, layout_seed, defect_size
    )
    layout = make_layout(layout_seed)
    plan = plan_units(n_normal, n_abnormal, seed, defect_size)
    n = len(plan)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    for i, unit in enumerate(plan):
        images[i], masks[i] = render_unit(
            layout,
            size=size,
            seed=unit.seed,
            defect=unit.defect,
            defect_size=unit.defect_size or "small",
        )
    return SyntheticSet(
        images=images,
        masks=masks,
        labels=["normal" if u.defect is None else "abnormal" for u in plan],
        defect_types=["good" if u.defect is None else u.defect for u in plan],
        seeds=[u.seed for u in plan],
        defect_sizes=[u.defect_size for u in plan],
    )


def _mvtec_files(plan: list[_Planned], n_train: int) -> Iterator[tuple[_Planned, str, str | None]]:
    """(unit, image path, mask path or None) relative to the dataset root, MVTec naming."""
    folders: list[str] = []
    for i, unit in enumerate(plan):
        if unit.defect is None:
            folders.append("train/good" if i < n_train else "test/good")
        else:
            folders.append(f"test/{unit.defect}")
    totals = {f: folders.count(f) for f in set(folders)}
    counters: dict[str, int] = {}
    for unit, folder in zip(plan, folders, strict=True):
        k = counters.get(folder, 0)
        counters[folder] = k + 1
        name = f"{k:0{max(3, len(str(totals[folder] - 1)))}d}"
        mask = f"ground_truth/{unit.defect}/{name}_mask.png" if unit.defect else None
        yield unit, f"{folder}/{name}.png", mask


def _existing_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def write_mvtec_dataset(
    out: str | Path,
    *,
    n_normal: int,
    n_abnormal: int,
    size: int,
    seed: int,
    n_test_normal: int | None = None,
    layout_seed: int = 0,
    defect_size: str = "mixed",
) -> Path:
    """Write a synthetic PCBA dataset in the MVTec-AD layout and return its root.

    ``n_normal`` counts all good units: ``n_test_normal`` of them (default
    ``min(n_abnormal, n_normal // 2)``) go to ``test/good``, the rest to ``train/good``; the
    defective ones go to ``test/<defect>/NNN.png`` with ``ground_truth/<defect>/NNN_mask.png``
    (single channel 0 / 255). A ``synthetic.json`` manifest records the parameters and every
    file's unit seed. An existing non-empty ``out`` is accepted only if it already holds exactly
    this dataset (then nothing is written); anything else raises ValueError. Files are written
    to a temporary sibling folder and moved into place, so ``out`` never holds half a dataset.
    """
    n_normal, n_abnormal, size, seed, layout_seed = _check_common(
        n_normal, n_abnormal, size, seed, layout_seed, defect_size
    )
    if n_test_normal is None:
        n_test_normal = min(n_abnormal, n_normal // 2)
    n_test_normal = _check_count(n_test_normal, "n_test_normal")
    if n_test_normal > n_normal:
        raise ValueError(f"n_test_normal ({n_test_normal}) cannot exceed n_normal ({n_normal})")
    root = Path(out)
    params = {
        "generator": "vqganodip_pipeline.data.synthetic",
        "version": GENERATOR_VERSION,
        "n_normal": n_normal,
        "n_abnormal": n_abnormal,
        "n_test_normal": n_test_normal,
        "size": size,
        "seed": seed,
        "layout_seed": layout_seed,
        "defect_size": defect_size,
    }
    plan = plan_units(n_normal, n_abnormal, seed, defect_size)
    files = list(_mvtec_files(plan, n_normal - n_test_normal))
    entries = [
        {
            "image": img,
            "mask": mask,
            "seed": u.seed,
            "defect_type": u.defect or "good",
            "defect_size": u.defect_size,
        }
        for u, img, mask in files
    ]
    expected = {e["image"] for e in entries} | {e["mask"] for e in entries if e["mask"]}
    expected.add(MANIFEST_NAME)

    if root.exists():
        if not root.is_dir():
            raise ValueError(f"{root}: exists and is not a folder")
        if any(root.iterdir()):
            if _is_same_dataset(root, params, expected):
                return root
            raise ValueError(
                f"{root}: folder is not empty and does not hold this synthetic dataset "
                f"({params}); refusing to overwrite it - choose an empty or new folder"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        layout = make_layout(layout_seed)
        for folder in ("train/good", "test/good"):  # always there, as in MVTec-AD
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        for unit, img_path, mask_path in files:
            image, mask = render_unit(
                layout,
                size=size,
                seed=unit.seed,
                defect=unit.defect,
                defect_size=unit.defect_size or "small",
            )
            target = tmp / img_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(image))
            if mask_path is not None:
                mpath = tmp / mask_path
                mpath.parent.mkdir(parents=True, exist_ok=True)
                mpath.write_bytes(encode_png(mask.astype(np.uint8) * np.uint8(255)))
        manifest = {"params": params, "files": entries}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _is_same_dataset(root: Path, params: dict, expected: set[str]) -> bool:
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("params") != params:
        return False
    return _existing_files(root) == expected
