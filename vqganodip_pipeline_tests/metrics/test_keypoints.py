"""ORB keypoint matching between an image and its (synthetic) reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vqganodip_pipeline.metrics.keypoints import KEYPOINT_METRICS, orb_keypoint_matching


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A 160 px smooth random texture in [0, 1]: plenty of FAST corners at several scales."""
    noise = np.random.default_rng(0).random((160, 160))
    img = ndimage.gaussian_filter(noise, 2.0)
    return (img - img.min()) / (img.max() - img.min())


def _crop(img: np.ndarray, dy: int = 0, dx: int = 0, size: int = 112) -> np.ndarray:
    """A window of ``img``; the content of (dy, dx)-shifted crops moves by (-dy, -dx) px."""
    return img[24 + dy : 24 + dy + size, 24 + dx : 24 + dx + size]


def test_image_against_itself_matches_everything(texture: np.ndarray) -> None:
    x = _crop(texture)
    got = orb_keypoint_matching(x, x.copy())
    assert tuple(got) == KEYPOINT_METRICS
    assert all(isinstance(v, float) for v in got.values())
    assert got["n_keypoints_x"] > 50
    assert got["n_keypoints_x"] == got["n_keypoints_xhat"] == got["n_matches"]
    assert got["match_ratio"] == 1.0
    assert got["mean_match_distance"] == 0.0
    assert got["mean_keypoint_displacement"] == 0.0


@pytest.mark.parametrize(("dy", "dx"), [(3, 5), (-4, 2)])
def test_shifted_copy_displacement_is_the_shift(texture: np.ndarray, dy: int, dx: int) -> None:
    x = _crop(texture)
    got = orb_keypoint_matching(x, _crop(texture, dy, dx))
    assert got["match_ratio"] > 0.5
    assert got["mean_keypoint_displacement"] == pytest.approx(np.hypot(dy, dx), abs=0.5)
    assert 0.0 < got["mean_match_distance"] < 0.25


def test_unrelated_image_matches_worse(texture: np.ndarray) -> None:
    x = _crop(texture)
    other = np.random.default_rng(1).random(texture.shape)
    other = ndimage.gaussian_filter(other, 2.0)
    other = (other - other.min()) / (other.max() - other.min())
    same = orb_keypoint_matching(x, _crop(texture, 3, 5))
    different = orb_keypoint_matching(x, _crop(other))
    assert different["match_ratio"] < same["match_ratio"]
    assert different["mean_match_distance"] > same["mean_match_distance"]


def test_colour_uint8_input_equals_gray_float(texture: np.ndarray) -> None:
    gray8 = np.round(_crop(texture) * 255).astype(np.uint8)
    rgb8 = np.repeat(gray8[..., None], 3, axis=2)
    got_rgb = orb_keypoint_matching(rgb8, rgb8[::-1].copy())
    got_gray = orb_keypoint_matching(gray8 / 255.0, gray8[::-1] / 255.0)
    for key in KEYPOINT_METRICS:
        assert got_rgb[key] == pytest.approx(got_gray[key], rel=1e-9), key


def test_deterministic(texture: np.ndarray) -> None:
    x, y = _crop(texture), _crop(texture, 2, 1)
    assert orb_keypoint_matching(x, y) == orb_keypoint_matching(x, y)


@pytest.mark.parametrize("size", [1, 2, 5, 16, 64])
def test_flat_images_give_documented_values(size: int) -> None:
    flat = np.full((size, size, 3), 0.5)
    got = orb_keypoint_matching(flat, flat.copy())
    assert got == {
        "n_keypoints_x": 0.0,
        "n_keypoints_xhat": 0.0,
        "n_matches": 0.0,
        "match_ratio": 0.0,
        "mean_match_distance": 0.0,
        "mean_keypoint_displacement": 0.0,
    }


def test_keypoints_on_one_side_only(texture: np.ndarray) -> None:
    x = _crop(texture)
    flat = np.full_like(x, 0.5)
    got = orb_keypoint_matching(x, flat)
    assert got["n_keypoints_x"] > 0 and got["n_keypoints_xhat"] == 0.0
    assert (got["n_matches"], got["match_ratio"]) == (0.0, 0.0)
    assert got["mean_match_distance"] == 1.0
    assert got["mean_keypoint_displacement"] == 0.0
    reverse = orb_keypoint_matching(flat, x)
    assert reverse["n_keypoints_x"] == 0.0 and reverse["mean_match_distance"] == 1.0


def test_small_noisy_image_does_not_crash() -> None:
    # Random 20 px images have FAST corners but all of them lie within ORB's 16 px border.
    noise = np.random.default_rng(2).random((20, 20))
    got = orb_keypoint_matching(noise, noise[::-1].copy())
    assert got["n_keypoints_x"] == 0.0 and got["match_ratio"] == 0.0


def test_n_keypoints_caps_the_count(texture: np.ndarray) -> None:
    x = _crop(texture)
    got = orb_keypoint_matching(x, x, n_keypoints=20)
    assert got["n_keypoints_x"] == 20.0 and got["n_matches"] == 20.0


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (np.zeros((40, 40)), np.zeros((40, 41)), {}, "same size"),
        (np.zeros((40, 40, 4)), np.zeros((40, 40, 4)), {}, r"\(H, W\) or \(H, W, 3\)"),
        (np.full((40, 40), 2.0), np.zeros((40, 40)), {}, r"\[0, 1\]"),
        (np.zeros((40, 40), dtype=np.int32), np.zeros((40, 40)), {}, "uint8 or float"),
        (np.zeros((40, 40)), np.zeros((40, 40)), {"n_keypoints": 0}, "n_keypoints"),
        (np.zeros((40, 40)), np.zeros((40, 40)), {"max_ratio": 0.0}, "max_ratio"),
    ],
)
def test_bad_input(x: np.ndarray, y: np.ndarray, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        orb_keypoint_matching(x, y, **kwargs)


def test_keypoints_agree_with_skimage_orb(texture: np.ndarray) -> None:
    # OpenCV's ORB replaced skimage's: most of the keypoints are the same corners (measured
    # 0.73 within 2 px on this texture, 0.76 on a synthetic board); the rest differ by the
    # Harris ranking and the pyramid's resampling
    import cv2
    from skimage.feature import ORB

    from vqganodip_pipeline.metrics.keypoints import _detect

    reference = ORB(n_keypoints=200, fast_threshold=0.08)
    reference.detect_and_extract(texture)
    orb = cv2.ORB_create(
        nfeatures=400, edgeThreshold=16, fastThreshold=20, scoreType=cv2.ORB_HARRIS_SCORE
    )
    ours, descriptors = _detect(texture, orb, 200)
    assert ours.shape == (200, 2) and descriptors.shape == (200, 256)
    nearest = np.linalg.norm(ours[:, None] - reference.keypoints[None], axis=2).min(axis=1)
    assert (nearest <= 2.0).mean() > 0.6
