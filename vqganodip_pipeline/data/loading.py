"""Pixels for manifest rows: images and ground-truth masks as arrays at a working resolution."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vqganodip_pipeline.data.fs import read_bytes
from vqganodip_pipeline.data.images import binarize, decode_image, resize_image
from vqganodip_pipeline.data.manifest import boxes_of


def _target_size(row: Mapping[str, Any], size: int | None) -> tuple[int, int]:
    return (int(row["height"]), int(row["width"])) if size is None else (size, size)


def load_image(
    row: Mapping[str, Any],
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The RGB ``uint8`` pixels of one manifest row as its reader defines them (re-binarised
    where the row says ``binarize``), resized to ``size`` x ``size`` if given."""
    decoded = decode_image(read_bytes(str(row["uri"]), storage_options), str(row["uri"]))
    return resize_image(source_pixels(decoded.pixels, row), _target_size(row, size))


def source_pixels(pixels: np.ndarray, row: Mapping[str, Any]) -> np.ndarray:
    """Decoded pixels after the reader's own normalisation (``binarize`` for DeepPCB)."""
    flag = row.get("binarize", False)
    return binarize(pixels) if isinstance(flag, (bool, np.bool_)) and flag else pixels


def load_images(
    manifest: pd.DataFrame,
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_workers: int = 4,
) -> np.ndarray:
    """All images of ``manifest`` as one (N, H, W, 3) ``uint8`` array.

    With ``size=None`` every image must already have the same size (else a ValueError names the
    first one that differs)."""
    if len(manifest) == 0:
        raise ValueError("no images to load: the manifest is empty")
    rows = manifest.to_dict("records")
    if size is None:
        first = (rows[0]["height"], rows[0]["width"])
        for row in rows:
            if (row["height"], row["width"]) != first:
                raise ValueError(
                    f"{row['uri']}: size {row['width']}x{row['height']} differs from "
                    f"{first[1]}x{first[0]}; pass a working size to resize"
                )
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        images = list(pool.map(lambda r: load_image(r, size, storage_options), rows))
    return np.stack(images)


def iter_image_batches(
    manifest: pd.DataFrame,
    batch_size: int,
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Stream (rows, images) in batches so that memory stays bounded on large batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(manifest), batch_size):
        part = manifest.iloc[start : start + batch_size]
        yield part, load_images(part, size, storage_options)


def load_mask(
    row: Mapping[str, Any],
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray | None:
    """Ground-truth defect mask (H, W) bool of a row at the working size, from its mask file or
    its boxes; ``None`` when the row has neither."""
    height, width = _target_size(row, size)
    mask_uri = row.get("mask_uri")
    if isinstance(mask_uri, str) and mask_uri:
        decoded = decode_image(read_bytes(mask_uri, storage_options), mask_uri)
        gray = decoded.pixels.max(axis=2)
        if gray.shape != (height, width):
            gray = np.asarray(
                Image.fromarray(gray).resize((width, height), Image.Resampling.NEAREST)
            )
        return gray > 127
    boxes = boxes_of(row)
    if not boxes:
        return None
    scale_y = height / float(row["height"])
    scale_x = width / float(row["width"])
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2, _kind in boxes:
        top, bottom = int(np.floor(y1 * scale_y)), int(np.ceil(y2 * scale_y))
        left, right = int(np.floor(x1 * scale_x)), int(np.ceil(x2 * scale_x))
        mask[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)] = True
    return mask
