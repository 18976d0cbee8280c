"""Top-p pixels and zoom-out-and-shift candidate patches (GanoDIP, METHOD.md step 2).

A patch is ``(top, left, size)`` in pixels. Around each of the p most different pixels, n square
patches of sides alpha, 2 alpha, ..., n alpha are centred on the pixel, and each is repeated at
its 8 neighbouring positions (top-left ... bottom-right), displaced by ``shift`` pixels (default:
the patch side, i.e. adjacent tiles as in the paper's figure) -> p x n x 9 candidates. Patches keep
their size at the image border: they are moved inside the image rather than truncated, so every
candidate holds size x size real pixels.
"""

from __future__ import annotations

import numpy as np

# (dy, dx) of the centre tile and its 8 neighbours, row by row.
NEIGHBOUR_OFFSETS = np.array(
    [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.int64
)  # index 4 is the centre


def top_p_pixels(difference: np.ndarray, p: int) -> np.ndarray:
    """Coordinates (row, col) of the p largest values of a (H, W) map, largest first.

    Ties are broken by raster order (lower flat index first) so the result is deterministic.
    """
    if difference.ndim != 2:
        raise ValueError(f"expected a (H, W) difference map, got shape {difference.shape}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    flat = difference.ravel()
    p = min(p, flat.size)
    # lexsort: primary key -value (descending), secondary key index (ascending)
    if p < flat.size:
        threshold_index = np.argpartition(-flat, p - 1)[p - 1]
        threshold = flat[threshold_index]
        candidates = np.flatnonzero(flat >= threshold)
    else:
        candidates = np.arange(flat.size)
    order = np.lexsort((candidates, -flat[candidates]))[:p]
    chosen = candidates[order]
    return np.stack(np.unravel_index(chosen, difference.shape), axis=1).astype(np.int64)


def zoom_out_and_shift(
    pixels: np.ndarray,
    image_shape: tuple[int, int],
    n: int = 4,
    alpha: int = 4,
    shift: int | None = None,
) -> np.ndarray:
    """Candidate patches around ``pixels``.

    Args:
        pixels: (p, 2) (row, col) centres.
        image_shape: (H, W) of the image.
        n: number of patch sizes alpha, 2 alpha, ..., n alpha.
        alpha: size increment in pixels.
        shift: displacement of the 8 neighbours in pixels; ``None`` = the patch side.
    Returns:
        (p * n * 9, 3) int64 array of (top, left, size), ordered by pixel, then size, then
        neighbour (raster order, centre at index 4).
    """
    height, width = image_shape
    if n < 1 or alpha < 1:
        raise ValueError(f"n and alpha must be >= 1, got n={n}, alpha={alpha}")
    if n * alpha > min(height, width):
        raise ValueError(
            f"largest patch n*alpha = {n * alpha} px does not fit in a {height}x{width} image"
        )
    if shift is not None and shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    sizes = alpha * np.arange(1, n + 1, dtype=np.int64)  # (n,)
    steps = sizes if shift is None else np.full_like(sizes, shift)
    # centred top-left for every (pixel, size): the pixel sits at index size // 2 of the patch
    top = pixels[:, None, 0] - sizes[None, :] // 2  # (p, n)
    left = pixels[:, None, 1] - sizes[None, :] // 2
    top = top[:, :, None] + NEIGHBOUR_OFFSETS[None, None, :, 0] * steps[None, :, None]
    left = left[:, :, None] + NEIGHBOUR_OFFSETS[None, None, :, 1] * steps[None, :, None]
    size = np.broadcast_to(sizes[None, :, None], top.shape)
    top = np.clip(top, 0, height - size)
    left = np.clip(left, 0, width - size)
    return np.stack([top, left, size], axis=-1).reshape(-1, 3)


def patch_keys(patches: np.ndarray) -> np.ndarray:
    """One int64 per (top, left, size) row that sorts like the rows (lexicographically), so
    equal patches have equal keys. ``np.unique`` on these keys gives what ``np.unique(...,
    axis=0)`` gives on the rows, several times faster (no structured-row sort)."""
    patches = np.asarray(patches, dtype=np.int64).reshape(-1, 3)
    if len(patches) and patches.min() < 0:
        raise ValueError("patch_keys: top, left and size must be >= 0")
    base = int(patches.max()) + 1 if len(patches) else 1
    return (patches[:, 0] * base + patches[:, 1]) * base + patches[:, 2]


def unique_patches(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """De-duplicate candidates: (unique (k, 3), inverse (N,)), ``unique[inverse] == patches``;
    the unique rows in lexicographic order."""
    patches = np.asarray(patches, dtype=np.int64).reshape(-1, 3)
    _, first, inverse = np.unique(patch_keys(patches), return_index=True, return_inverse=True)
    return patches[first], inverse.reshape(-1)


def crop_patches(image: np.ndarray, patches: np.ndarray) -> list[np.ndarray]:
    """Crops of ``image`` ((H, W, ...) array) for (top, left, size) patches."""
    return [image[top : top + s, left : left + s] for top, left, s in np.asarray(patches)]


def patch_stacks(
    image: np.ndarray, patches: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Group patches by size: {size: (indices into ``patches``, (k, size, size, ...) crops)}.

    Crops are gathered with one fancy-indexing operation per size (no Python loop per patch).
    """
    patches = np.asarray(patches)
    groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for size in np.unique(patches[:, 2]):
        index = np.flatnonzero(patches[:, 2] == size)
        offsets = np.arange(int(size))
        rows = patches[index, 0][:, None] + offsets[None, :]  # (k, s)
        cols = patches[index, 1][:, None] + offsets[None, :]
        crops = image[rows[:, :, None], cols[:, None, :]]  # (k, s, s, ...)
        groups[int(size)] = (index, crops)
    return groups


def hit_defects(patches: np.ndarray, defect_mask: np.ndarray) -> tuple[int, int]:
    """(number of defects, number hit by at least one patch): a defect is a connected component
    (8-connectivity) of ``defect_mask`` (H, W) bool; hit = at least one of its pixels lies in a
    patch."""
    from scipy import ndimage

    labels, count = ndimage.label(defect_mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return 0, 0
    covered = np.zeros(defect_mask.shape, dtype=bool)
    for top, left, size in np.asarray(patches):
        covered[top : top + size, left : left + size] = True
    hit = np.unique(labels[covered & (labels > 0)])
    return int(count), int(hit.size)
