"""Small on-disk datasets for tests (random-pixel PNGs in the supported layouts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vqganodip_pipeline.data.images import encode_png


def write_png(path: Path, seed: int, size: int = 16, gray: bool = False) -> bytes:
    """Write a random RGB (or gray) PNG and return its bytes."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if gray else (size, size, 3)
    data = encode_png(rng.integers(0, 256, shape, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def make_mvtec_tree(
    root: Path,
    n_train: int = 3,
    n_test_good: int = 1,
    defects: tuple[str, ...] = ("scratch", "missing"),
    per_defect: int = 1,
    size: int = 16,
    seed: int = 0,
) -> Path:
    """An MVTec-AD style tree with a mask for every defect image: the mask of defect k covers
    rows 4..7 and columns 2+k..5+k (scaled to ``size`` / 16)."""
    scale = size // 16
    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", seed + i, size)
    for i in range(n_test_good):
        write_png(root / "test" / "good" / f"{i:03d}.png", seed + 1000 + i, size)
    for k, defect in enumerate(defects):
        for i in range(per_defect):
            write_png(root / "test" / defect / f"{i:03d}.png", seed + 2000 + 100 * k + i, size)
            mask = np.zeros((size, size), np.uint8)
            mask[4 * scale : 8 * scale, (2 + k) * scale : (6 + k) * scale] = 255
            target = root / "ground_truth" / defect / f"{i:03d}_mask.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(mask))
    return root
