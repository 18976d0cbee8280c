"""Small image figures for metadata and reports: contact sheets and PNG encoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vqganodip_pipeline.data.images import encode_png


def contact_sheet(
    images: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    *,
    columns: int = 6,
    thumb: int = 128,
) -> np.ndarray:
    """Tile (H, W, 3) ``uint8`` images into one grid of ``thumb``-pixel thumbnails with captions."""
    if len(images) == 0:
        raise ValueError("contact_sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    caption_h = 14 if captions else 0
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        tile = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
            (thumb, thumb), Image.Resampling.BILINEAR
        )
        x, y = (index % columns) * thumb, (index // columns) * (thumb + caption_h)
        sheet.paste(tile, (x, y))
        if captions:
            draw.text((x + 2, y + thumb + 1), str(captions[index])[: thumb // 6], fill=(0, 0, 0))
    return np.asarray(sheet)


def heatmap(values: np.ndarray, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map a 2-D float array to an (H, W, 3) ``uint8`` heat-map (black-red-yellow-white)."""
    array = np.asarray(values, dtype=np.float64)
    lo = float(np.min(array)) if lo is None else lo
    hi = float(np.max(array)) if hi is None else hi
    t = np.clip((array - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    color: tuple[int, int, int] = (255, 0, 0),
) -> np.ndarray:
    """Draw (top, left, height, width) rectangles on a copy of an (H, W, 3) ``uint8`` image."""
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8).copy())
    draw = ImageDraw.Draw(canvas)
    for top, left, height, width in boxes:
        draw.rectangle([left, top, left + width - 1, top + height - 1], outline=color)
    return np.asarray(canvas)


def to_png(image: np.ndarray) -> bytes:
    return encode_png(np.asarray(image, dtype=np.uint8))


def training_curves_png(records: Sequence[dict], keys: Sequence[str], title: str = "") -> bytes:
    """Line plot (PNG bytes) of ``keys`` over ``step`` from a list of training records."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, label=key)
    axis.set_xlabel("step")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def reconstruction_strip(
    images: np.ndarray, reconstructions: np.ndarray, thumb: int = 128
) -> np.ndarray:
    """Rows of original | reconstruction | |x - x_hat| heat-map for each image."""
    tiles: list[np.ndarray] = []
    captions: list[str] = []
    for x, x_hat in zip(images, reconstructions, strict=True):
        delta = np.abs(x.astype(np.float32) - x_hat.astype(np.float32)).mean(axis=-1)
        tiles += [x, x_hat, heatmap(delta, lo=0.0, hi=max(float(delta.max()), 1.0))]
        captions += ["original", "reconstruction", "|x - x_hat|"]
    return contact_sheet(tiles, captions, columns=3, thumb=thumb)


def heatmap_figure(
    values: np.ndarray,
    *,
    title: str,
    label: str,
    lo: float | None = None,
    hi: float | None = None,
    side_in: float = 5.0,
) -> bytes:
    """A 2-D map as a PNG figure a person can read: scaled up, with a colour bar naming its
    unit (``label``) and a title saying what it is."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(side_in + 1.2, side_in))
    axes = figure.add_subplot()
    shown = axes.imshow(np.asarray(values, dtype=np.float64), cmap="inferno", vmin=lo, vmax=hi)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")
    figure.colorbar(shown, ax=axes, label=label, fraction=0.046, pad=0.04)
    return figure_png(figure)


def figure_png(figure: Any) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes through the Agg canvas (no pyplot, no global
    state: safe in threads and in long-lived processes)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
