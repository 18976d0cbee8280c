"""The product: one board layout in board millimetres, shared by every unit.

A 32 x 32 mm field of view of a PCBA centred on its fiducials: a TQFP, two SOICs, SOT-23
transistors, SOD-123 diodes, an electrolytic can, LEDs and tens of 0402 ... 1206 passives, with
their land pads, traces and copper pour under the green solder mask, vias, silkscreen outlines
and reference designators, three fiducials and a white label area that receives the per-unit
2D serial code. ``make_layout(seed)`` places everything with an occupancy grid so that parts,
traces and text never collide.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .font import text_segments, text_width
from .packages import PACKAGES, Lead, Package

BOARD_MM = 32.0  # side of the square field of view (mm)
GRID_MM = 0.1  # occupancy / copper pour grid (mm)
CODE_MODULES = 16  # DataMatrix-like symbol size (modules per side)
CODE_MODULE_MM = 0.3
SERIAL_TEXT_H = 0.55
SERIAL_LENGTH = 8


@dataclass(frozen=True)
class Pad:
    """A land pad in board coordinates; ``nx, ny`` is its outward direction."""

    cx: float
    cy: float
    along: float
    across: float
    nx: float
    ny: float

    @property
    def angle(self) -> float:
        return math.degrees(math.atan2(self.ny, self.nx))


@dataclass(frozen=True)
class Component:
    """A placed part: package, pose (centre in mm, angle in degrees, multiple of 90) and look."""

    ref: str
    family: str  # R, C, L, LED, D, Q, U, CE
    package: Package
    x: float
    y: float
    angle: float
    body_color: tuple[float, float, float]
    marking: str
    lot: str
    pads: tuple[Pad, ...]

    def to_board(
        self, lx: float, ly: float, dx: float = 0.0, dy: float = 0.0, dangle: float = 0.0
    ) -> tuple[float, float]:
        """Board coordinates of a point given in the package frame, for a pose offset by
        (dx, dy) mm and ``dangle`` degrees."""
        th = math.radians(self.angle + dangle)
        c, s = math.cos(th), math.sin(th)
        return self.x + dx + lx * c - ly * s, self.y + dy + lx * s + ly * c


@dataclass(frozen=True, eq=False)
class BoardLayout:
    """Everything that is the same on every unit of the product (board millimetres)."""

    seed: int
    size_mm: float
    components: tuple[Component, ...]
    traces: np.ndarray  # (T, 5): x0, y0, x1, y1, width
    vias: np.ndarray  # (V, 4): x, y, outer radius, tented (1) or open (0)
    pour: np.ndarray  # (G, G) bool copper pour under the mask, GRID_MM cells
    silk: tuple[tuple[np.ndarray, float], ...]  # (segments (S, 4), stroke width)
    fiducials: tuple[tuple[float, float], ...]
    test_points: tuple[tuple[float, float], ...]
    label_box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the white serial label
    code_origin: tuple[float, float]
    serial_text_at: tuple[float, float]
    default_code: np.ndarray  # (CODE_MODULES, CODE_MODULES) bool, used without serial variation
    default_serial: str
    texture: np.ndarray  # (n, n) coarse solder-mask thickness variation, ~N(0, 1)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def px_per_mm(self, size: int) -> float:
        return size / self.size_mm

    def serial_box_px(self, size: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) pixel bounds (end exclusive) of the serial-code label."""
        s = self.px_per_mm(size)
        x0, y0, x1, y1 = self.label_box
        return (
            max(math.floor(y0 * s), 0),
            min(math.ceil(y1 * s), size),
            max(math.floor(x0 * s), 0),
            min(math.ceil(x1 * s), size),
        )

    def leads_of(self, index: int) -> tuple[Lead, ...]:
        return self.components[index].package.leads


# ---------------------------------------------------------------------------------------------
class _Occupancy:
    """Owner id per GRID_MM cell (-1 free) so that placed things never overlap."""

    def __init__(self, size_mm: float) -> None:
        self.n = round(size_mm / GRID_MM)
        self.owner = np.full((self.n, self.n), -1, dtype=np.int32)
        centres = (np.arange(self.n) + 0.5) * GRID_MM
        self.cx = centres[None, :]
        self.cy = centres[:, None]

    def _slices(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
        c0, c1 = math.floor(x0 / GRID_MM), math.ceil(x1 / GRID_MM)
        r0, r1 = math.floor(y0 / GRID_MM), math.ceil(y1 / GRID_MM)
        if c0 < 0 or r0 < 0 or c1 > self.n or r1 > self.n:
            return None
        return slice(r0, r1), slice(c0, c1)

    def rect_free(self, rect: tuple[float, float, float, float], allow: int = -2) -> bool:
        sl = self._slices(*rect)
        if sl is None:
            return False
        region = self.owner[sl]
        return bool(np.all((region == -1) | (region == allow)))

    def claim_rect(self, rect: tuple[float, float, float, float], owner: int) -> None:
        sl = self._slices(*rect)
        if sl is not None:
            self.owner[sl] = owner

    def _capsule_cells(self, x0: float, y0: float, x1: float, y1: float, r: float):
        bx0, bx1 = min(x0, x1) - r, max(x0, x1) + r
        by0, by1 = min(y0, y1) - r, max(y0, y1) + r
        sl = self._slices(bx0, by0, bx1, by1)
        if sl is None:
            return None, None
        px = self.cx[:, sl[1]]
        py = self.cy[sl[0]]
        dx, dy = x1 - x0, y1 - y0
        len2 = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / len2, 0, 1)
        inside = np.hypot(px - x0 - t * dx, py - y0 - t * dy) <= r
        return sl, inside

    def capsule_free(
        self, seg: tuple[float, float, float, float], r: float, allow: int | tuple[int, ...] = -2
    ) -> bool:
        sl, inside = self._capsule_cells(*seg, r)
        if sl is None:
            return False
        region = self.owner[sl][inside]
        return bool(np.all(np.isin(region, (-1, *np.atleast_1d(allow)))))

    def claim_capsule(self, seg: tuple[float, float, float, float], r: float, owner: int) -> None:
        sl, inside = self._capsule_cells(*seg, r)
        if sl is not None:
            self.owner[sl][inside] = owner


def _rect_around(
    x: float, y: float, hx: float, hy: float, angle: float, margin: float = 0.0
) -> tuple[float, float, float, float]:
    if round(angle) % 180 == 90:
        hx, hy = hy, hx
    return x - hx - margin, y - hy - margin, x + hx + margin, y + hy + margin


def _pads_in_board(package: Package, x: float, y: float, angle: float) -> tuple[Pad, ...]:
    th = math.radians(angle)
    c, s = math.cos(th), math.sin(th)
    pads = []
    for ld in package.leads:
        pads.append(
            Pad(
                cx=x + ld.pad_x * c - ld.pad_y * s,
                cy=y + ld.pad_x * s + ld.pad_y * c,
                along=ld.pad_along,
                across=ld.pad_across,
                nx=round(ld.nx * c - ld.ny * s, 9),
                ny=round(ld.nx * s + ld.ny * c, 9),
            )
        )
    return tuple(pads)


def _local_segments(
    component: Component, segs: list[tuple[float, float, float, float]]
) -> np.ndarray:
    out = []
    for x0, y0, x1, y1 in segs:
        a = component.to_board(x0, y0)
        b = component.to_board(x1, y1)
        out.append((a[0], a[1], b[0], b[1]))
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def _silk_outline(comp: Component) -> list[tuple[np.ndarray, float]]:
    """Silkscreen of one part (board frame): outline strokes and polarity marks."""
    pkg = comp.package
    hl, hw = pkg.length / 2, pkg.width / 2
    segs: list[tuple[float, float, float, float]] = []
    dots: list[tuple[float, float, float, float]] = []
    if pkg.kind == "chip" and pkg.name != "0402":
        inner = hl - pkg.term - 0.05
        y = max(hw + 0.22, pkg.leads[0].pad_across / 2 + 0.16)
        segs += [(-inner, -y, inner, -y), (-inner, y, inner, y)]
        if comp.family == "LED":
            xo = pkg.leads[0].pad_x - pkg.leads[0].pad_along / 2 - 0.25
            segs.append((xo, -y, xo, y))
    elif pkg.kind == "sod":
        y = hw + 0.2
        segs += [(-1.0, -y, 1.0, -y), (-1.0, y, 1.0, y)]
        segs += [(-2.45, -0.7, -2.45, 0.7)]
    elif pkg.name == "SOT-23":
        segs += [(-hl - 0.15, -0.35, -hl - 0.15, 0.35), (hl + 0.15, -0.35, hl + 0.15, 0.35)]
        segs += [
            (-0.55, -hw - 0.25, -hl - 0.15, -hw - 0.25),
            (0.55, -hw - 0.25, hl + 0.15, -hw - 0.25),
        ]
    elif pkg.name == "SOIC-8":
        x, y = hl + 0.15, hw + 0.1
        segs += [
            (-x, -y, -x, y),
            (x, -y, x, y),
            (-x, -y, -2.3, -y),
            (2.3, -y, x, -y),
            (-x, y, -2.3, y),
            (2.3, y, x, y),
        ]
        dots.append((-2.6, 3.55, -2.6, 3.55))
    elif pkg.name == "TQFP-32":
        e = 3.75
        k = 0.45
        for sx in (-1, 1):
            for sy in (-1, 1):
                segs += [
                    (sx * e, sy * e, sx * (e - k), sy * e),
                    (sx * e, sy * e, sx * e, sy * (e - k)),
                ]
        dots.append((-4.1, 4.2, -4.1, 4.2))
    elif pkg.kind == "ecap":
        e = hl + 0.2
        c = 1.1
        pts = [(-e, -e), (e - c, -e), (e, -e + c), (e, e - c), (e - c, e), (-e, e)]
        for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True):
            if ax == bx == -e:
                continue  # pads leave the short sides open
            segs.append((ax, ay, bx, by))
        segs += [(e + 0.5, -e + 0.2, e + 0.5, -e + 0.9), (e + 0.15, -e + 0.55, e + 0.85, -e + 0.55)]
    out: list[tuple[np.ndarray, float]] = []
    if segs:
        out.append((_local_segments(comp, segs), 0.13))
    if dots:
        out.append((_local_segments(comp, dots), 0.3))
    return out


_RES_CODES = ("103", "472", "101", "221", "4R7", "330", "682", "100", "153", "000")
_RES_CODES4 = ("1002", "2201", "4701", "1000", "33R0", "1501")
_CAP_COLORS = ((0.70, 0.58, 0.40), (0.60, 0.48, 0.33), (0.56, 0.53, 0.47), (0.46, 0.38, 0.28))
_SOT_CODES = ("1AM", "A7", "J3Y", "K1N", "2X", "6A")
_SOIC_CODES = ("LM358", "74HC14", "NE555", "TL072", "MAX232", "LM393")
_QFP_CODES = ("STM32F030", "ATMEGA328", "VQ32F051")
_LOT_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def random_lot(rng: np.random.Generator) -> str:
    """An IC date / lot code such as ``2318 A7K``."""
    year = int(rng.integers(19, 25))
    week = int(rng.integers(1, 53))
    a, b = rng.choice(list(_LOT_LETTERS), size=2)
    return f"{year:02d}{week:02d} {a}{int(rng.integers(0, 10))}{b}"


def random_serial(rng: np.random.Generator) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, size=SERIAL_LENGTH))


def code_matrix(bits: np.ndarray) -> np.ndarray:
    """A DataMatrix-like symbol: solid finder "L" on the left and bottom, alternating timing
    pattern on the top and right, ``bits`` (n-2, n-2) as the data region."""
    n = bits.shape[0] + 2
    m = np.zeros((n, n), dtype=bool)
    m[1:-1, 1:-1] = bits
    m[:, 0] = True
    m[-1, :] = True
    m[0, :] = (np.arange(n) % 2) == 0
    m[:, -1] = (np.arange(n) % 2) == (n - 1) % 2
    return m


def _choose(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(0, len(options)))]


def make_layout(seed: int = 0) -> BoardLayout:
    """The board layout (the product) for ``seed``: same seed, same layout."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"make_layout: seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng([int(seed), 0x1A7])
    size = BOARD_MM
    occ = _Occupancy(size)
    next_owner = [0]

    def new_owner() -> int:
        next_owner[0] += 1
        return next_owner[0]

    # fixed furniture: fiducials at three corners, the serial label bottom right
    fiducials = ((2.0, 2.0), (size - 2.0, 2.0), (2.0, size - 2.0))
    for fx, fy in fiducials:
        occ.claim_rect((fx - 1.7, fy - 1.7, fx + 1.7, fy + 1.7), new_owner())
    label_box = (size - 7.2, size - 8.4, size - 0.8, size - 0.8)
    occ.claim_rect(
        (label_box[0] - 0.3, label_box[1] - 0.3, label_box[2] + 0.3, label_box[3] + 0.3),
        new_owner(),
    )
    code_w = CODE_MODULES * CODE_MODULE_MM
    lx0, ly0, lx1, _ = label_box
    code_origin = ((lx0 + lx1) / 2 - code_w / 2, ly0 + 0.7)
    serial_text_at = ((lx0 + lx1) / 2, code_origin[1] + code_w + 0.35 + SERIAL_TEXT_H)

    components: list[Component] = []
    owners: list[int] = []
    counters: dict[str, int] = {}

    def place(
        family: str,
        pkg_name: str,
        region: tuple[float, float, float, float],
        angles: tuple[float, ...],
        tries: int = 200,
        near: Component | None = None,
    ) -> bool:
        pkg = PACKAGES[pkg_name]
        hx, hy = pkg.courtyard
        for _ in range(tries):
            angle = float(_choose(rng, angles))
            if near is not None:
                nx0, ny0, nx1, ny1 = _rect_around(
                    near.x, near.y, *near.package.courtyard, near.angle
                )
                side = int(rng.integers(0, 4))
                gap = float(rng.uniform(0.4, 2.2)) + max(hx, hy)
                if side < 2:
                    x = float(rng.uniform(nx0, nx1))
                    y = ny0 - gap if side == 0 else ny1 + gap
                else:
                    y = float(rng.uniform(ny0, ny1))
                    x = nx0 - gap if side == 2 else nx1 + gap
            else:
                x = float(rng.uniform(region[0], region[2]))
                y = float(rng.uniform(region[1], region[3]))
            x, y = round(x * 20) / 20, round(y * 20) / 20
            rect = _rect_around(x, y, hx, hy, angle, margin=0.25)
            if not occ.rect_free(rect):
                continue
            counters[family] = counters.get(family, 0) + 1
            ref = f"{family}{counters[family]}"
            comp = _make_component(rng, ref, family, pkg, x, y, angle)
            owner = new_owner()
            occ.claim_rect(_rect_around(x, y, hx, hy, angle), owner)
            components.append(comp)
            owners.append(owner)
            return True
        return False

    inner = (9.5, 9.5, size - 9.5, size - 9.5)
    anywhere = (2.0, 2.0, size - 2.0, size - 2.0)
    right_angles = (0.0, 90.0, 180.0, 270.0)
    place("U", "TQFP-32", inner, right_angles)
    for _ in range(2):
        place("U", "SOIC-8", anywhere, right_angles)
    place("CE", "CAP-4x4.5", anywhere, (0.0, 90.0, 180.0, 270.0))
    for _ in range(3):
        place("Q", "SOT-23", anywhere, right_angles)
    for _ in range(2):
        place("D", "SOD-123", anywhere, (0.0, 180.0, 90.0, 270.0))
    for _ in range(2):
        place("LED", _choose(rng, ("0603", "0805")), anywhere, (0.0, 180.0))
    ics = [c for c in components if c.family in ("U", "Q")]
    sizes = ("0402", "0603", "0805", "1206")
    weights = np.array([0.32, 0.36, 0.2, 0.12])
    n_passives = 0
    for _ in range(140):
        if n_passives >= 40:
            break
        pkg_name = sizes[int(rng.choice(4, p=weights))]
        family = (
            _choose(rng, ("R", "R", "C", "C", "C", "L"))
            if pkg_name != "0402"
            else _choose(rng, ("R", "C"))
        )
        if family == "L" and pkg_name in ("0402", "0603"):
            family = "C"
        near = ics[int(rng.integers(0, len(ics)))] if ics and rng.random() < 0.55 else None
        if place(family, pkg_name, anywhere, (0.0, 90.0), tries=30, near=near):
            n_passives += 1

    silk: list[tuple[np.ndarray, float]] = []
    for comp in components:
        silk += _silk_outline(comp)

    # reference designators next to their part where there is room
    for comp, owner in zip(components, owners, strict=True):
        h = 0.8 if comp.family in ("U", "CE") else 0.62
        w = text_width(comp.ref, h)
        bx0, by0, bx1, by1 = _rect_around(comp.x, comp.y, *comp.package.courtyard, comp.angle)
        candidates = [
            ((bx0 + bx1) / 2, by0 - 0.15 - h / 2, 0.0),
            ((bx0 + bx1) / 2, by1 + 0.15 + h / 2, 0.0),
            (bx1 + 0.15 + w / 2, (by0 + by1) / 2, 0.0),
            (bx0 - 0.15 - w / 2, (by0 + by1) / 2, 0.0),
            (bx1 + 0.15 + h / 2, (by0 + by1) / 2, 90.0),
            (bx0 - 0.15 - h / 2, (by0 + by1) / 2, 90.0),
        ]
        start = int(rng.integers(0, 2))
        for tx, ty, ta in candidates[start:] + candidates[:start]:
            ex, ey = (w / 2, h / 2) if ta == 0 else (h / 2, w / 2)
            rect = (tx - ex - 0.1, ty - ey - 0.1, tx + ex + 0.1, ty + ey + 0.1)
            if occ.rect_free(rect):
                occ.claim_rect(rect, owner)
                silk.append((text_segments(comp.ref, tx, ty, h, ta), 0.12))
                break

    # board legend
    for text, h in (("VQ-PCBA 7421", 1.0), ("REV B", 0.9), ("94V-0", 0.7)):
        w = text_width(text, h)
        for _ in range(200):
            tx = float(rng.uniform(1.0 + w / 2, size - 1.0 - w / 2))
            ty = float(rng.uniform(1.0 + h / 2, size - 1.0 - h / 2))
            rect = (tx - w / 2 - 0.3, ty - h / 2 - 0.3, tx + w / 2 + 0.3, ty + h / 2 + 0.3)
            if occ.rect_free(rect):
                occ.claim_rect(rect, new_owner())
                silk.append((text_segments(text, tx, ty, h, 0.0), 0.15))
                break

    # test points: round exposed (gold) lands with a silkscreen label
    test_points: list[tuple[float, float]] = []
    for k in range(40):
        if len(test_points) >= 3:
            break
        tx = float(rng.uniform(2.0, size - 2.0))
        ty = float(rng.uniform(2.0, size - 2.0))
        label = f"TP{len(test_points) + 1}"
        w = text_width(label, 0.6)
        rect = (tx - 0.8, ty - 0.8, tx + 0.8 + w + 0.2, ty + 0.8)
        if occ.rect_free(rect):
            occ.claim_rect(rect, new_owner())
            test_points.append((tx, ty))
            silk.append((text_segments(label, tx + 0.75 + w / 2, ty, 0.6, 0.0), 0.12))
        del k

    traces, used = _connect(rng, occ, components, owners, new_owner)
    fanout, vias = _route(rng, occ, components, owners, new_owner, used)
    traces += fanout
    pour = _pour(rng, occ)
    vias = _stitch(rng, occ, pour, vias, new_owner)

    code_rng = np.random.default_rng([int(seed), 0xC0DE])
    default_code = code_rng.random((CODE_MODULES - 2, CODE_MODULES - 2)) < 0.5
    default_serial = random_serial(code_rng)
    texture = ndimage.gaussian_filter(rng.standard_normal((48, 48)), 1.2, mode="wrap")
    texture /= max(float(texture.std()), 1e-9)
    return BoardLayout(
        seed=int(seed),
        size_mm=size,
        components=tuple(components),
        traces=np.asarray(traces, dtype=np.float64).reshape(-1, 5),
        vias=np.asarray(vias, dtype=np.float64).reshape(-1, 4),
        pour=pour,
        silk=tuple(silk),
        fiducials=fiducials,
        test_points=tuple(test_points),
        label_box=label_box,
        code_origin=code_origin,
        serial_text_at=serial_text_at,
        default_code=default_code,
        default_serial=default_serial,
        texture=texture.astype(np.float32),
    )


def _make_component(
    rng: np.random.Generator, ref: str, family: str, pkg: Package, x: float, y: float, angle: float
) -> Component:
    marking, lot = "", ""
    color = (0.08, 0.08, 0.09)
    if family == "R":
        if pkg.name in ("0603",):
            marking = str(_choose(rng, _RES_CODES))
        elif pkg.name in ("0805", "1206"):
            marking = str(_choose(rng, _RES_CODES4))
        color = (0.07, 0.07, 0.08)
    elif family == "C":
        color = _CAP_COLORS[int(rng.integers(0, len(_CAP_COLORS)))]
    elif family == "L":
        color = (0.2, 0.2, 0.22)
        marking = str(_choose(rng, ("2R2", "100", "4R7")))
    elif family == "LED":
        color = (0.86, 0.86, 0.82)
    elif family == "Q":
        marking = str(_choose(rng, _SOT_CODES))
    elif family == "D":
        marking = str(_choose(rng, ("S4", "T4", "B2", "SL")))
    elif family == "U":
        marking = str(_choose(rng, _QFP_CODES if pkg.name == "TQFP-32" else _SOIC_CODES))
        lot = random_lot(rng)
    elif family == "CE":
        marking = str(_choose(rng, ("47", "10", "22", "100")))
        color = (0.1, 0.1, 0.1)
    pads = _pads_in_board(pkg, x, y, angle)
    return Component(ref, family, pkg, x, y, angle, color, marking, lot, pads)


_DIRS = (
    (1.0, 0.0),
    (math.sqrt(0.5), math.sqrt(0.5)),
    (0.0, 1.0),
    (-math.sqrt(0.5), math.sqrt(0.5)),
    (-1.0, 0.0),
    (-math.sqrt(0.5), -math.sqrt(0.5)),
    (0.0, -1.0),
    (math.sqrt(0.5), -math.sqrt(0.5)),
)


def _outer_end(pad: Pad, extra: float = 0.0) -> tuple[float, float]:
    k = pad.along / 2 + extra
    return pad.cx + pad.nx * k, pad.cy + pad.ny * k


def _chamfered(
    p: tuple[float, float], corner: tuple[float, float], q: tuple[float, float], cut: float
) -> list[tuple[float, float]]:
    """p -> corner -> q with the corner cut at 45 degrees."""
    d1 = math.hypot(corner[0] - p[0], corner[1] - p[1])
    d2 = math.hypot(q[0] - corner[0], q[1] - corner[1])
    k = min(cut, d1 / 2, d2 / 2)
    if k < 1e-6:
        return [p, q] if d1 < 1e-6 or d2 < 1e-6 else [p, corner, q]
    a = (corner[0] + (p[0] - corner[0]) * k / d1, corner[1] + (p[1] - corner[1]) * k / d1)
    b = (corner[0] + (q[0] - corner[0]) * k / d2, corner[1] + (q[1] - corner[1]) * k / d2)
    return [p, a, b, q]


def _connect(
    rng: np.random.Generator,
    occ: _Occupancy,
    components: list[Component],
    owners: list[int],
    new_owner,
) -> tuple[list, set]:
    """Pad-to-pad traces between neighbouring parts, L-shaped with 45 degree corners."""
    traces: list[tuple[float, float, float, float, float]] = []
    used: set[tuple[int, int]] = set()
    clear = 0.13
    all_pads = [(ci, k, pad) for ci, c in enumerate(components) for k, pad in enumerate(c.pads)]
    order = rng.permutation(len(all_pads))
    for idx in order:
        ci, k, pad = all_pads[int(idx)]
        if (ci, k) in used or rng.random() > 0.7:
            continue
        p0 = _outer_end(pad)
        p1 = _outer_end(pad, float(rng.uniform(0.3, 0.7)))
        others = [
            (math.hypot(p1[0] - q.cx, p1[1] - q.cy), cj, kj, q)
            for cj, kj, q in all_pads
            if cj != ci and (cj, kj) not in used
        ]
        others.sort(key=lambda t: t[0])
        width = 0.2 if rng.random() < 0.75 else 0.3
        r = width / 2 + clear
        for dist, cj, kj, q in others[:3]:
            if dist > 7.0:
                break
            q0 = _outer_end(q)
            q1 = _outer_end(q, float(rng.uniform(0.3, 0.7)))
            corners = [(p1[0], q1[1]), (q1[0], p1[1])]
            if rng.random() < 0.5:
                corners.reverse()
            for corner in corners:
                pts = [p0, *_chamfered(p1, corner, q1, 0.6), q0]
                segs = [
                    (*a, *b)
                    for a, b in itertools.pairwise(pts)
                    if math.hypot(b[0] - a[0], b[1] - a[1]) > 1e-6
                ]
                allow = (owners[ci], owners[cj])
                if all(occ.capsule_free(sg, r, allow) for sg in segs):
                    tid = new_owner()
                    for sg in segs:
                        occ.claim_capsule(sg, r, tid)
                        traces.append((*sg, width))
                    used.update({(ci, k), (cj, kj)})
                    break
            if (ci, k) in used:
                break
    return traces, used


def _route(
    rng: np.random.Generator,
    occ: _Occupancy,
    components: list[Component],
    owners: list[int],
    new_owner,
    used: set[tuple[int, int]],
) -> tuple[list, list]:
    """Short fan-out traces from the remaining pads, each ending in a via."""
    traces: list[tuple[float, float, float, float, float]] = []
    vias: list[tuple[float, float, float, float]] = []
    clear = 0.13
    via_r = 0.3
    for ci, (comp, owner) in enumerate(zip(components, owners, strict=True)):
        for k, pad in enumerate(comp.pads):
            if (ci, k) in used or rng.random() > 0.85:
                continue
            width = 0.2 if comp.family in ("U", "Q") or rng.random() < 0.7 else 0.35
            p0x = pad.cx + pad.nx * pad.along / 2
            p0y = pad.cy + pad.ny * pad.along / 2
            base = min(
                range(8), key=lambda k, p=pad: abs(_DIRS[k][0] - p.nx) + abs(_DIRS[k][1] - p.ny)
            )
            for _ in range(12):
                l1 = float(rng.uniform(0.3, 1.4))
                turn = int(rng.choice([0, 1, -1, 2, -2], p=[0.3, 0.25, 0.25, 0.1, 0.1]))
                d2 = _DIRS[(base + turn) % 8]
                l2 = float(rng.uniform(0.6, 4.0))
                p1x, p1y = p0x + pad.nx * l1, p0y + pad.ny * l1
                p2x, p2y = p1x + d2[0] * l2, p1y + d2[1] * l2
                seg1 = (p0x, p0y, p1x, p1y)
                seg2 = (p1x, p1y, p2x, p2y)
                r = width / 2 + clear
                if not (
                    occ.capsule_free(seg1, r, owner)
                    and occ.capsule_free(seg2, r, -2)
                    and occ.capsule_free((p2x, p2y, p2x, p2y), via_r + clear, -2)
                ):
                    continue
                tid = new_owner()
                occ.claim_capsule(seg1, r, tid)
                occ.claim_capsule(seg2, r, tid)
                occ.claim_capsule((p2x, p2y, p2x, p2y), via_r + clear, tid)
                traces.append((*seg1, width))
                traces.append((*seg2, width))
                vias.append((p2x, p2y, via_r, float(rng.random() < 0.7)))
                break
    return traces, vias


def _pour(rng: np.random.Generator, occ: _Occupancy) -> np.ndarray:
    """Copper pour in a few large zones, kept 0.3 mm away from everything else."""
    free = occ.owner == -1
    dist = ndimage.distance_transform_edt(free) * GRID_MM
    zones = np.zeros_like(free)
    n = occ.n
    for _ in range(4):
        w, h = (int(v) for v in rng.integers(n // 3, int(n * 0.8), size=2))
        c0, r0 = int(rng.integers(0, n - w)), int(rng.integers(0, n - h))
        zones[r0 : r0 + h, c0 : c0 + w] = True
    pour = (dist > 0.3) & zones
    pour = ndimage.binary_opening(pour, iterations=2)
    labels, count = ndimage.label(pour)
    if count:
        sizes = ndimage.sum(pour, labels, index=np.arange(1, count + 1))
        keep = np.zeros(count + 1, dtype=bool)
        keep[1:] = sizes * GRID_MM**2 >= 2.0
        pour = keep[labels]
    return pour


def _stitch(
    rng: np.random.Generator, occ: _Occupancy, pour: np.ndarray, vias: list, new_owner
) -> list:
    """Stitching vias through the pour."""
    rows, cols = np.nonzero(ndimage.binary_erosion(pour, iterations=5))
    if rows.size == 0:
        return vias
    for k in rng.permutation(rows.size)[:60]:
        x, y = (cols[k] + 0.5) * GRID_MM, (rows[k] + 0.5) * GRID_MM
        if occ.capsule_free((x, y, x, y), 0.55, -2):
            occ.claim_capsule((x, y, x, y), 0.55, new_owner())
            vias.append((x, y, 0.3, 1.0))
        if len(vias) > 200:
            break
    return vias
