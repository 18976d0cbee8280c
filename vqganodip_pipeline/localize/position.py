"""Is the product at a fixed position in every image? Decides whether per-pixel statistics apply.

The weighting mask W and the per-pixel / per-position statistics of the standardized variant
compare the same pixel across units: they help where every unit shows the product at the same
place (an assembled board in a fixture, a cropped solar cell) and mislead where position varies
(textures, loose parts, DeepPCB's crops of different board regions). The *position consistency*
of m normal units measures which: the share of their grey-level variance that their mean image
explains, ``var(mean image) / mean(var(image))`` after each unit's own mean is removed. Units
that repeat one layout give ~1 (0.96 on the synthetic boards, 0.64-0.82 on ELPV's cells);
units whose content moves give ~1/m plus what they share by chance (0.05 on 25 DeepPCB
templates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

# Between the measured fixed (>= 0.64) and free (<= 0.05) products; for unrelated units of a
# free-position product it is about 1 / m, far below at any usable m.
FIXED_POSITION_MIN = 0.5
POSITIONS = ("auto", "fixed", "free")


def position_consistency(images: np.ndarray, side: int = 64) -> float:
    """Share of the grey-level variance of ``images`` ((m, H, W, 3) or (m, H, W), any dtype)
    explained by their mean image, each unit first resized to ``side`` x ``side`` px (the
    layout, not the noise) and centred on its own mean. In [0, 1]; needs m >= 2 units that are
    not all flat."""
    stack = np.asarray(images, dtype=np.float64)
    if stack.ndim == 4:
        stack = stack.mean(axis=-1)
    if stack.ndim != 3 or len(stack) < 2:
        raise ValueError(
            f"position consistency needs at least 2 images (m, H, W[, 3]), got {stack.shape}"
        )
    small = np.stack([resize(unit, (side, side), anti_aliasing=True) for unit in stack])
    small -= small.mean(axis=(1, 2), keepdims=True)
    spread = float(small.var(axis=(1, 2)).mean())
    if spread == 0.0:
        raise ValueError("position consistency: every image is flat (one grey level)")
    return float(small.mean(axis=0).var() / spread)


@dataclass(frozen=True)
class PositionDecision:
    """fixed: whether per-pixel statistics apply; setting: "auto", "fixed" or "free";
    consistency: the measured position consistency (None when the setting decided alone)."""

    fixed: bool
    setting: str
    consistency: float | None = None

    def describe(self) -> str:
        kind = "fixed" if self.fixed else "free"
        if self.consistency is None:
            return f"{kind} (set)"
        relation = ">=" if self.fixed else "<"
        return (
            f"{kind} (auto: the mean image explains {self.consistency:.2f} of the units' "
            f"variance, {relation} {FIXED_POSITION_MIN})"
        )


def decide_position(images: np.ndarray, setting: str = "auto") -> PositionDecision:
    """``setting`` "fixed" or "free" as given; "auto": fixed when the position consistency of
    ``images`` (normal units) is at least :data:`FIXED_POSITION_MIN`."""
    if setting not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {setting!r}")
    if setting != "auto":
        return PositionDecision(setting == "fixed", setting)
    consistency = position_consistency(images)
    return PositionDecision(consistency >= FIXED_POSITION_MIN, setting, consistency)
