"""Assembly defects: each one is a change of a unit's state or extra paint over it.

A defect never touches the random streams of the normal unit, so the defective render differs
from the normal render of the same seed exactly where the defect is. Sizes are in board mm;
"small" defects are a few px at 256 px, "large" ones tens of px.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .draw import EXCESS_VOLUME, SOLDER, Op, dome_shade, fillet_shade, lead_toe, rgb
from .layout import BoardLayout, Component
from .raster import Canvas
from .unit import UnitState

DEFECT_TYPES: tuple[str, ...] = (
    "missing",
    "shifted",
    "rotated",
    "tombstone",
    "solder_bridge",
    "insufficient_solder",
    "excess_solder",
    "solder_ball",
    "foreign_particle",
    "scratch",
)
DEFECT_SIZES: tuple[str, ...] = ("small", "large")


@dataclass(frozen=True)
class Defect:
    """A defective unit: its changed state plus paint before (``pre``) and after (``post``)
    the parts."""

    kind: str
    size: str
    state: UnitState
    pre: tuple[Op, ...] = ()
    post: tuple[Op, ...] = ()


_SMALL_CHIPS = ("0402", "0603")
_LARGE_CHIPS = ("0805", "1206")
_CHIPS = _SMALL_CHIPS + _LARGE_CHIPS


def _pick(layout: BoardLayout, rng: np.random.Generator, ok: Callable[[Component], bool]) -> int:
    idx = [i for i, c in enumerate(layout.components) if ok(c)]
    if not idx:  # every layout has chips of all sizes and ICs; keep a fallback anyway
        idx = [i for i, c in enumerate(layout.components) if c.package.kind == "chip"]
    return int(idx[int(rng.integers(0, len(idx)))])


def _with_part(state: UnitState, i: int, **changes: object) -> UnitState:
    parts = list(state.parts)
    parts[i] = dataclasses.replace(parts[i], **changes)
    return dataclasses.replace(state, parts=tuple(parts))


def _pkg(*names: str) -> Callable[[Component], bool]:
    return lambda c: c.package.name in names


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _local_offset(comp: Component, lx: float, ly: float) -> tuple[float, float]:
    th = math.radians(comp.angle)
    return lx * math.cos(th) - ly * math.sin(th), lx * math.sin(th) + ly * math.cos(th)


def _on_board(layout: BoardLayout, x: float, y: float, margin: float = 0.8) -> bool:
    x0, y0, x1, y1 = layout.label_box
    inside = margin <= x <= layout.size_mm - margin and margin <= y <= layout.size_mm - margin
    on_label = x0 - 0.3 <= x <= x1 + 0.3 and y0 - 0.3 <= y <= y1 + 0.3
    return inside and not on_label


def _random_point(layout: BoardLayout, rng: np.random.Generator) -> tuple[float, float]:
    for _ in range(100):
        x, y = (float(v) for v in rng.uniform(1.0, layout.size_mm - 1.0, size=2))
        if _on_board(layout, x, y):
            return x, y
    return layout.size_mm / 2, layout.size_mm / 2


# ---------------------------------------------------------------------------------------------
def _missing(layout, state, size, rng, px):
    ok = (
        _pkg(*_SMALL_CHIPS)
        if size == "small"
        else _pkg(*_LARGE_CHIPS, "SOT-23", "SOD-123", "SOIC-8", "CAP-4x4.5")
    )
    i = _pick(layout, rng, ok)
    return _with_part(state, i, present=False), (), ()


def _shifted(layout, state, size, rng, px):
    if size == "small":
        i = _pick(layout, rng, _pkg(*_CHIPS))
        m = max(float(rng.uniform(0.45, 0.65)), 2.0 / px)
    else:
        i = _pick(
            layout, rng, _pkg(*_LARGE_CHIPS, "SOT-23", "SOD-123", "SOIC-8", "TQFP-32", "CAP-4x4.5")
        )
        m = max(float(rng.uniform(0.7, 1.1)), 3.0 / px)
    comp = layout.components[i]
    across = rng.random() < 0.65
    lx, ly = (0.0, _sign(rng) * m) if across else (_sign(rng) * m, 0.0)
    dx, dy = _local_offset(comp, lx, ly)
    part = state.parts[i]
    return _with_part(state, i, dx=part.dx + dx, dy=part.dy + dy), (), ()


def _rotated(layout, state, size, rng, px):
    if size == "small":
        i = _pick(layout, rng, _pkg("0603", "0805", "1206"))
        a = float(rng.uniform(10.0, 18.0))
    elif rng.random() < 0.6:
        i = _pick(layout, rng, _pkg("SOT-23", "SOD-123", "SOIC-8", "TQFP-32", "CAP-4x4.5"))
        a = float(rng.uniform(6.0, 12.0))
    else:
        i = _pick(layout, rng, _pkg(*_CHIPS))
        a = float(rng.uniform(25.0, 55.0))
    comp = layout.components[i]
    # at low resolution turn far enough for the body corners to move by ~1.5 px
    reach = math.hypot(comp.package.length, comp.package.width) / 2 * px
    a = max(a, math.degrees(math.asin(min(1.0, 1.5 / reach))))
    part = state.parts[i]
    return _with_part(state, i, dangle=part.dangle + _sign(rng) * a), (), ()


def _tombstone(layout, state, size, rng, px):
    if size == "small":
        i = _pick(layout, rng, _pkg(*_SMALL_CHIPS))
        angle = float(rng.uniform(60.0, 88.0))
    else:
        i = _pick(layout, rng, _pkg(*_LARGE_CHIPS))
        angle = float(rng.uniform(40.0, 85.0))
    return _with_part(state, i, tomb=int(_sign(rng)), tomb_angle=angle), (), ()


def _adjacent_run(comp: Component, start: int, count: int) -> list[int] | None:
    leads = comp.package.leads
    run = list(range(start, start + count))
    if run[-1] >= len(leads):
        return None
    first = leads[start]
    for k in run[1:]:
        ld, prev = leads[k], leads[k - 1]
        if (ld.nx, ld.ny) != (first.nx, first.ny):
            return None
        if math.hypot(ld.x - prev.x, ld.y - prev.y) > 1.5:
            return None
    return run


def _solder_bridge(layout, state, size, rng, px):
    count = 2 if size == "small" else int(rng.integers(3, 5))
    for _ in range(50):
        i = _pick(layout, rng, _pkg("SOIC-8", "TQFP-32"))
        comp = layout.components[i]
        run = _adjacent_run(comp, int(rng.integers(0, len(comp.package.leads))), count)
        if run is not None:
            break
    else:  # pragma: no cover - every layout has a TQFP with runs of 8 leads
        raise RuntimeError("no adjacent leads to bridge")
    part = state.parts[i]
    toes = np.array([lead_toe(comp, part, comp.package.leads[k]) for k in run])
    pad = comp.pads[run[0]]
    nx, ny = pad.nx, pad.ny
    width = comp.package.leads[run[0]].width
    span = float(np.hypot(*(toes[-1] - toes[0]))) + width * (0.6 if size == "small" else 1.2)
    inset = float(rng.uniform(0.15, 0.45))
    along = float(rng.uniform(0.22, 0.34)) if size == "small" else float(rng.uniform(0.45, 0.8))
    along = max(along, 1.2 / px)
    cx, cy = toes.mean(axis=0) - np.array([nx, ny]) * inset
    ang = pad.angle + 90.0  # box's first axis runs across the leads
    highlight = float(rng.uniform(0.3, 0.7))

    def op(cv: Canvas) -> None:
        if size == "small":
            cv.box(
                float(cx),
                float(cy),
                span,
                along,
                ang,
                SOLDER,
                radius=along / 2.5,
                shade=_bridge_shade(highlight),
            )
        else:
            cv.ellipse(
                float(cx),
                float(cy),
                span / 2,
                along / 2 + 0.05,
                ang,
                SOLDER,
                shade=dome_shade(0.8, highlight - 0.5, -0.3),
            )

    return state, (), (op,)


def _bridge_shade(highlight: float):
    inner = fillet_shade(highlight, 0.25, 0.6)

    def shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
        return inner(b, a, db, da)  # streak runs along the bridge

    return shade


def _joint_choice(layout, rng, size, px):
    """(component index, lead indices) whose solder a defect changes."""
    # below ~2.5 px/mm a chip's joint is about a pixel: use IC lead rows so it still shows
    if rng.random() < 0.55 and (size == "small" or px >= 2.5):
        i = _pick(layout, rng, _pkg("0603", "0805", "1206"))
        n = len(layout.components[i].package.leads)
        leads = [int(rng.integers(0, n))] if size == "small" else list(range(n))
        return i, leads
    ics = ("SOIC-8", "TQFP-32", "SOT-23", "SOD-123") if px >= 2.5 else ("SOIC-8", "TQFP-32")
    i = _pick(layout, rng, _pkg(*ics))
    comp = layout.components[i]
    n = len(comp.package.leads)
    k = int(rng.integers(0, n))
    if size == "small":
        return i, [k]
    side = (comp.package.leads[k].nx, comp.package.leads[k].ny)
    return i, [j for j, ld in enumerate(comp.package.leads) if (ld.nx, ld.ny) == side]


def _insufficient_solder(layout, state, size, rng, px):
    i, leads = _joint_choice(layout, rng, size, px)
    part = state.parts[i]
    volume = list(part.volume)
    bare = list(part.bare) if part.bare else [0.0] * len(volume)
    for k in leads:
        volume[k] = float(rng.uniform(0.0, 0.15))
        bare[k] = (
            float(rng.uniform(0.55, 0.85)) if size == "small" else float(rng.uniform(0.7, 0.95))
        )
    return _with_part(state, i, volume=tuple(volume), bare=tuple(bare)), (), ()


def _excess_solder(layout, state, size, rng, px):
    i, leads = _joint_choice(layout, rng, size, px)
    part = state.parts[i]
    volume = list(part.volume)
    lo, hi = (2.0, 2.6) if size == "small" else (2.8, 3.6)
    for k in leads:
        volume[k] = max(float(rng.uniform(lo, hi)), EXCESS_VOLUME + 0.1)
    return _with_part(state, i, volume=tuple(volume)), (), ()


def _ball(cv: Canvas, x: float, y: float, r: float) -> None:
    cv.ellipse(x + 0.35 * r, y + 0.4 * r, r * 1.05, r * 0.9, 0.0, rgb(0.02, 0.05, 0.02), alpha=0.35)
    cv.ellipse(x, y, r, r, 0.0, SOLDER, shade=dome_shade(1.0, -0.25, -0.3))


def _solder_ball(layout, state, size, rng, px):
    i = _pick(layout, rng, _pkg(*_CHIPS, "SOT-23", "SOD-123", "SOIC-8", "TQFP-32"))
    comp = layout.components[i]
    if size == "small":
        n, rmin, rmax = 1, 0.12, 0.18
    elif rng.random() < 0.6:
        n, rmin, rmax = int(rng.integers(3, 7)), 0.12, 0.28
    else:
        n, rmin, rmax = 1, 0.35, 0.5
    balls = []
    for _ in range(n):
        pad = comp.pads[int(rng.integers(0, len(comp.pads)))]
        r = max(float(rng.uniform(rmin, rmax)), 1.1 / px)
        gap = float(rng.uniform(0.15, 0.7)) + r
        t = float(rng.uniform(-0.8, 0.8)) * (pad.across / 2 + 0.3)
        s = pad.along / 2 + gap
        x = pad.cx + s * pad.nx - t * pad.ny
        y = pad.cy + s * pad.ny + t * pad.nx
        if _on_board(layout, x, y):
            balls.append((x, y, r))
    if not balls:
        x, y = _random_point(layout, rng)
        balls.append((x, y, max(rmin, 1.1 / px)))

    def op(cv: Canvas) -> None:
        for x, y, r in balls:
            _ball(cv, x, y, r)

    return state, (), (op,)


_PARTICLE_COLORS = (
    (0.16, 0.11, 0.07),  # dark debris
    (0.05, 0.05, 0.05),  # black dust / soot
    (0.78, 0.77, 0.73),  # lint
    (0.48, 0.30, 0.12),  # charred flux
)


def _polyline(
    rng: np.random.Generator, x: float, y: float, length: float, n: int, bend: float
) -> np.ndarray:
    heading = float(rng.uniform(0, 2 * math.pi))
    step = length / n
    pts = [(x, y)]
    for _ in range(n):
        heading += float(rng.normal(0.0, bend))
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        pts.append((x, y))
    p = np.asarray(pts)
    return np.concatenate([p[:-1], p[1:]], axis=1)


def _foreign_particle(layout, state, size, rng, px):
    color = rgb(*_PARTICLE_COLORS[int(rng.integers(0, len(_PARTICLE_COLORS)))])
    x, y = _random_point(layout, rng)
    if size == "small":
        blobs = [
            (
                x + float(rng.normal(0, 0.08)),
                y + float(rng.normal(0, 0.08)),
                max(float(rng.uniform(0.09, 0.22)), 1.0 / px),
                max(float(rng.uniform(0.07, 0.16)), 0.8 / px),
                float(rng.uniform(0, 180)),
            )
            for _ in range(int(rng.integers(2, 4)))
        ]

        def op(cv: Canvas) -> None:
            for bx, by, rx, ry, ang in blobs:
                cv.ellipse(bx, by, rx, ry, ang, color)

        return state, (), (op,)
    if rng.random() < 0.5:  # a fibre or hair
        segs = _polyline(rng, x, y, float(rng.uniform(3.0, 8.0)), 10, 0.35)
        width = max(float(rng.uniform(0.06, 0.11)), 1.0 / px)

        def op(cv: Canvas) -> None:
            cv.strokes(segs, width, color)

        return state, (), (op,)
    blobs = [
        (
            x + float(rng.normal(0, 0.4)),
            y + float(rng.normal(0, 0.4)),
            float(rng.uniform(0.3, 0.75)),
            float(rng.uniform(0.2, 0.5)),
            float(rng.uniform(0, 180)),
        )
        for _ in range(int(rng.integers(3, 7)))
    ]

    def op(cv: Canvas) -> None:
        for bx, by, rx, ry, ang in blobs:
            cv.ellipse(bx, by, rx, ry, ang, color, alpha=0.92)

    return state, (), (op,)


def _scratch(layout, state, size, rng, px):
    x, y = _random_point(layout, rng)
    if size == "small":
        segs = _polyline(rng, x, y, float(rng.uniform(1.5, 3.0)), 4, 0.08)
        width = max(float(rng.uniform(0.05, 0.08)), 0.9 / px)
        copper = None
    else:
        segs = _polyline(rng, x, y, float(rng.uniform(6.0, 14.0)), 8, 0.06)
        width = max(float(rng.uniform(0.08, 0.14)), 1.2 / px)
        a = int(rng.integers(0, 4))
        copper = segs[a : a + int(rng.integers(2, 5))]
    light = rgb(0.52, 0.74, 0.52)

    def op(cv: Canvas) -> None:
        cv.strokes(segs, width, light, alpha=0.9)
        if copper is not None:
            cv.strokes(copper, width * 0.55, rgb(0.86, 0.62, 0.38), alpha=0.9)

    return state, (op,), ()


_MAKERS = {
    "missing": _missing,
    "shifted": _shifted,
    "rotated": _rotated,
    "tombstone": _tombstone,
    "solder_bridge": _solder_bridge,
    "insufficient_solder": _insufficient_solder,
    "excess_solder": _excess_solder,
    "solder_ball": _solder_ball,
    "foreign_particle": _foreign_particle,
    "scratch": _scratch,
}
assert tuple(_MAKERS) == DEFECT_TYPES


def make_defect(
    layout: BoardLayout,
    state: UnitState,
    kind: str,
    size: str,
    rng: np.random.Generator,
    px_per_mm: float,
) -> Defect:
    """Defect ``kind`` of ``size`` ("small" / "large") on the unit in ``state``.

    ``px_per_mm`` sets lower bounds (about one pixel) on thin or tiny defects so that they stay
    visible at low resolution."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown defect {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    if size not in DEFECT_SIZES:
        raise ValueError(f"unknown defect size {size!r}; expected one of {', '.join(DEFECT_SIZES)}")
    new_state, pre, post = _MAKERS[kind](layout, state, size, rng, px_per_mm)
    return Defect(kind=kind, size=size, state=new_state, pre=tuple(pre), post=tuple(post))
