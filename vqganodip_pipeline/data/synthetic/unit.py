"""Normal variation of one produced unit: what differs between two good boards.

Every unit draws its placement offsets, solder volumes, lighting, serial code and marking from
its own random streams (one stream per kind of variation, derived from the unit seed), always in
the same order, so that switching one kind of variation off or adding a defect leaves all the
others untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from .layout import BOARD_MM, CODE_MODULES, BoardLayout, code_matrix, random_lot, random_serial

STREAM_PLACEMENT = 1
STREAM_SOLDER = 2
STREAM_LIGHT = 3
STREAM_NOISE = 4
STREAM_CODE = 5
STREAM_MARKING = 6
STREAM_DEFECT = 7


@dataclass(frozen=True)
class Variation:
    """Amounts of normal (defect-free) variation between units; all distances in board mm.

    Attributes:
        jitter_mm: maximum placement offset of a part along each axis (0.25 mm = 2 px at 256 px
            over the 32 mm field of view); offsets are normal with std jitter_mm / 2, truncated.
        rotation_deg: maximum placement rotation (degrees), same truncated distribution.
        solder: relative spread of the solder volume per joint (fillet length, highlight).
        illumination: scale of the lighting variation (gain ~4 %, white balance ~1.5 %, a
            linear gradient ~3 % per half field); 0 switches it off.
        noise_sigma: sensor noise standard deviation in grey levels (of 255).
        serial_code: a different 2D serial code and serial number on every unit.
        marking: per-unit IC lot codes and marking contrast.
    """

    jitter_mm: float = 0.25
    rotation_deg: float = 1.0
    solder: float = 0.12
    illumination: float = 1.0
    noise_sigma: float = 1.8
    serial_code: bool = True
    marking: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"Variation.{f.name} must be a bool, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"Variation.{f.name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def none(cls) -> Variation:
        """No variation at all: every seed renders the same unit."""
        return cls(
            jitter_mm=0.0,
            rotation_deg=0.0,
            solder=0.0,
            illumination=0.0,
            noise_sigma=0.0,
            serial_code=False,
            marking=False,
        )

    def jitter_px(self, size: int, size_mm: float = BOARD_MM) -> float:
        """The placement jitter bound in pixels at image ``size``."""
        return self.jitter_mm * size / size_mm


@dataclass(frozen=True)
class PartState:
    """How one part came out on this unit (offsets in mm / degrees, per-lead solder)."""

    dx: float
    dy: float
    dangle: float
    volume: tuple[float, ...]  # solder volume per lead, 1 = nominal
    highlight: tuple[float, ...]  # shift of the fillet's specular highlight per lead
    marking_gain: float = 1.0
    lot: str = ""
    present: bool = True
    tomb: int = 0  # 0, or the side (-1 / +1 along the body) the part stands on
    tomb_angle: float = 0.0  # degrees from the board plane
    bare: tuple[float, ...] = ()  # per lead: fraction of the pad left unwetted (gold shows)


@dataclass(frozen=True)
class Lighting:
    gain: float
    white_balance: tuple[float, float, float]
    gradient: tuple[float, float]  # relative change per half field along x and y
    noise_sigma: float  # grey levels


@dataclass(frozen=True, eq=False)
class UnitState:
    parts: tuple[PartState, ...]
    code: np.ndarray  # (CODE_MODULES, CODE_MODULES) bool, data region included
    code_ink: np.ndarray  # (CODE_MODULES, CODE_MODULES) darkness of each laser-marked module
    serial: str
    lighting: Lighting


def _truncated(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """Normal with std 1/2, clipped to [-1, 1]."""
    return np.clip(rng.standard_normal(shape) / 2.0, -1.0, 1.0)


def sample_unit(layout: BoardLayout, seed: int, variation: Variation) -> UnitState:
    """The normal state of unit ``seed`` of ``layout`` under ``variation``."""
    n = len(layout.components)
    place = np.random.default_rng([seed, STREAM_PLACEMENT])
    solder = np.random.default_rng([seed, STREAM_SOLDER])
    light = np.random.default_rng([seed, STREAM_LIGHT])
    code_rng = np.random.default_rng([seed, STREAM_CODE])
    mark = np.random.default_rng([seed, STREAM_MARKING])

    offsets = _truncated(place, (n, 3))
    parts = []
    for i, comp in enumerate(layout.components):
        k = len(comp.package.leads)
        # normal joints stay normal: never as little or as much solder as a defect
        vol = np.clip(
            1.0 + np.clip(solder.standard_normal(k), -2.0, 2.0) * variation.solder, 0.4, 1.5
        )
        hl = np.clip(solder.standard_normal(k), -2.0, 2.0) * variation.solder
        gain = 1.0 + 0.12 * float(np.clip(mark.standard_normal(), -2.0, 2.0))
        lot = random_lot(mark) if comp.family == "U" else ""
        parts.append(
            PartState(
                dx=float(offsets[i, 0]) * variation.jitter_mm,
                dy=float(offsets[i, 1]) * variation.jitter_mm,
                dangle=float(offsets[i, 2]) * variation.rotation_deg,
                volume=tuple(float(v) for v in vol),
                highlight=tuple(float(v) for v in hl),
                marking_gain=gain if variation.marking else 1.0,
                lot=lot if variation.marking else comp.lot,
            )
        )

    m = CODE_MODULES - 2
    bits = code_rng.random((m, m)) < 0.5
    serial = random_serial(code_rng)
    ink = 0.9 + 0.1 * code_rng.random((CODE_MODULES, CODE_MODULES))
    if not variation.serial_code:
        bits = layout.default_code
        serial = layout.default_serial
        ink = np.full((CODE_MODULES, CODE_MODULES), 0.95)
    code = code_matrix(bits)

    z = np.clip(light.standard_normal(7), -2.5, 2.5)
    amount = variation.illumination
    lighting = Lighting(
        gain=1.0 + 0.04 * amount * float(z[0]),
        white_balance=tuple(1.0 + 0.015 * amount * float(v) for v in z[1:4]),  # type: ignore[arg-type]
        gradient=(0.03 * amount * float(z[4]), 0.03 * amount * float(z[5])),
        noise_sigma=variation.noise_sigma * (1.0 + 0.1 * float(z[6])),
    )
    return UnitState(
        parts=tuple(parts),
        code=code,
        code_ink=ink.astype(np.float32),
        serial=serial,
        lighting=lighting,
    )
