"""ORB keypoint matching between an image ``x`` and its reconstruction ``x_hat`` (image level).

Keypoints (oriented FAST + rBRIEF, OpenCV's ``cv2.ORB``, the reference implementation of Rublee
et al. 2011, Harris-ranked) are detected independently on the 8-bit grayscale versions of both
images and matched by Hamming distance of their 256-bit descriptors
(``skimage.feature.match_descriptors``, cross-checked, with Lowe's ratio test). A faithful
reconstruction reproduces the corners of ``x`` at the same places, so few matches, large
descriptor distances or large displacements point at regions the model could not rebuild.
Everything is deterministic (ORB's sampling pattern is fixed; ties in matching go to the first
index). OpenCV's detector replaced ``skimage.feature.ORB`` (same parameters, same metrics): on a
pair of 256 px boards it takes 0.008 s against 0.26 s, which was a third of the metric row
(``bench/bench_latency.py``, stage ``orb_keypoints``).

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

* no keypoints on either image (flat or tiny images; images under 7 px on a side are not passed
  to ORB because FAST's radius-3 circle does not fit): counts 0, ``match_ratio`` 0.0,
  ``mean_match_distance`` 0.0 (nothing differs),
  ``mean_keypoint_displacement`` 0.0;
* keypoints on one or both images but no match: ``match_ratio`` 0.0, ``mean_match_distance``
  1.0 (the largest normalised distance: no descriptor found a partner),
  ``mean_keypoint_displacement`` 0.0.

ORB only keeps keypoints at least 17 px (at each pyramid level) from the border
(``edgeThreshold`` 16), so images below about 35 px have no keypoints at all.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.feature import match_descriptors

KEYPOINT_METRICS = (
    "n_keypoints_x",
    "n_keypoints_xhat",
    "n_matches",
    "match_ratio",
    "mean_match_distance",
    "mean_keypoint_displacement",
)

_FAST_MIN_SIDE = 7  # FAST's segment test reads a circle of radius 3 around each pixel.
_EDGE_THRESHOLD = 16  # px left out at each border and pyramid level (OpenCV's default is 31)
_PATCH_SIZE = 31  # px side of the rBRIEF patch (OpenCV's default and the ORB paper's)


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


def _detect(gray: np.ndarray, orb: cv2.ORB, n_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_keypoints`` strongest keypoints (N, 2) as (row, col) px and their descriptors
    (N, 256) bool; empty when none."""
    empty = (np.zeros((0, 2)), np.zeros((0, 256), dtype=bool))
    if min(gray.shape) < _FAST_MIN_SIDE:
        return empty
    # OpenCV's ORB reads 8-bit gray levels: [0, 1] -> round(255 g), exact for uint8 input
    gray8 = np.ascontiguousarray(np.round(gray * 255.0).astype(np.uint8))
    keypoints, descriptors = orb.detectAndCompute(gray8, None)
    if descriptors is None or len(keypoints) == 0:
        return empty
    # OpenCV shares its budget out among the pyramid levels and may return a few fewer than
    # asked: it is asked for twice as many, and the strongest over all levels are kept
    order = np.argsort([-kp.response for kp in keypoints], kind="stable")[:n_keypoints]
    positions = np.array([(keypoints[i].pt[1], keypoints[i].pt[0]) for i in order])
    return positions.astype(np.float64), np.unpackbits(descriptors[order], axis=1).astype(bool)


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

    def make_orb() -> cv2.ORB:
        return cv2.ORB_create(
            nfeatures=2 * n_keypoints,
            scaleFactor=downscale,
            nlevels=n_scales,
            edgeThreshold=_EDGE_THRESHOLD,
            fastThreshold=round(fast_threshold * 255.0),
            patchSize=_PATCH_SIZE,
            scoreType=cv2.ORB_HARRIS_SCORE,
        )

    kx, dx = _detect(gx, make_orb(), n_keypoints)
    ky, dy = _detect(gy, make_orb(), n_keypoints)
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
