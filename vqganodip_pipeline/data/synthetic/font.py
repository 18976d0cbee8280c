"""A small stroke (vector) font for silkscreen legends, laser and ink markings.

Glyphs are polylines on a 4 x 6 unit cell (y down), like the plotter fonts PCB tools use for
silkscreen, so text is resolution independent and drawn with the same antialiased strokes as
everything else.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

CELL_W = 4.0
CELL_H = 6.0
ADVANCE = 6.0  # glyph advance in cell units (4 wide + 2 spacing)

_O = ((1, 0), (3, 0), (4, 1), (4, 5), (3, 6), (1, 6), (0, 5), (0, 1), (1, 0))
_P = ((0, 6), (0, 0), (3, 0), (4, 1), (4, 2), (3, 3), (0, 3))

GLYPHS: dict[str, tuple[tuple[tuple[float, float], ...], ...]] = {
    "0": (_O, ((3.6, 0.6), (0.4, 5.4))),
    "1": (((1, 1), (2, 0), (2, 6)), ((1, 6), (3, 6))),
    "2": (((0, 1), (1, 0), (3, 0), (4, 1), (4, 2), (0, 6), (4, 6)),),
    "3": (((0, 0), (4, 0), (2, 2.5), (3, 2.5), (4, 3.5), (4, 5), (3, 6), (1, 6), (0, 5)),),
    "4": (((3, 6), (3, 0), (0, 4), (4, 4)),),
    "5": (((4, 0), (0, 0), (0, 2.5), (3, 2.5), (4, 3.5), (4, 5), (3, 6), (0, 6)),),
    "6": (((3, 0), (1, 0), (0, 1), (0, 5), (1, 6), (3, 6), (4, 5), (4, 3.5), (3, 2.5), (0, 2.5)),),
    "7": (((0, 0), (4, 0), (1.5, 6)),),
    "8": (
        ((1, 3), (0, 2), (0, 1), (1, 0), (3, 0), (4, 1), (4, 2), (3, 3), (1, 3)),
        ((1, 3), (0, 4), (0, 5), (1, 6), (3, 6), (4, 5), (4, 4), (3, 3)),
    ),
    "9": (((4, 3.5), (1, 3.5), (0, 2.5), (0, 1), (1, 0), (3, 0), (4, 1), (4, 5), (3, 6), (1, 6)),),
    "A": (((0, 6), (0, 2), (2, 0), (4, 2), (4, 6)), ((0, 3.5), (4, 3.5))),
    "B": (
        ((0, 3), (3, 3), (4, 2), (4, 1), (3, 0), (0, 0), (0, 6), (3, 6), (4, 5), (4, 4), (3, 3)),
    ),
    "C": (((4, 1), (3, 0), (1, 0), (0, 1), (0, 5), (1, 6), (3, 6), (4, 5)),),
    "D": (((0, 0), (3, 0), (4, 1), (4, 5), (3, 6), (0, 6), (0, 0)),),
    "E": (((4, 0), (0, 0), (0, 6), (4, 6)), ((0, 3), (3, 3))),
    "F": (((4, 0), (0, 0), (0, 6)), ((0, 3), (3, 3))),
    "G": (((4, 1), (3, 0), (1, 0), (0, 1), (0, 5), (1, 6), (3, 6), (4, 5), (4, 3), (2, 3)),),
    "H": (((0, 0), (0, 6)), ((4, 0), (4, 6)), ((0, 3), (4, 3))),
    "I": (((1, 0), (3, 0)), ((2, 0), (2, 6)), ((1, 6), (3, 6))),
    "J": (((4, 0), (4, 5), (3, 6), (1, 6), (0, 5)),),
    "K": (((0, 0), (0, 6)), ((4, 0), (0, 3.5)), ((1.2, 2.8), (4, 6))),
    "L": (((0, 0), (0, 6), (4, 6)),),
    "M": (((0, 6), (0, 0), (2, 3), (4, 0), (4, 6)),),
    "N": (((0, 6), (0, 0), (4, 6), (4, 0)),),
    "O": (_O,),
    "P": (_P,),
    "Q": (_O, ((2.5, 4.5), (4, 6))),
    "R": (_P, ((2, 3), (4, 6))),
    "S": (
        (
            (4, 1),
            (3, 0),
            (1, 0),
            (0, 1),
            (0, 2),
            (1, 3),
            (3, 3),
            (4, 4),
            (4, 5),
            (3, 6),
            (1, 6),
            (0, 5),
        ),
    ),
    "T": (((0, 0), (4, 0)), ((2, 0), (2, 6))),
    "U": (((0, 0), (0, 5), (1, 6), (3, 6), (4, 5), (4, 0)),),
    "V": (((0, 0), (2, 6), (4, 0)),),
    "W": (((0, 0), (1, 6), (2, 3), (3, 6), (4, 0)),),
    "X": (((0, 0), (4, 6)), ((4, 0), (0, 6))),
    "Y": (((0, 0), (2, 3), (4, 0)), ((2, 3), (2, 6))),
    "Z": (((0, 0), (4, 0), (0, 6), (4, 6)),),
    "-": (((1, 3), (3, 3)),),
    "+": (((2, 1.5), (2, 4.5)), ((0.5, 3), (3.5, 3))),
    ".": (((2, 5.5), (2, 6)),),
    "/": (((4, 0), (0, 6)),),
    ":": (((2, 1.5), (2, 2)), ((2, 4.5), (2, 5))),
    " ": (),
}


def _glyph_segments(ch: str) -> np.ndarray:
    polylines = GLYPHS.get(ch.upper())
    if polylines is None:
        raise ValueError(f"the stroke font has no glyph for {ch!r}")
    segs = [
        (x0, y0, x1, y1) for line in polylines for (x0, y0), (x1, y1) in itertools.pairwise(line)
    ]
    return np.asarray(segs, dtype=np.float64).reshape(-1, 4)


_CACHE = {ch: _glyph_segments(ch) for ch in GLYPHS}


def text_width(text: str, height: float) -> float:
    """Width in mm of ``text`` set ``height`` mm tall."""
    if not text:
        return 0.0
    unit = height / CELL_H
    return unit * (ADVANCE * (len(text) - 1) + CELL_W)


def text_segments(text: str, cx: float, cy: float, height: float, angle: float = 0.0) -> np.ndarray:
    """Stroke segments (S, 4) in mm of ``text`` centred on (cx, cy), ``height`` mm tall, rotated
    by ``angle`` degrees (0 reads left to right, 90 reads top to bottom)."""
    unit = height / CELL_H
    parts = []
    for i, ch in enumerate(text):
        glyph = _CACHE.get(ch.upper())
        if glyph is None:
            raise ValueError(f"the stroke font has no glyph for {ch!r} (in {text!r})")
        if glyph.size:
            parts.append(glyph + np.array([ADVANCE * i, 0.0, ADVANCE * i, 0.0]))
    if not parts:
        return np.zeros((0, 4))
    seg = np.concatenate(parts) * unit
    w = text_width(text, height)
    seg -= np.array([w / 2, height / 2, w / 2, height / 2])
    th = math.radians(angle)
    c, s = math.cos(th), math.sin(th)
    x = seg[:, 0::2]
    y = seg[:, 1::2]
    out = np.empty_like(seg)
    out[:, 0::2] = cx + x * c - y * s
    out[:, 1::2] = cy + x * s + y * c
    return out
