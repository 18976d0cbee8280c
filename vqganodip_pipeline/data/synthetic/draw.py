"""Painting the board and one unit's parts, joints and serial code; camera response.

Looks are those of a top-down AOI camera under diffuse white light: green solder mask (lighter
over copper), tinned pads, bright solder fillets with a specular streak whose place follows the
fillet's shape, black moulded ICs with laser marking, ceramic chip parts with metal end caps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage

from .font import text_segments, text_width
from .layout import CODE_MODULE_MM, GRID_MM, SERIAL_TEXT_H, BoardLayout, Component, Pad
from .packages import Lead
from .raster import Canvas, Shade, peak, step
from .unit import Lighting, PartState, UnitState

Op = Callable[[Canvas], None]


def rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], dtype=np.float32)


MASK = rgb(0.10, 0.34, 0.17)
MASK_CU = rgb(0.22, 0.47, 0.20)
MASK_VIA = rgb(0.26, 0.50, 0.22)
OPENING = rgb(0.36, 0.37, 0.20)
LAMINATE = rgb(0.50, 0.46, 0.27)
PAD_COAT = rgb(0.66, 0.66, 0.63)
GOLD = rgb(0.86, 0.70, 0.38)
SILK = rgb(0.90, 0.91, 0.86)
LABEL = rgb(0.92, 0.92, 0.89)
SOLDER = rgb(0.74, 0.74, 0.72)
TIN = rgb(0.80, 0.80, 0.77)
WHITE = rgb(1.0, 1.0, 0.97)
IC_BEVEL = rgb(0.17, 0.17, 0.18)
IC_TOP = rgb(0.085, 0.085, 0.095)
IC_MARK = rgb(0.52, 0.52, 0.50)
RES_MARK = rgb(0.80, 0.80, 0.76)
CERAMIC = rgb(0.58, 0.58, 0.55)
LASER = rgb(0.12, 0.115, 0.11)
HOLE = rgb(0.05, 0.05, 0.04)


# ---------------------------------------------------------------------------------------------
# shading functions (normalised local coordinates a, b in -1..1)
def _tint(val: np.ndarray, color: np.ndarray) -> np.ndarray:
    return val[..., None] * color


def fillet_shade(highlight: float, width: float, gain: float) -> Shade:
    """Solder fillet seen from above: dark where it climbs the lead (a = -1), flatter and
    brighter towards the toe (a = +1), a specular streak at ``highlight`` (0..1 along it)."""

    def shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
        p = (a + 1.0) * 0.5
        b2 = b * b
        val = (0.32 + 0.55 * np.sqrt(np.clip(p, 0.0, 1.0))) * (1.0 - 0.3 * b2)
        spec = gain * peak(p, highlight, width, 0.5 * da) * (1.0 - 0.7 * b2)
        return _tint(val, SOLDER) + _tint(spec, WHITE)

    return shade


def dome_shade(gain: float, dx: float = -0.3, dy: float = -0.35) -> Shade:
    """A reflowed solder blob (convex): bright rim falloff, specular spot off-centre."""

    def shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
        r2 = a * a + b * b
        val = 0.42 + 0.4 * np.clip(1.0 - r2, 0.0, 1.0)
        spec = gain * peak(a, dx, 0.25, da) * peak(b, dy, 0.25, db)
        return _tint(val, SOLDER) + _tint(spec, WHITE)

    return shade


def _lead_shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
    """Gull-wing lead from the body (a = -1) to the toe (a = +1): dark bend, bright foot."""
    p = (a + 1.0) * 0.5
    dp = 0.5 * da
    val = 0.82 - 0.5 * peak(p, 0.3, 0.13, dp) + 0.18 * peak(p, 0.72, 0.12, dp)
    return _tint(val * (1.0 - 0.25 * b**4), TIN)


def _flat_lead_shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
    p = (a + 1.0) * 0.5
    val = (0.7 + 0.2 * peak(p, 0.6, 0.25, 0.5 * da)) * (1.0 - 0.3 * b**4)
    return _tint(val, TIN)


def _termination_shade(sign: float) -> Shade:
    def shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
        p = (a * sign + 1.0) * 0.5  # 0 inner edge, 1 outer end
        dp = 0.5 * da
        val = 0.74 + 0.26 * peak(p, 0.42, 0.2, dp) - 0.35 * step(p, 0.9, 0.05, dp)
        return _tint(val * (1.0 - 0.2 * b**4), TIN)

    return shade


def _body_shade(color: np.ndarray, tilt: float = 0.0) -> Shade:
    def shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
        val = (1.0 - 0.1 * b * b - 0.06 * a * a) * (1.0 + tilt * a)
        return _tint(val, color)

    return shade


def _can_shade(a: np.ndarray, b: np.ndarray, da: float, db: float) -> np.ndarray:
    r = np.sqrt(a * a + b * b)
    val = 0.62 + 0.12 * r + 0.3 * peak(r, 0.86, 0.06, da) - 0.4 * step(r, 0.96, 0.02, da)
    val = val + 0.08 * peak(a, -0.3, 0.3, da) * peak(b, -0.35, 0.3, db)
    return _tint(val, rgb(0.80, 0.81, 0.82))


# ---------------------------------------------------------------------------------------------
# static board
def _grid_coverage(grid: np.ndarray, size: int, size_mm: float) -> np.ndarray:
    """Coverage (size, size) of a boolean GRID_MM grid, with smooth antialiased outlines."""
    sigma = 1.5
    blurred = ndimage.gaussian_filter(grid.astype(np.float32), sigma)
    cells_per_px = (size_mm / size) / GRID_MM
    coords = (np.arange(size, dtype=np.float32) + 0.5) * cells_per_px - 0.5
    rows = ndimage.map_coordinates(
        blurred, np.meshgrid(coords, coords, indexing="ij"), order=1, mode="nearest"
    )
    k = math.sqrt(2 * math.pi) * sigma / max(cells_per_px, 1e-6)
    return np.clip(0.5 + (rows - 0.5) * np.float32(k), 0.0, 1.0).astype(np.float32)


def _texture(layout: BoardLayout, size: int) -> np.ndarray:
    """Relative brightness of the mask: thickness mottling plus the glass weave under it."""
    n = layout.texture.shape[0]
    coords = (np.arange(size, dtype=np.float32) + 0.5) * (n / size) - 0.5
    mottle = ndimage.map_coordinates(
        layout.texture, np.meshgrid(coords, coords, indexing="ij"), order=1, mode="grid-wrap"
    )
    scale = size / layout.size_mm
    period = 0.48  # mm, 1080-style glass weave
    fade = min(max((period * scale - 2.5) / 5.0, 0.0), 1.0)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / np.float32(scale)
    wave = np.cos(2 * np.pi * pos / period).astype(np.float32)
    weave = np.outer(wave, wave) * np.float32(0.025 * fade)
    return (1.0 + 0.03 * mottle + weave).astype(np.float32)


def render_board(layout: BoardLayout, size: int) -> np.ndarray:
    """The bare assembled board at ``size`` px (float32 RGB): mask, copper, pads, silkscreen,
    fiducials, label. Cached on the layout per size."""
    key = ("board", size)
    cached = layout._cache.get(key)
    if cached is not None:
        return cached
    scale = layout.px_per_mm(size)
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = MASK
    cv = Canvas(img, scale)
    pour = _grid_coverage(layout.pour, size, layout.size_mm)
    img += (MASK_CU - img) * pour[..., None]
    for x0, y0, x1, y1, w in layout.traces:
        cv.strokes(np.array([[x0, y0, x1, y1]]), float(w), MASK_CU)
    for x, y, r, tented in layout.vias:
        if tented:
            cv.ellipse(x, y, r, r, color=MASK_VIA)
            cv.ellipse(x, y, 0.45 * r, 0.45 * r, color=MASK * 0.8)
    img *= _texture(layout, size)[..., None]
    for x, y, r, tented in layout.vias:
        if not tented:
            cv.ellipse(x, y, r + 0.05, r + 0.05, color=OPENING)
            cv.ellipse(x, y, r, r, color=PAD_COAT, shade=_body_shade(PAD_COAT / PAD_COAT.max()))
            cv.ellipse(x, y, 0.5 * r, 0.5 * r, color=HOLE)
    for comp in layout.components:
        for pad in comp.pads:
            cv.box(
                pad.cx, pad.cy, pad.along + 0.1, pad.across + 0.1, pad.angle, OPENING, radius=0.05
            )
            cv.box(pad.cx, pad.cy, pad.along, pad.across, pad.angle, PAD_COAT, radius=0.03)
    for x, y in layout.test_points:
        cv.ellipse(x, y, 0.62, 0.62, color=OPENING)
        cv.ellipse(x, y, 0.5, 0.5, color=GOLD, shade=_body_shade(GOLD))
    for x, y in layout.fiducials:
        cv.ellipse(x, y, 1.5, 1.5, color=LAMINATE)
        cv.ellipse(x, y, 0.5, 0.5, color=GOLD, shade=_body_shade(GOLD * 1.05))
    for segs, width in layout.silk:
        cv.strokes(segs, width, SILK)
    x0, y0, x1, y1 = layout.label_box
    cv.box((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0, LABEL, radius=0.25)
    layout._cache[key] = img
    return img


# ---------------------------------------------------------------------------------------------
# joints
EXCESS_VOLUME = 1.6  # above this a joint is drawn as a bulging blob over the lead


def _pad_frame(pad: Pad, px: float, py: float) -> tuple[float, float]:
    """(along, across) coordinates of board point (px, py) in the pad's frame."""
    dx, dy = px - pad.cx, py - pad.cy
    return dx * pad.nx + dy * pad.ny, -dx * pad.ny + dy * pad.nx


def _from_pad(pad: Pad, s: float, t: float) -> tuple[float, float]:
    return pad.cx + s * pad.nx - t * pad.ny, pad.cy + s * pad.ny + t * pad.nx


def draw_paste_dome(cv: Canvas, pad: Pad, volume: float, gain: float = 0.9) -> None:
    """Reflowed solder on a pad without a lead (missing or lifted part)."""
    k = float(np.clip(volume, 0.3, 2.5)) ** (1 / 3)
    cv.ellipse(
        pad.cx,
        pad.cy,
        0.42 * pad.along * k,
        0.42 * pad.across * k,
        pad.angle,
        SOLDER,
        shade=dome_shade(gain),
    )


def lead_toe(comp: Component, part: PartState, lead: Lead) -> tuple[float, float]:
    return comp.to_board(lead.x, lead.y, part.dx, part.dy, part.dangle)


def draw_fillet(cv: Canvas, comp: Component, part: PartState, k: int) -> None:
    """The toe fillet of lead ``k``: from the lead end to (most of) the pad's free length."""
    lead, pad = comp.package.leads[k], comp.pads[k]
    volume = part.volume[k]
    ex, ey = lead_toe(comp, part, lead)
    s_e, t_e = _pad_frame(pad, ex, ey)
    toe = pad.along / 2 - s_e
    s1 = min(s_e + max(toe, 0.0) * 0.85 * volume, pad.along / 2)
    s0 = s_e - 0.04
    half = lead.width / 2 * (0.95 + 0.1 * volume)
    lo = max(t_e - half, -pad.across / 2)
    hi = min(t_e + half, pad.across / 2)
    if toe <= -0.1 or hi - lo < 0.05:
        # the lead clearly misses the pad: the paste reflows into a blob of its own (a lead
        # that only reaches the pad's end, within normal jitter, just loses its toe fillet)
        draw_paste_dome(cv, pad, 0.6 * max(volume, 0.3))
        return
    if s1 - s_e < 0.02:
        return  # (almost) no solder on this joint
    cx, cy = _from_pad(pad, (s0 + s1) / 2, (lo + hi) / 2)
    hpos = float(np.clip(0.45 + 0.3 * (volume - 1.0) + 0.6 * part.highlight[k], 0.12, 0.85))
    cv.box(
        cx,
        cy,
        s1 - s0,
        hi - lo,
        pad.angle,
        SOLDER,
        radius=min(0.08, (hi - lo) / 3),
        shade=fillet_shade(hpos, 0.16 + 0.3 * abs(part.highlight[k]), 0.55),
    )


def draw_excess(cv: Canvas, comp: Component, part: PartState, k: int) -> None:
    """Too much solder: a convex blob over the lead end that overflows the pad."""
    lead, pad = comp.package.leads[k], comp.pads[k]
    volume = part.volume[k]
    ex, ey = lead_toe(comp, part, lead)
    s_e, t_e = _pad_frame(pad, ex, ey)
    grow = math.sqrt(volume / EXCESS_VOLUME) - 1.0  # ~0.1 .. 0.5
    # a bulging joint: climbs over the lead's end and spills past the pad's end and sides
    # (by at least a pixel, so that it shows at low resolution too)
    spill = max(0.15 + 0.5 * grow, 1.0 / cv.scale)
    s0 = s_e - 0.2 - 0.2 * grow
    s1 = pad.along / 2 + spill
    half = max(pad.across, lead.width) / 2 + 0.6 * spill
    cx, cy = _from_pad(pad, (s0 + s1) / 2, 0.5 * t_e)
    cv.ellipse(cx, cy, (s1 - s0) / 2, half, pad.angle, SOLDER, shade=dome_shade(0.9, -0.1, -0.3))


def draw_joints(cv: Canvas, comp: Component, part: PartState) -> None:
    for k, pad in enumerate(comp.pads):
        if part.bare and part.bare[k] > 0:
            frac = part.bare[k]
            s0 = pad.along / 2 - frac * pad.along
            cx, cy = _from_pad(pad, (s0 + pad.along / 2) / 2, 0.0)
            cv.box(
                cx,
                cy,
                frac * pad.along,
                pad.across,
                pad.angle,
                GOLD,
                radius=0.03,
                shade=_body_shade(GOLD),
            )
        lifted = part.tomb != 0 and comp.package.leads[k].nx != part.tomb
        if not part.present or lifted:
            draw_paste_dome(cv, pad, part.volume[k])
        elif part.volume[k] <= EXCESS_VOLUME:
            draw_fillet(cv, comp, part, k)


# ---------------------------------------------------------------------------------------------
# parts
def _text(
    cv: Canvas,
    comp: Component,
    part: PartState,
    text: str,
    lx: float,
    ly: float,
    h: float,
    color: np.ndarray,
    width_frac: float = 0.15,
    max_w: float | None = None,
) -> None:
    if not text:
        return
    if max_w is not None:
        w = text_width(text, h)
        if w > max_w:
            h *= max_w / w
    x, y = comp.to_board(lx, ly, part.dx, part.dy, part.dangle)
    segs = text_segments(text, x, y, h, comp.angle + part.dangle)
    cv.strokes(segs, max(h * width_frac, 0.04), color * part.marking_gain)


def _draw_chip(cv: Canvas, comp: Component, part: PartState) -> None:
    pkg = comp.package
    L, W, t = pkg.length, pkg.width, pkg.term
    angle = comp.angle + part.dangle
    body = np.asarray(comp.body_color, dtype=np.float32)
    if part.tomb:
        _draw_tombstone(cv, comp, part, body)
        return
    x, y = comp.to_board(0.0, 0.0, part.dx, part.dy, part.dangle)
    if comp.family == "R":
        cv.box(x, y, L, W, angle, CERAMIC, radius=0.03)
        cv.box(x, y, L - 2 * t + 0.1, W - 0.05, angle, body, shade=_body_shade(body))
    else:
        cv.box(x, y, L, W, angle, body, radius=0.04, shade=_body_shade(body))
    for sgn in (-1.0, 1.0):
        tx, ty = comp.to_board(sgn * (L - t) / 2, 0.0, part.dx, part.dy, part.dangle)
        cv.box(tx, ty, t, W, angle, TIN, radius=0.04, shade=_termination_shade(sgn))
    if comp.family == "LED":
        cv.ellipse(
            x, y, 0.3 * (L - 2 * t) + 0.1, 0.36 * W, angle, rgb(0.95, 0.86, 0.42), alpha=0.85
        )
        mx, my = comp.to_board(-(L / 2 - t - 0.12), 0.0, part.dx, part.dy, part.dangle)
        cv.box(mx, my, 0.12, 0.6 * W, angle, rgb(0.25, 0.6, 0.3))
    if comp.marking:
        color = RES_MARK if comp.family == "R" else rgb(0.7, 0.7, 0.68)
        _text(cv, comp, part, comp.marking, 0.0, 0.0, 0.5 * W, color, max_w=0.85 * (L - 2 * t))


def _draw_tombstone(cv: Canvas, comp: Component, part: PartState, body: np.ndarray) -> None:
    """The part stands on its ``part.tomb`` end: seen from above, the lifted end face (metal)
    and the foreshortened top face between the pads."""
    pkg = comp.package
    L, H, W, t = pkg.length, pkg.height, pkg.width, pkg.term
    th = math.radians(part.tomb_angle)
    c, s = math.cos(th), math.sin(th)
    sgn = float(part.tomb)
    angle = comp.angle + part.dangle

    def at(xp: float) -> tuple[float, float]:  # xp: distance inward from the pivot edge
        return comp.to_board(sgn * (L / 2 - xp), 0.0, part.dx, part.dy, part.dangle)

    # top face from xp = -H s (outer) to L c - H s, then the lifted end face to L c
    top0, top1 = -H * s, L * c - H * s
    cx, cy = at((top0 + top1) / 2)
    face = body * np.float32(0.55 + 0.35 * c)
    cv.box(cx, cy, max(top1 - top0, 0.02), W, angle, face, shade=_body_shade(face, 0.15))
    for a0, a1 in ((top0, top0 + t * c), (top1 - t * c, top1)):
        mx, my = at((a0 + a1) / 2)
        cv.box(mx, my, max(a1 - a0, 0.01), W, angle, TIN * 0.8)
    ex, ey = at((top1 + L * c) / 2)
    cv.box(ex, ey, max(H * s, 0.05), W, angle, TIN, radius=0.03, shade=_termination_shade(-sgn))


def _draw_sod(cv: Canvas, comp: Component, part: PartState) -> None:
    pkg = comp.package
    angle = comp.angle + part.dangle
    for lead in pkg.leads:
        lx = lead.x - lead.nx * (lead.length + 0.15) / 2
        x, y = comp.to_board(lx, 0.0, part.dx, part.dy, part.dangle)
        cv.box(
            x,
            y,
            lead.length + 0.15,
            lead.width,
            angle + (180.0 if lead.nx < 0 else 0.0),
            TIN,
            shade=_flat_lead_shade,
        )
    x, y = comp.to_board(0.0, 0.0, part.dx, part.dy, part.dangle)
    cv.box(x, y, pkg.length, pkg.width, angle, IC_BEVEL, radius=0.1)
    cv.box(
        x,
        y,
        pkg.length - 0.2,
        pkg.width - 0.2,
        angle,
        IC_TOP,
        radius=0.08,
        shade=_body_shade(IC_TOP),
    )
    bx, by = comp.to_board(-pkg.length / 2 + 0.45, 0.0, part.dx, part.dy, part.dangle)
    cv.box(bx, by, 0.32, pkg.width - 0.2, angle, rgb(0.55, 0.55, 0.55))
    _text(cv, comp, part, comp.marking, 0.25, 0.0, 0.6, IC_MARK, max_w=1.4)


def _draw_gullwing(cv: Canvas, comp: Component, part: PartState) -> None:
    pkg = comp.package
    angle = comp.angle + part.dangle
    for lead in pkg.leads:
        ln = lead.length + 0.12
        lx, ly = lead.x - lead.nx * ln / 2, lead.y - lead.ny * ln / 2
        x, y = comp.to_board(lx, ly, part.dx, part.dy, part.dangle)
        la = angle + math.degrees(math.atan2(lead.ny, lead.nx))
        cv.box(x, y, ln, lead.width, la, TIN, shade=_lead_shade)
    x, y = comp.to_board(0.0, 0.0, part.dx, part.dy, part.dangle)
    L, W = pkg.length, pkg.width
    bevel = 0.2 if pkg.name != "SOT-23" else 0.12
    cv.box(x, y, L, W, angle, IC_BEVEL, radius=0.1)
    cv.box(
        x,
        y,
        L - 2 * bevel,
        W - 2 * bevel,
        angle,
        IC_TOP,
        radius=0.08,
        shade=_body_shade(IC_TOP * 1.1),
    )
    if pkg.name == "SOT-23":
        _text(cv, comp, part, comp.marking, 0.0, 0.0, 0.55, IC_MARK, max_w=2.2)
        return
    r = 0.32 if pkg.name == "SOIC-8" else 0.45
    dx, dy = comp.to_board(
        -L / 2 + bevel + 0.35 + r, W / 2 - bevel - 0.35 - r, part.dx, part.dy, part.dangle
    )
    cv.ellipse(dx, dy, r, r, color=rgb(0.13, 0.13, 0.14))
    cv.ellipse(dx, dy, r * 0.75, r * 0.75, color=rgb(0.06, 0.06, 0.07))
    if pkg.name == "SOIC-8":
        _text(cv, comp, part, comp.marking, 0.0, -0.55, 0.6, IC_MARK, max_w=L - 0.9)
        _text(cv, comp, part, part.lot, 0.25, 0.45, 0.48, IC_MARK, max_w=L - 1.6)
    else:
        _text(cv, comp, part, comp.marking, 0.0, -1.3, 0.62, IC_MARK, max_w=L - 1.2)
        _text(cv, comp, part, part.lot, 0.0, -0.1, 0.55, IC_MARK, max_w=L - 1.6)
        _text(cv, comp, part, "ARM", 0.6, 1.3, 0.5, IC_MARK * 0.9)


def _draw_ecap(cv: Canvas, comp: Component, part: PartState) -> None:
    pkg = comp.package
    angle = comp.angle + part.dangle
    for lead in pkg.leads:
        ln = lead.length + 0.3
        x, y = comp.to_board(lead.x - lead.nx * ln / 2, 0.0, part.dx, part.dy, part.dangle)
        cv.box(
            x,
            y,
            ln,
            lead.width,
            angle + (180.0 if lead.nx < 0 else 0.0),
            TIN,
            shade=_flat_lead_shade,
        )
    e, ch = pkg.length / 2, 0.9
    pts = [(-e, -e), (e - ch, -e), (e, -e + ch), (e, e - ch), (e - ch, e), (-e, e)]
    cv.polygon(
        np.array([comp.to_board(px, py, part.dx, part.dy, part.dangle) for px, py in pts]),
        rgb(0.13, 0.13, 0.13),
    )
    x, y = comp.to_board(0.0, 0.0, part.dx, part.dy, part.dangle)
    r = 2.0
    cv.ellipse(x, y, r, r, angle, TIN, shade=_can_shade)
    cv.ellipse(x, y, r * 0.93, r * 0.93, angle, rgb(0.08, 0.1, 0.2), cut=(1.0, 0.0, -0.5))
    k = 0.55
    a = comp.to_board(-k, -k, part.dx, part.dy, part.dangle)
    b = comp.to_board(k, k, part.dx, part.dy, part.dangle)
    c2 = comp.to_board(-k, k, part.dx, part.dy, part.dangle)
    d = comp.to_board(k, -k, part.dx, part.dy, part.dangle)
    cv.strokes(np.array([[*a, *b], [*c2, *d]]), 0.07, rgb(0.42, 0.42, 0.43))
    _text(cv, comp, part, comp.marking, 0.35, -1.0, 0.6, rgb(0.12, 0.12, 0.14))
    _text(cv, comp, part, "16V", 0.35, 1.05, 0.5, rgb(0.12, 0.12, 0.14))


def draw_part(cv: Canvas, comp: Component, part: PartState) -> None:
    if not part.present:
        return
    kind = comp.package.kind
    if kind == "chip":
        _draw_chip(cv, comp, part)
    elif kind == "sod":
        _draw_sod(cv, comp, part)
    elif kind == "gullwing":
        _draw_gullwing(cv, comp, part)
    elif kind == "ecap":
        _draw_ecap(cv, comp, part)
    else:  # pragma: no cover - packages are a closed set
        raise ValueError(f"unknown package kind {kind!r}")


def draw_serial(cv: Canvas, layout: BoardLayout, state: UnitState) -> None:
    x0, y0 = layout.code_origin
    cv.module_grid(x0, y0, CODE_MODULE_MM, state.code * state.code_ink, LASER)
    tx, ty = layout.serial_text_at
    cv.strokes(text_segments(state.serial, tx, ty, SERIAL_TEXT_H), 0.09, LASER * 1.5)


def draw_unit(
    cv: Canvas,
    layout: BoardLayout,
    state: UnitState,
    pre: Iterable[Op] = (),
    post: Iterable[Op] = (),
) -> None:
    """Paint one unit's joints, parts and serial code over the board already on ``cv``."""
    for op in pre:
        op(cv)
    for comp, part in zip(layout.components, state.parts, strict=True):
        draw_joints(cv, comp, part)
    for comp, part in zip(layout.components, state.parts, strict=True):
        draw_part(cv, comp, part)
    for comp, part in zip(layout.components, state.parts, strict=True):
        if part.present:
            for k, v in enumerate(part.volume):
                if v > EXCESS_VOLUME:
                    draw_excess(cv, comp, part, k)
    draw_serial(cv, layout, state)
    for op in post:
        op(cv)


# ---------------------------------------------------------------------------------------------
# camera
def _vignette(layout: BoardLayout, size: int) -> np.ndarray:
    key = ("vignette", size)
    cached = layout._cache.get(key)
    if cached is None:
        pos = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        cached = (1.0 - 0.035 * (pos[:, None] ** 2 + pos[None, :] ** 2)).astype(np.float32)
        layout._cache[key] = cached
    return cached


_PSF = np.exp(-0.5 * (np.arange(-2, 3) / 0.5) ** 2)
_PSF = (_PSF / _PSF.sum()).astype(np.float32)


def optics(clean: np.ndarray) -> np.ndarray:
    """Lens blur: a Gaussian point spread function of 0.5 px standard deviation."""
    out = ndimage.convolve1d(clean, _PSF, axis=0, mode="nearest")
    return ndimage.convolve1d(out, _PSF, axis=1, mode="nearest")


def sensor_noise(seed: int, size: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, stream]).standard_normal((size, size, 3), dtype=np.float32)


def expose(
    clean: np.ndarray, layout: BoardLayout, lighting: Lighting, noise: np.ndarray | None
) -> np.ndarray:
    """Camera response: lighting gain, white balance, gradient, vignetting, sensor noise,
    8-bit quantisation. Pure per-pixel, so identical inputs give identical pixels."""
    size = clean.shape[0]
    clean = optics(clean)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gx, gy = lighting.gradient
    field = _vignette(layout, size) * np.float32(lighting.gain)
    field = field * (1.0 + np.float32(gy) * pos[:, None] + np.float32(gx) * pos[None, :])
    wb = np.asarray(lighting.white_balance, dtype=np.float32) * np.float32(255.0)
    img = clean * field[..., None] * wb
    if noise is not None and lighting.noise_sigma > 0:
        # read noise plus a photon-noise term that grows with the signal
        amp = np.float32(lighting.noise_sigma) * (0.7 + 0.5 * np.sqrt(np.clip(img, 0, 255) / 255.0))
        img += noise * amp
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
