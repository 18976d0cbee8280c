"""Position consistency: fixed-position units against moving content, and the decision."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.transform import resize

from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.localize.position import (
    FIXED_POSITION_MIN,
    decide_position,
    position_consistency,
)


def texture_crops(m: int, side: int = 128, seed: int = 0) -> np.ndarray:
    """m crops at random places of one smooth random texture: the content moves."""
    rng = np.random.default_rng(seed)
    texture = gaussian_filter(rng.random((4 * side, 4 * side)), 3)
    corners = rng.integers(0, 3 * side, size=(m, 2))
    return np.stack([texture[y : y + side, x : x + side] for y, x in corners])


def test_consistency_is_the_share_of_variance_in_the_mean_image() -> None:
    rng = np.random.default_rng(1)
    layout = rng.random((64, 64))
    # identical units: the mean image explains everything
    assert position_consistency(np.stack([layout] * 5)) == pytest.approx(1.0)
    # by hand: the same layout plus independent noise of variance s2 per pixel
    noisy = np.stack([layout + rng.normal(0, 0.3, layout.shape) for _ in range(6)])
    small = np.stack([resize(u, (64, 64), anti_aliasing=True) for u in noisy])
    small -= small.mean(axis=(1, 2), keepdims=True)
    expected = small.mean(axis=0).var() / small.var(axis=(1, 2)).mean()
    assert position_consistency(noisy) == pytest.approx(expected)
    # colour units are read as grey (the channel mean), and an offset or gain per unit is
    # the unit's own exposure, not its layout
    assert position_consistency(np.stack([layout] * 3, axis=-1)[None].repeat(3, 0)) == (
        pytest.approx(1.0)
    )
    assert position_consistency(np.stack([layout, layout + 0.5])) == pytest.approx(1.0)


def test_boards_are_fixed_and_moving_texture_is_free() -> None:
    boards = generate_images(8, 0, size=64, seed=3).images
    assert position_consistency(boards) > 0.9
    # unrelated crops share only what a mean of m units keeps by chance: about 1 / m
    for m in (8, 16):
        assert position_consistency(texture_crops(m)) < 2.5 / m < FIXED_POSITION_MIN
    decided = decide_position(boards)
    assert decided.fixed and decided.consistency is not None
    assert decided.describe().startswith("fixed (auto: the mean image explains 0.9")
    free = decide_position(texture_crops(8))
    assert not free.fixed and "< 0.5" in free.describe()
    # a setting decides alone, without measuring
    assert decide_position(texture_crops(8), "fixed").fixed
    assert decide_position(boards, "free").describe() == "free (set)"


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        position_consistency(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="every image is flat"):
        position_consistency(np.full((3, 8, 8), 7.0))
    with pytest.raises(ValueError, match=r"position must be one of \('auto', 'fixed', 'free'\)"):
        decide_position(np.zeros((3, 8, 8)), "sometimes")
