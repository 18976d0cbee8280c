"""Difference images and the weighting mask of fixed-position products (METHOD.md step 2)."""

from __future__ import annotations

import numpy as np


def difference_image(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Delta = |x - x_hat| averaged over channels, in [0, 1].

    Args:
        x, x_hat: (..., H, W, 3) ``uint8`` images (one or a stack).
    Returns:
        (..., H, W) float32.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"image and reconstruction shapes differ: {x.shape} vs {x_hat.shape}")
    diff = np.abs(x.astype(np.int16) - x_hat.astype(np.int16)).astype(np.float32)
    return diff.mean(axis=-1) / 255.0


def weighting_mask(deltas: np.ndarray) -> np.ndarray:
    """W = 1 - norm(mean Delta) from the difference images of m unseen normal images.

    Pixels that the model reconstructs badly on normal units (high natural variation) get a
    weight near 0, stable pixels near 1. A constant mean difference gives W = 1 everywhere
    (nothing to down-weight).

    Args:
        deltas: (m, H, W) difference images in [0, 1].
    Returns:
        (H, W) float32 in [0, 1].
    """
    stack = np.asarray(deltas, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected (m, H, W) difference images with m >= 1, got {stack.shape}")
    mean = stack.mean(axis=0)
    lo, hi = float(mean.min()), float(mean.max())
    if hi - lo <= 1e-12:
        return np.ones_like(mean, dtype=np.float32)
    return (1.0 - (mean - lo) / (hi - lo)).astype(np.float32)


def align_to_reference(
    image: np.ndarray, reference: np.ndarray, method: str = "phase"
) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift ``image`` onto ``reference`` (both (H, W, 3) ``uint8``) for products that are not
    exactly at a fixed position; returns the aligned image and the (dy, dx) shift applied.

    ``phase``: sub-pixel phase correlation (scikit-image); ``none``: no alignment.
    """
    from scipy.ndimage import shift as nd_shift
    from skimage.registration import phase_cross_correlation

    if method == "none":
        return image, (0.0, 0.0)
    if method != "phase":
        raise ValueError(f"unknown alignment method {method!r}; expected 'phase' or 'none'")
    gray = image.astype(np.float64).mean(axis=-1)
    ref = reference.astype(np.float64).mean(axis=-1)
    offset, _, _ = phase_cross_correlation(ref, gray, upsample_factor=10)
    dy, dx = float(offset[0]), float(offset[1])
    shifted = nd_shift(image.astype(np.float64), (dy, dx, 0.0), order=1, mode="nearest")
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8), (dy, dx)
