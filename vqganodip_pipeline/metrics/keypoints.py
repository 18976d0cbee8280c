"""ORB keypoint matching between an image ``x`` and its reconstruction ``x_hat`` (image level).

Keypoints (oriented FAST + rBRIEF, ``skimage.feature.ORB``) are detected independently on the
grayscale versions of both images and matched by Hamming distance of their 256-bit descriptors
(``skimage.feature.match_descriptors``, cross-checked, with Lowe's ratio test). A faithful
reconstruction reproduces the corners of ``x`` at the same places, so few matches, large
descriptor distances or large displacements point at regions the model could not rebuild.
Everything is deterministic (ORB's sampling pattern is fixed; ties in matching go to the first
index).

Returned values (all Python floats, keys in :data:`KEYPOINT_METRICS`):

==========================  ===================================================================
key                         meaning
==========================  ===================================================================
n_keypoints_x               keypoints kept on ``x`` (at most ``n_keypoints``)
n_keypoints_xhat            keypoints kept on ``x_hat``
n_matches                   matched pairs
match_ratio                 ``n_matches / max(1, n_keypoints_x)``, in [0, 1]
mean_match_distance         mean Hamming distance of matched descriptors as a fraction of the
                            256 bits, in [0, 1]
mean_keypoint_displacement  mean Euclidean distance (px, full-resolution image coordinates)
                            between the positions of matched keypoints
==========================  ===================================================================

Documented values where nothing can be matched (never NaN, never an exception from ORB):

* no keypoints on either image (flat or tiny images; ORB raises ``RuntimeError`` there, which is
  caught; images under 7 px on a side are not passed to ORB because FAST's radius-3 circle does
  not fit): counts 0, ``match_ratio`` 0.0, ``mean_match_distance`` 0.0 (nothing differs),
  ``mean_keypoint_displacement`` 0.0;
* keypoints on one or both images but no match: ``match_ratio`` 0.0, ``mean_match_distance``
  1.0 (the largest normalised distance: no descriptor found a partner),
  ``mean_keypoint_displacement`` 0.0.

ORB only keeps keypoints at least 16 px (at each pyramid level) from the border, so images
below about 33 px have no keypoints at all.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.feature import ORB, match_descriptors

KEYPOINT_METRICS = (
    "n_keypoints_x",
    "n_keypoints_xhat",
    "n_matches",
    "match_ratio",
    "mean_match_distance",
    "mean_keypoint_displacement",
)

_FAST_MIN_SIDE = 7  # FAST's segment test reads a circle of radius 3 around each pixel.
_ORB_NO_FEATURES = "ORB found no features"


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    """(H, W) or (H, W, 1|3) uint8 / float in [0, 1] -> float64 (H, W) in [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"{name}: expected an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64, copy=False)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: contains NaN or inf")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(
                f"{name}: float images must lie in [0, 1], got range "
                f"[{arr.min():.4g}, {arr.max():.4g}]"
            )
    else:
        raise ValueError(f"{name}: expected uint8 or float pixels, got dtype {arr.dtype}")
    return rgb2gray(arr) if arr.ndim == 3 else arr


def _detect(gray: np.ndarray, orb: ORB) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, 2) as (row, col) px and descriptors (N, 256) bool; empty when none."""
    empty = (np.zeros((0, 2)), np.zeros((0, 256), dtype=bool))
    if min(gray.shape) < _FAST_MIN_SIDE:
        return empty
    try:
        orb.detect_and_extract(gray)
    except RuntimeError as err:
        if _ORB_NO_FEATURES in str(err):
            return empty
        raise
    return np.asarray(orb.keypoints, dtype=np.float64), np.asarray(orb.descriptors, dtype=bool)


def orb_keypoint_matching(
    x: np.ndarray,
    x_hat: np.ndarray,
    *,
    n_keypoints: int = 200,
    fast_threshold: float = 0.08,
    n_scales: int = 8,
    downscale: float = 1.2,
    max_ratio: float = 0.8,
    cross_check: bool = True,
) -> dict[str, float]:
    """ORB keypoint matching metrics between ``x`` and its reconstruction ``x_hat``.

    Args:
        x, x_hat: images of the same shape, (H, W) or (H, W, 3), ``uint8`` or float in [0, 1];
            colour is converted with ``skimage.color.rgb2gray``.
        n_keypoints: keypoints kept per image (the strongest Harris responses).
        fast_threshold: FAST intensity threshold (on [0, 1] gray levels); lower finds more.
        n_scales, downscale: ORB's image pyramid.
        max_ratio: Lowe's ratio test of ``match_descriptors`` (1.0 disables it); 0.8 drops
            ambiguous matches that would otherwise inflate the mean displacement.
        cross_check: keep only mutual nearest neighbours.

    Returns:
        ``{key: float}`` for every key of :data:`KEYPOINT_METRICS` (module docstring).
    """
    gx = _to_gray(x, "x")
    gy = _to_gray(x_hat, "x_hat")
    if gx.shape != gy.shape:
        raise ValueError(f"x and x_hat must have the same size, got {gx.shape} and {gy.shape}")
    if n_keypoints < 1:
        raise ValueError(f"n_keypoints must be >= 1, got {n_keypoints}")
    if not 0 < max_ratio <= 1:
        raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio}")

    def make_orb() -> ORB:
        return ORB(
            n_keypoints=n_keypoints,
            fast_threshold=fast_threshold,
            n_scales=n_scales,
            downscale=downscale,
        )

    kx, dx = _detect(gx, make_orb())
    ky, dy = _detect(gy, make_orb())
    n_x, n_y = len(kx), len(ky)
    result = {
        "n_keypoints_x": float(n_x),
        "n_keypoints_xhat": float(n_y),
        "n_matches": 0.0,
        "match_ratio": 0.0,
        "mean_match_distance": 0.0 if n_x == 0 and n_y == 0 else 1.0,
        "mean_keypoint_displacement": 0.0,
    }
    if n_x == 0 or n_y == 0:
        return result
    matches = match_descriptors(
        dx, dy, metric="hamming", cross_check=cross_check, max_ratio=max_ratio
    )
    if len(matches) == 0:
        return result
    i, j = matches[:, 0], matches[:, 1]
    result["n_matches"] = float(len(matches))
    result["match_ratio"] = len(matches) / max(1, n_x)
    result["mean_match_distance"] = float(np.mean(dx[i] != dy[j]))
    result["mean_keypoint_displacement"] = float(np.linalg.norm(kx[i] - ky[j], axis=1).mean())
    return result
