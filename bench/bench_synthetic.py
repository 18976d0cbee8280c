"""Benchmark of the synthetic PCBA generator, plus a contact sheet of what it draws.

Measured on this machine, in one process:

* ``cold``: the first unit at a size (draws and caches the static board: mask, copper, pads,
  silkscreen) — paid once per layout and size;
* ``normal`` / ``defective``: warm ``render_unit`` time per image (a defective unit renders the
  unit twice: with and without the defect, for its exact mask);
* ``generate_images``: the end-to-end set builder (normal + mixed defects, balanced types);
* ``write_mvtec_dataset``: the same plus PNG encoding and file writes;
* reference, same process: ``encode_png`` of the same images (what writing costs anyway) and the
  time ratio 1024 px / 256 px against the pixel ratio (16).

Times are medians over the units (seconds per image); images/s = 1 / median. The target is
< 0.1 s per 256 px normal image. Also writes a contact sheet (normal board + every defect type,
small and large, at 256 px; crops at 2x with the mask outlined in red) next to the result file,
named ``<result stem>_examples.png`` (``bench/results/synthetic_examples.png`` by default).

Run: ``.venv/bin/python bench/bench_synthetic.py [--quick] [--out PATH]`` -> prints a table,
writes ``bench/results/synthetic.json`` (``synthetic_quick.json`` with ``--quick``: 3 units at
256 px, 1 at 1024 px, sets of 10 images, a smoke run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import (  # noqa: E402
    display_path,
    load_average,
    median_time,
    result_path,
    write_result,
)
from vqganodip_pipeline.data.images import encode_png  # noqa: E402
from vqganodip_pipeline.data.synthetic import (  # noqa: E402
    DEFECT_TYPES,
    generate_images,
    make_layout,
    render_unit,
    write_mvtec_dataset,
)


def bench_size(size: int, n: int) -> dict[str, float]:
    layout = make_layout(0)
    t0 = time.perf_counter()
    render_unit(layout, size=size, seed=10_000)
    cold = time.perf_counter() - t0
    normal, images = median_time(lambda i: render_unit(layout, size=size, seed=i)[0], n)
    defective, _ = median_time(
        lambda i: render_unit(
            layout,
            size=size,
            seed=i,
            defect=DEFECT_TYPES[i % len(DEFECT_TYPES)],
            defect_size=("small", "large")[i % 2],
        ),
        n,
    )
    encode, _ = median_time(lambda i: encode_png(images[i]), n)
    return {
        "size": size,
        "units_timed": n,
        "cold_first_unit_s": round(cold, 4),
        "normal_s_per_image": round(normal, 4),
        "normal_images_per_s": round(1.0 / normal, 1),
        "defective_s_per_image": round(defective, 4),
        "defective_images_per_s": round(1.0 / defective, 1),
        "reference_encode_png_s_per_image": round(encode, 4),
        "render_over_encode_ratio": round(normal / encode, 2),
    }


def contact_sheet(path: Path, size: int = 256, seed: int = 3, crop: int = 64) -> int:
    """Normal board (left) and a 2x crop per defect type and size, mask outlined in red."""
    layout = make_layout(0)
    normal, _ = render_unit(layout, size=size, seed=seed)
    tiles = []
    for defect in DEFECT_TYPES:
        for defect_size in ("small", "large"):
            img, mask = render_unit(
                layout, size=size, seed=seed, defect=defect, defect_size=defect_size
            )
            ys, xs = np.nonzero(mask)
            cy, cx = int(np.median(ys)), int(np.median(xs))
            y0 = min(max(cy - crop // 2, 0), size - crop)
            x0 = min(max(cx - crop // 2, 0), size - crop)
            tile = img[y0 : y0 + crop, x0 : x0 + crop].copy()
            m = mask[y0 : y0 + crop, x0 : x0 + crop]
            outline = ndimage.binary_dilation(m, iterations=2) & ~ndimage.binary_dilation(
                m, iterations=1
            )
            big = np.repeat(np.repeat(tile, 2, axis=0), 2, axis=1)
            ob = np.repeat(np.repeat(outline, 2, axis=0), 2, axis=1)
            big[ob] = (255, 40, 40)
            tiles.append((f"{defect} ({defect_size})", big))
    cols = 5
    t = 2 * crop
    label_h = 12
    rows = (len(tiles) + cols - 1) // cols
    board = np.repeat(np.repeat(normal, 2, axis=0), 2, axis=1)
    width = board.shape[1] + 8 + cols * (t + 4)
    height = max(board.shape[0] + label_h, rows * (t + label_h + 4))
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    sheet.paste(Image.fromarray(board), (0, label_h))
    draw.text((2, 0), f"normal unit, {size} px (shown 2x)", fill=(0, 0, 0))
    for k, (name, tile) in enumerate(tiles):
        r, c = divmod(k, cols)
        x = board.shape[1] + 8 + c * (t + 4)
        y = r * (t + label_h + 4)
        draw.text((x, y), name, fill=(0, 0, 0))
        sheet.paste(Image.fromarray(tile), (x, y + label_h))
    # a 128-colour palette keeps the file small; it is for looking at, not for training
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n256", type=int, default=None, help="units timed at 256 px (60)")
    parser.add_argument("--n1024", type=int, default=None, help="units timed at 1024 px (8)")
    parser.add_argument(
        "--set-size", type=int, default=None, help="images in the set builders (300)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 + 1 units, sets of 10 images"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/synthetic.json)"
    )
    args = parser.parse_args()
    n256 = args.n256 if args.n256 is not None else (3 if args.quick else 60)
    n1024 = args.n1024 if args.n1024 is not None else (1 if args.quick else 8)
    set_size = args.set_size if args.set_size is not None else (10 if args.quick else 300)
    stem = "synthetic_quick" if args.quick else "synthetic"
    out = args.out if args.out is not None else result_path(stem)
    sheet_path = out.with_name(f"{out.stem}_examples.png")

    results: dict[str, object] = {
        "quick": args.quick,
        "machine": {"load_average_at_start": load_average()},
    }
    r256 = bench_size(256, n256)
    r1024 = bench_size(1024, n1024)
    results["sizes"] = [r256, r1024]
    results["time_ratio_1024_over_256"] = round(
        r1024["normal_s_per_image"] / r256["normal_s_per_image"], 2
    )
    results["pixel_ratio_1024_over_256"] = 16

    n_abn = set_size // 5
    n_norm = set_size - n_abn
    t0 = time.perf_counter()
    generate_images(n_norm, n_abn, size=256, seed=0)
    gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_mvtec_dataset(Path(tmp) / "pcba", n_normal=n_norm, n_abnormal=n_abn, size=256, seed=0)
        write = time.perf_counter() - t0
    results["sets_256px"] = {
        "n_normal": n_norm,
        "n_abnormal": n_abn,
        "generate_images_s": round(gen, 2),
        "generate_images_per_s": round(set_size / gen, 1),
        "write_mvtec_dataset_s": round(write, 2),
        "write_mvtec_dataset_images_per_s": round(set_size / write, 1),
    }
    results["target_256_normal_s_per_image"] = 0.1
    results["meets_target"] = bool(r256["normal_s_per_image"] < 0.1)

    sheet_path.parent.mkdir(parents=True, exist_ok=True)
    sheet_bytes = contact_sheet(sheet_path)
    results["contact_sheet"] = {"path": display_path(sheet_path), "bytes": sheet_bytes}
    write_result(stem, results, path=out, packages=("pillow",))

    print(
        f"{'size':>6} {'cold s':>8} {'normal s/img':>13} {'img/s':>7} {'defect s/img':>13} "
        f"{'img/s':>7} {'png s/img':>10}"
    )
    for r in (r256, r1024):
        print(
            f"{r['size']:>6} {r['cold_first_unit_s']:>8.3f} {r['normal_s_per_image']:>13.4f} "
            f"{r['normal_images_per_s']:>7.1f} {r['defective_s_per_image']:>13.4f} "
            f"{r['defective_images_per_s']:>7.1f} {r['reference_encode_png_s_per_image']:>10.4f}"
        )
    print(f"1024/256 time ratio {results['time_ratio_1024_over_256']} (pixels x16)")
    print(
        f"{set_size} images at 256 px: generate_images {gen:.1f} s, "
        f"write_mvtec_dataset {write:.1f} s"
    )
    print(f"contact sheet: {sheet_bytes / 1024:.0f} kB -> {display_path(sheet_path)}")
    print(f"wrote {display_path(out)}")


if __name__ == "__main__":
    main()
