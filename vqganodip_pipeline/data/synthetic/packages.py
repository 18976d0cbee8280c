"""SMD package footprints in their own frame (mm, x along the body length, y across, y down).

Dimensions follow the usual JEDEC / IPC-7351 nominal values closely enough that the parts look
right next to each other: 0402 ... 1206 chips, SOD-123, SOT-23, SOIC-8, TQFP-32 and a 4 x 4.5 mm
aluminium electrolytic can.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lead:
    """One solder joint of a package: the lead (or chip termination) and its land pad.

    ``x, y`` is the outer end (toe) of the lead, ``nx, ny`` the outward unit direction (axis
    aligned), ``width`` the lead's lateral width, ``length`` its visible length from the body
    edge to the toe (0 for a chip termination, drawn as part of the body). The pad is centred on
    ``pad_x, pad_y`` and measures ``pad_along`` along the outward direction, ``pad_across``
    across it.
    """

    x: float
    y: float
    nx: float
    ny: float
    width: float
    length: float
    pad_x: float
    pad_y: float
    pad_along: float
    pad_across: float


@dataclass(frozen=True)
class Package:
    """A footprint: body ``length`` x ``width`` x ``height`` mm and its leads."""

    name: str
    kind: str  # "chip", "sod", "gullwing", "ecap"
    length: float
    width: float
    height: float
    term: float  # termination length of a chip (mm), 0 otherwise
    leads: tuple[Lead, ...]

    @property
    def courtyard(self) -> tuple[float, float]:
        """Half extents (x, y) of the body plus pads, with a 0.15 mm margin."""
        hx = self.length / 2
        hy = self.width / 2
        for ld in self.leads:
            ha = ld.pad_along / 2
            hc = ld.pad_across / 2
            ex, ey = (ha, hc) if ld.nx != 0 else (hc, ha)
            hx = max(hx, abs(ld.pad_x) + ex, abs(ld.x))
            hy = max(hy, abs(ld.pad_y) + ey, abs(ld.y))
        return hx + 0.15, hy + 0.15


def _chip(
    name: str, length: float, width: float, height: float, term: float, toe: float, extra: float
) -> Package:
    inner = length / 2 - 0.9 * term
    outer = length / 2 + toe
    along = outer - inner
    centre = (inner + outer) / 2
    leads = tuple(
        Lead(sgn * length / 2, 0.0, sgn, 0.0, width, 0.0, sgn * centre, 0.0, along, width + extra)
        for sgn in (-1.0, 1.0)
    )
    return Package(name, "chip", length, width, height, term, leads)


def _gullwing_row(
    xs: tuple[float, ...],
    toe_y: float,
    sign: float,
    width: float,
    length: float,
    pad_centre: float,
    pad_along: float,
    pad_across: float,
) -> tuple[Lead, ...]:
    return tuple(
        Lead(x, sign * toe_y, 0.0, sign, width, length, x, sign * pad_centre, pad_along, pad_across)
        for x in xs
    )


def _rotate_leads(leads: tuple[Lead, ...]) -> tuple[Lead, ...]:
    """The same leads turned by 90 degrees (x, y) -> (-y, x)."""
    return tuple(
        Lead(
            -ld.y,
            ld.x,
            -ld.ny,
            ld.nx,
            ld.width,
            ld.length,
            -ld.pad_y,
            ld.pad_x,
            ld.pad_along,
            ld.pad_across,
        )
        for ld in leads
    )


def _sot23() -> Package:
    top = _gullwing_row((0.0,), 1.2, -1.0, 0.4, 0.55, 1.15, 0.9, 0.6)
    bottom = _gullwing_row((-0.95, 0.95), 1.2, 1.0, 0.4, 0.55, 1.15, 0.9, 0.6)
    return Package("SOT-23", "gullwing", 2.9, 1.3, 1.0, 0.0, bottom + top)


def _soic8() -> Package:
    xs = (-1.905, -0.635, 0.635, 1.905)
    bottom = _gullwing_row(xs, 3.0, 1.0, 0.42, 1.05, 2.7, 1.5, 0.6)
    top = _gullwing_row(tuple(reversed(xs)), 3.0, -1.0, 0.42, 1.05, 2.7, 1.5, 0.6)
    return Package("SOIC-8", "gullwing", 4.9, 3.9, 1.5, 0.0, bottom + top)


def _tqfp32() -> Package:
    xs = tuple(-2.8 + 0.8 * k for k in range(8))
    bottom = _gullwing_row(xs, 4.5, 1.0, 0.37, 1.0, 4.4, 1.5, 0.48)
    right = _rotate_leads(_gullwing_row(xs, 4.5, -1.0, 0.37, 1.0, 4.4, 1.5, 0.48))
    top = _gullwing_row(tuple(reversed(xs)), 4.5, -1.0, 0.37, 1.0, 4.4, 1.5, 0.48)
    left = _rotate_leads(_gullwing_row(tuple(reversed(xs)), 4.5, 1.0, 0.37, 1.0, 4.4, 1.5, 0.48))
    return Package("TQFP-32", "gullwing", 7.0, 7.0, 1.0, 0.0, bottom + right + top + left)


def _sod123() -> Package:
    leads = tuple(
        Lead(sgn * 1.75, 0.0, sgn, 0.0, 0.6, 0.4, sgn * 1.75, 0.0, 0.9, 1.0) for sgn in (-1.0, 1.0)
    )
    return Package("SOD-123", "sod", 2.7, 1.6, 1.1, 0.0, leads)


def _ecap4() -> Package:
    leads = tuple(
        Lead(sgn * 2.85, 0.0, sgn, 0.0, 0.65, 0.7, sgn * 2.3, 0.0, 2.2, 1.2) for sgn in (-1.0, 1.0)
    )
    return Package("CAP-4x4.5", "ecap", 4.3, 4.3, 5.4, 0.0, leads)


PACKAGES: dict[str, Package] = {
    "0402": _chip("0402", 1.0, 0.5, 0.35, 0.25, 0.22, 0.1),
    "0603": _chip("0603", 1.6, 0.8, 0.45, 0.3, 0.32, 0.15),
    "0805": _chip("0805", 2.0, 1.25, 0.5, 0.4, 0.42, 0.15),
    "1206": _chip("1206", 3.2, 1.6, 0.55, 0.5, 0.52, 0.2),
    "SOD-123": _sod123(),
    "SOT-23": _sot23(),
    "SOIC-8": _soic8(),
    "TQFP-32": _tqfp32(),
    "CAP-4x4.5": _ecap4(),
}
