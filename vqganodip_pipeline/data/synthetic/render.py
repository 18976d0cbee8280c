"""Rendering one unit, normal or defective, at any resolution."""

from __future__ import annotations

import numpy as np

from .defects import DEFECT_SIZES, DEFECT_TYPES, make_defect
from .draw import draw_unit, expose, render_board, sensor_noise
from .layout import BoardLayout
from .raster import Canvas
from .unit import STREAM_DEFECT, STREAM_NOISE, Variation, sample_unit

MIN_SIZE = 32
MIN_DEFECT_PIXELS = 4  # a defect changes at least this many pixels ...
MIN_DEFECT_CONTRAST = 24  # ... and at least one of them by this many grey levels
MAX_ATTEMPTS = 16


def check_size(size: object, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"{name} must be an int number of pixels, got {size!r}")
    if size < MIN_SIZE:
        raise ValueError(f"{name} must be >= {MIN_SIZE} px, got {size}")
    return int(size)


def check_seed(seed: object, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def check_defect(defect: object) -> str | None:
    if defect is None:
        return None
    if defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; expected one of {', '.join(DEFECT_TYPES)}")
    return str(defect)


def render_unit(
    layout: BoardLayout,
    *,
    size: int,
    seed: int,
    defect: str | None = None,
    defect_size: str = "small",
    variation: Variation | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render unit ``seed`` of ``layout`` as a ``size`` x ``size`` RGB image.

    The same (layout, size, seed, variation) always gives the same normal unit; with ``defect``
    the result is that very unit plus the defect, and the returned mask is exactly the set of
    pixels where the two differ (all False for a normal unit). A defect always changes at least
    MIN_DEFECT_PIXELS pixels, one of them by MIN_DEFECT_CONTRAST grey levels or more: one that
    would be hidden (e.g. under a part) is drawn again elsewhere, and a "small" defect that
    cannot reach that at a very low resolution (below ~64 px) is drawn at its large size.

    Returns:
        image (size, size, 3) uint8 RGB, mask (size, size) bool.
    """
    if not isinstance(layout, BoardLayout):
        raise ValueError(
            f"layout must be a BoardLayout (see make_layout), got {type(layout).__name__}"
        )
    size = check_size(size)
    seed = check_seed(seed)
    defect = check_defect(defect)
    if defect_size not in DEFECT_SIZES:
        raise ValueError(
            f"unknown defect_size {defect_size!r}; expected one of {', '.join(DEFECT_SIZES)}"
        )
    if variation is None:
        variation = Variation()
    elif not isinstance(variation, Variation):
        raise ValueError(f"variation must be a Variation, got {type(variation).__name__}")

    scale = layout.px_per_mm(size)
    state = sample_unit(layout, seed, variation)
    board = render_board(layout, size)
    clean = board.copy()
    draw_unit(Canvas(clean, scale), layout, state)
    noise = sensor_noise(seed, size, STREAM_NOISE) if state.lighting.noise_sigma > 0 else None
    normal = expose(clean, layout, state.lighting, noise)
    if defect is None:
        return normal, np.zeros((size, size), dtype=bool)

    kind_index = DEFECT_TYPES.index(defect)
    size_index = DEFECT_SIZES.index(defect_size)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, STREAM_DEFECT, kind_index, size_index, attempt])
        # a small defect that stays invisible at a very low resolution is drawn large instead
        drawn_size = defect_size if attempt < MAX_ATTEMPTS // 2 else "large"
        found = make_defect(layout, state, defect, drawn_size, rng, scale)
        clean_d = board.copy()
        draw_unit(Canvas(clean_d, scale), layout, found.state, found.pre, found.post)
        image = expose(clean_d, layout, state.lighting, noise)
        diff = np.abs(image.astype(np.int16) - normal.astype(np.int16)).max(axis=-1)
        mask = diff > 0
        # a defect hidden under a part or lost in quantisation is drawn again elsewhere
        if mask.sum() >= MIN_DEFECT_PIXELS and diff.max() >= MIN_DEFECT_CONTRAST:
            return image, mask
    raise RuntimeError(
        f"could not place a visible {defect_size} {defect!r} defect on unit {seed} at {size} px"
    )
