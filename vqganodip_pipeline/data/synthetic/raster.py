"""Antialiased drawing of shapes given in board millimetres onto a float RGB image.

Every primitive is evaluated only on the pixel window around its bounding box, and its
coverage of each pixel (0..1) is computed from the shape's geometry, so the same scene renders
consistently at any resolution. Colours are linear floats (1.0 = full scale, highlights may
exceed it and saturate when the image is quantised). ``shade`` callbacks receive the pixel's
position in the primitive's normalised local frame (``a`` along its first axis, ``b`` along the
second, both -1..1 across the shape) plus the size of one pixel in those units (``da``,
``db``), and return an (h, w, 3) colour array; they use the pixel size to band-limit their
highlights (a feature narrower than a pixel is averaged over it, as a camera would), so that
shading does not alias when a part moves by a fraction of a pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Shade = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]
Color = np.ndarray | tuple[float, float, float]


class Canvas:
    """A float32 (H, W, 3) image with a board-to-pixel mapping of ``px_per_mm`` pixels per mm.

    Board coordinates are millimetres with the origin at the image's top-left corner, x to the
    right and y down; pixel (row, col) covers [col, col + 1) x [row, row + 1) in pixel units.
    """

    def __init__(self, image: np.ndarray, px_per_mm: float) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.float32:
            raise ValueError(
                f"Canvas needs a float32 (H, W, 3) image, got {image.dtype} {image.shape}"
            )
        self.image = image
        self.scale = float(px_per_mm)
        self.height, self.width = int(image.shape[0]), int(image.shape[1])
        self._ys = ((np.arange(self.height, dtype=np.float32) + 0.5) / self.scale)[:, None]
        self._xs = ((np.arange(self.width, dtype=np.float32) + 0.5) / self.scale)[None, :]
        self._half = 0.5 / self.scale  # half a pixel, in mm

    # -- helpers -------------------------------------------------------------------------------
    def _window(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[int, int, int, int] | None:
        s = self.scale
        c0 = max(math.floor(x0 * s) - 1, 0)
        c1 = min(math.ceil(x1 * s) + 1, self.width)
        r0 = max(math.floor(y0 * s) - 1, 0)
        r1 = min(math.ceil(y1 * s) + 1, self.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def _blend(
        self, win: tuple[int, int, int, int], cov: np.ndarray, color: Color | np.ndarray
    ) -> None:
        r0, r1, c0, c1 = win
        region = self.image[r0:r1, c0:c1]
        col = np.asarray(color, dtype=np.float32)
        region += (col - region) * cov[..., None]

    def _paint(
        self,
        win: tuple[int, int, int, int],
        cov: np.ndarray,
        color: Color,
        shade: Shade | None,
        a: np.ndarray | None,
        b: np.ndarray | None,
        alpha: float,
        extent: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if alpha != 1.0:
            cov = cov * np.float32(alpha)
        if shade is not None and a is not None and b is not None:
            da, db = 1.0 / (self.scale * extent[0]), 1.0 / (self.scale * extent[1])
            self._blend(win, cov, shade(a, b, da, db))
        else:
            self._blend(win, cov, color)

    def _local(
        self, win: tuple[int, int, int, int], cx: float, cy: float, angle_deg: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Local coordinates (u, v) in mm of the window's pixel centres, broadcastable to the
        window's shape (separable when the angle is a multiple of 90 degrees)."""
        r0, r1, c0, c1 = win
        x = self._xs[:, c0:c1] - np.float32(cx)
        y = self._ys[r0:r1] - np.float32(cy)
        quarter = angle_deg / 90.0
        if quarter == round(quarter):
            # right angles: keep the separable (1, w) / (h, 1) form, far cheaper downstream
            k = round(quarter) % 4
            return ((x, y), (y, -x), (-x, -y), (-y, x))[k]
        th = math.radians(angle_deg)
        c, s = np.float32(math.cos(th)), np.float32(math.sin(th))
        return x * c + y * s, y * c - x * s

    # -- primitives ------------------------------------------------------------------------------
    def box(
        self,
        cx: float,
        cy: float,
        w: float,
        h: float,
        angle: float = 0.0,
        color: Color = (1.0, 1.0, 1.0),
        *,
        radius: float = 0.0,
        shade: Shade | None = None,
        alpha: float = 1.0,
    ) -> None:
        """A w x h mm rectangle centred on (cx, cy), rotated by ``angle`` degrees.

        Coverage is the exact overlap of the pixel footprint with the rectangle along each local
        axis, so rectangles thinner than a pixel keep their true amount of ink; ``radius``
        rounds the corners (mm).
        """
        if w <= 0 or h <= 0:
            return
        hx, hy = 0.5 * w, 0.5 * h
        th = math.radians(angle)
        c, s = abs(math.cos(th)), abs(math.sin(th))
        ex, ey = c * hx + s * hy, s * hx + c * hy
        win = self._window(cx - ex, cy - ey, cx + ex, cy + ey)
        if win is None:
            return
        u, v = self._local(win, cx, cy, angle)
        hp = self._half
        inv = np.float32(1.0 / (2.0 * hp))
        cu = np.maximum(np.minimum(u + hp, hx) - np.maximum(u - hp, -hx), 0.0) * inv
        cv = np.maximum(np.minimum(v + hp, hy) - np.maximum(v - hp, -hy), 0.0) * inv
        cov = np.minimum(cu * cv, 1.0)
        r = min(radius, hx, hy)
        if r > 0:
            qx = np.abs(u) - np.float32(hx - r)
            qy = np.abs(v) - np.float32(hy - r)
            corner = (qx > 0) & (qy > 0)
            if corner.any():
                d = np.hypot(qx, qy) - np.float32(r)
                rounded = _ramp(d, self.scale)
                cov = np.where(corner, np.minimum(cov, rounded), cov)
        a = u * np.float32(1.0 / hx) if shade is not None else None
        b = v * np.float32(1.0 / hy) if shade is not None else None
        self._paint(win, cov, color, shade, a, b, alpha, (hx, hy))

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        angle: float = 0.0,
        color: Color = (1.0, 1.0, 1.0),
        *,
        shade: Shade | None = None,
        alpha: float = 1.0,
        cut: tuple[float, float, float] | None = None,
    ) -> None:
        """An ellipse with semi-axes rx, ry (mm); ``cut`` = (p, q, c) keeps only p*a + q*b <= c
        in the normalised local frame (a = u / rx, b = v / ry), e.g. for a printed stripe."""
        if rx <= 0 or ry <= 0:
            return
        th = math.radians(angle)
        c, s = abs(math.cos(th)), abs(math.sin(th))
        ex = math.hypot(rx * c, ry * s)
        ey = math.hypot(rx * s, ry * c)
        win = self._window(cx - ex, cy - ey, cx + ex, cy + ey)
        if win is None:
            return
        u, v = self._local(win, cx, cy, angle)
        a = u * np.float32(1.0 / rx)
        b = v * np.float32(1.0 / ry)
        k0 = np.hypot(a, b)
        k1 = np.hypot(a * np.float32(1.0 / rx), b * np.float32(1.0 / ry))
        d = k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))  # distance estimate, mm
        if cut is not None:
            p, q, off = cut
            norm = math.hypot(p / rx, q / ry) or 1.0
            # distance to the cut line measured in mm: (p*a + q*b - off) / |grad|
            d = np.maximum(d, (p * a + q * b - off) / np.float32(norm))
        cov = _ramp(d, self.scale)
        if min(rx, ry) * self.scale < 1.0:
            cov = _conserve_ink(cov, math.pi * rx * ry * self.scale**2)
        self._paint(win, cov, color, shade, a, b, alpha, (rx, ry))

    def strokes(
        self,
        segments: np.ndarray,
        width: float,
        color: Color = (1.0, 1.0, 1.0),
        *,
        alpha: float = 1.0,
    ) -> None:
        """Line segments (S, 4) [x0, y0, x1, y1] in mm with round caps, ``width`` mm wide."""
        seg = np.asarray(segments, dtype=np.float32).reshape(-1, 4)
        if seg.shape[0] == 0 or width <= 0:
            return
        hw = 0.5 * width
        x0 = float(min(seg[:, 0].min(), seg[:, 2].min())) - hw
        x1 = float(max(seg[:, 0].max(), seg[:, 2].max())) + hw
        y0 = float(min(seg[:, 1].min(), seg[:, 3].min())) - hw
        y1 = float(max(seg[:, 1].max(), seg[:, 3].max())) + hw
        win = self._window(x0, y0, x1, y1)
        if win is None:
            return
        r0, r1, c0, c1 = win
        px = self._xs[:, c0:c1][None]  # (1, 1, w)
        py = self._ys[r0:r1][None]  # (1, h, 1)
        ax, ay = seg[:, 0, None, None], seg[:, 1, None, None]
        dx, dy = seg[:, 2, None, None] - ax, seg[:, 3, None, None] - ay
        len2 = np.maximum(dx * dx + dy * dy, np.float32(1e-12))
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / len2, 0.0, 1.0)
        dist = np.hypot(px - ax - t * dx, py - ay - t * dy).min(axis=0)
        # exact box-filter profile across a straight stroke (right for sub-pixel widths too)
        d = dist * np.float32(self.scale)
        hw_px = np.float32(hw * self.scale)
        cov = np.minimum(
            np.maximum(np.minimum(d + 0.5, hw_px) - np.maximum(d - 0.5, -hw_px), 0.0), 1.0
        )
        self._paint(win, cov, color, None, None, None, alpha)

    def polygon(
        self,
        points: np.ndarray,
        color: Color = (1.0, 1.0, 1.0),
        *,
        alpha: float = 1.0,
    ) -> None:
        """A convex polygon (N, 2) mm, vertices in either winding order."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        win = self._window(float(x0), float(y0), float(x1), float(y1))
        if win is None:
            return
        r0, r1, c0, c1 = win
        area2 = float(
            np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
        )
        sign = 1.0 if area2 > 0 else -1.0
        px = self._xs[:, c0:c1]
        py = self._ys[r0:r1]
        d = None
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            ex, ey = bx - ax, by - ay
            n = math.hypot(ex, ey)
            if n == 0:
                continue
            # outward normal: right-hand normal of each edge when the shoelace area is positive
            nx, ny = sign * ey / n, -sign * ex / n
            di = (px - np.float32(ax)) * np.float32(nx) + (py - np.float32(ay)) * np.float32(ny)
            d = di if d is None else np.maximum(d, di)
        if d is None:
            return
        cov = _ramp(d, self.scale)
        self._paint(win, cov, color, None, None, None, alpha)

    def module_grid(
        self,
        x0: float,
        y0: float,
        module: float,
        values: np.ndarray,
        color: Color,
    ) -> None:
        """An axis-aligned grid of square modules (``module`` mm) whose top-left corner is at
        (x0, y0); ``values`` (rows, cols) in [0, 1] is the opacity of ``color`` per module.

        Coverage is the exact area overlap (separable box filter), so edges stay crisp at any
        scale."""
        rows, cols = values.shape
        win = self._window(x0, y0, x0 + cols * module, y0 + rows * module)
        if win is None:
            return
        r0, r1, c0, c1 = win
        ay = _overlap(self._ys[r0:r1, 0], y0, module, rows, self._half)
        ax = _overlap(self._xs[0, c0:c1], x0, module, cols, self._half)
        cov = ay @ values.astype(np.float32) @ ax.T
        self._blend(win, np.clip(cov, 0.0, 1.0), color)

    def field(self, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Board coordinates (mm) of the pixel centres of a window (rows, cols), broadcastable."""
        r0, r1, c0, c1 = win
        return self._xs[:, c0:c1], self._ys[r0:r1]


def peak(x: np.ndarray, centre: float, width: float, dx: float) -> np.ndarray:
    """exp(-((x - centre) / width)^2), averaged over a sampling step ``dx`` (same units): the
    Gaussian widens (width^2 + dx^2 / 2) and keeps its area, so sub-pixel highlights do not
    flicker with sub-pixel motion."""
    w2 = width * width + 0.5 * dx * dx
    return np.float32(width / math.sqrt(w2)) * np.exp(
        (x - np.float32(centre)) ** 2 * np.float32(-1.0 / w2)
    )


def step(x: np.ndarray, edge: float, soft: float, dx: float) -> np.ndarray:
    """A smooth 0 -> 1 step at ``edge``, ``soft`` wide, widened by the sampling step ``dx``."""
    w = math.sqrt(soft * soft + 0.25 * dx * dx)
    return 0.5 + 0.5 * np.tanh((x - np.float32(edge)) * np.float32(1.0 / w))


def _ramp(d: np.ndarray, scale: float) -> np.ndarray:
    """Pixel coverage from a signed distance ``d`` (mm, negative inside): a 1 px wide ramp."""
    return np.minimum(np.maximum(np.float32(0.5) - d * np.float32(scale), 0.0), 1.0)


def _overlap(centres: np.ndarray, start: float, module: float, n: int, half: float) -> np.ndarray:
    edges = np.float32(start) + np.float32(module) * np.arange(n + 1, dtype=np.float32)
    lo = np.maximum(centres[:, None] - half, edges[None, :-1])
    hi = np.minimum(centres[:, None] + half, edges[None, 1:])
    return (np.clip(hi - lo, 0.0, None) / np.float32(2 * half)).astype(np.float32)


def _conserve_ink(cov: np.ndarray, area_px: float) -> np.ndarray:
    total = float(cov.sum())
    if total > area_px > 0:
        return cov * np.float32(area_px / total)
    return cov
