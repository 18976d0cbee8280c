"""Capture statistics: global properties of an image that say how it was captured and stored,
not what it shows.

They feed the *shortcut baseline* (:class:`~vqganodip_pipeline.scoring.baselines.CaptureShortcut`):
if a classifier on these numbers alone separates normal from abnormal images, the classes differ
in capture (camera, lighting, day, compression: DeepPCB's templates and tested images are stored
at different JPEG qualities) or the defects are so large that any detector finds them, and a
detector's figure on that data does not show defect detection.

The statistics are computed on the pixels as the pipeline reads them (after a reader's own
normalisation, e.g. DeepPCB's re-binarisation), at the file's own resolution, before the resize
to the working size: those are the pixels every detector downstream is given. Properties of
the file that never reach the pixels (its byte size, its JPEG tables) are deliberately left
out: what matters is whether the *detector's input* carries a shortcut. Compression is
estimated from the pixels instead: the 8 x 8 block artefacts of JPEG (blockiness) and the
lossless-PNG size of the grey image (bits per pixel).
"""

from __future__ import annotations

import numpy as np

from vqganodip_pipeline.data.images import encode_png

CAPTURE_PREFIX = "capture__"
HISTOGRAM_BINS = 16
CAPTURE_COLUMNS: tuple[str, ...] = (
    *(
        f"{CAPTURE_PREFIX}{name}"
        for name in (
            "height",
            "width",
            "channels",
            "mean_r",
            "mean_g",
            "mean_b",
            "grey_mean",
            "grey_std",
            "gradient_energy",
            "noise_mad",
            "grey_levels",
            "blockiness",
            "png_bits_per_pixel",
        )
    ),
    *(f"{CAPTURE_PREFIX}hist_{i:02d}" for i in range(HISTOGRAM_BINS)),
)


def _blockiness(grey: np.ndarray) -> float:
    """Mean absolute step across 8-px block borders over the mean step elsewhere (1.0 = no
    block grid; JPEG at low quality gives > 1). Both directions; 0 for images under 16 px."""
    if min(grey.shape) < 16:
        return 0.0
    steps = []
    for diff in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        border = diff[:, 7::8].mean()
        inner_mask = np.ones(diff.shape[1], dtype=bool)
        inner_mask[7::8] = False
        inner = diff[:, inner_mask].mean()
        steps.append((border + 1e-3) / (inner + 1e-3))
    return float(np.mean(steps))


def capture_statistics(pixels: np.ndarray, channels: int) -> dict[str, float]:
    """The capture statistics of one (H, W, 3) ``uint8`` image whose file had ``channels``
    channels, as ``{column: value}`` over :data:`CAPTURE_COLUMNS`.

    Grey level = the mean of the three channels (0..255). ``gradient_energy`` = mean squared
    horizontal + vertical difference; ``noise_mad`` = median absolute 4-neighbour Laplacian (a
    robust noise level); ``grey_levels`` = distinct rounded grey values; ``hist_*`` = shares of
    pixels in 16 equal grey bins.
    """
    image = np.asarray(pixels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"capture_statistics expects (H, W, 3) uint8 pixels, got {image.shape}")
    rgb = image.astype(np.float64)
    grey = rgb.mean(axis=2)
    dx, dy = np.diff(grey, axis=1), np.diff(grey, axis=0)
    laplacian = (
        4.0 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    grey8 = np.rint(grey).astype(np.uint8)
    histogram = np.bincount(grey8.ravel() // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS)
    values = [
        float(image.shape[0]),
        float(image.shape[1]),
        float(channels),
        *(float(rgb[:, :, c].mean()) for c in range(3)),
        float(grey.mean()),
        float(grey.std()),
        float((dx**2).mean() + (dy**2).mean()) if dx.size and dy.size else 0.0,
        float(np.median(np.abs(laplacian))) if laplacian.size else 0.0,
        float(len(np.unique(grey8))),
        _blockiness(grey),
        8.0 * len(encode_png(grey8)) / grey8.size,
        *(histogram / grey8.size).tolist(),
    ]
    return dict(zip(CAPTURE_COLUMNS, values, strict=True))
