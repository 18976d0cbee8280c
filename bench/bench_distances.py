"""Benchmark: vectorised patch distances vs a per-patch scipy / scikit-image loop.

Per image, q = 250 patch pairs (original, reconstruction) of mixed sizes, colour, are compared
with every metric of ``PATCH_DISTANCES``:

* ``vectorised``: ``paired_patch_distances`` (groups by size, one numpy call per size and metric,
  stacking included);
* ``reference``: a Python loop over the patches calling scipy.spatial.distance / scipy.stats /
  skimage.metrics once per patch and metric (what one would write without this module).

Two size mixes: the demo / paper-at-256 one (alpha = 4: 4, 8, 12, 16 px) and the 1024-px preset
(alpha = 16: 16, 32, 48, 64 px). Times are medians over ``--repeats`` images, in milliseconds per
image; the ratio is reference / vectorised (higher = faster than the loop). The largest relative
difference between the two results is reported as a correctness check.

Run: ``.venv/bin/python bench/bench_distances.py [--quick] [--out PATH]`` -> prints a table,
writes ``bench/results/distances.json`` (``distances_quick.json`` with ``--quick``: q = 40 and one
image per size mix, a smoke run).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial import distance as sd
from scipy.stats import wasserstein_distance
from skimage.metrics import structural_similarity
from threadpoolctl import threadpool_info, threadpool_limits

from vqganodip_pipeline.metrics.distances import (
    PATCH_DISTANCES,
    default_ssim_win_size,
    paired_patch_distances,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python bench/bench_distances.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import display_path, load_average, write_result  # noqa: E402

SIZE_MIXES = {
    "alpha4_sizes_4_8_12_16": (4, 8, 12, 16),
    "preset1024_sizes_16_32_48_64": (16, 32, 48, 64),
}


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    w = default_ssim_win_size(x.shape[0], x.shape[1])
    return float(structural_similarity(x, y, data_range=1.0, win_size=w, channel_axis=-1))


def _flat(
    fn: Callable[[np.ndarray, np.ndarray], float],
) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda x, y: float(fn(x.ravel(), y.ravel()))


REFERENCE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "bray_curtis": _flat(sd.braycurtis),
    "canberra": _flat(sd.canberra),
    "euclidean": _flat(sd.euclidean),
    "cosine": _flat(sd.cosine),
    # patches are uint8 / 255 here, so scipy's hamming on the uint8 values is the reference
    "hamming": _flat(lambda u, v: sd.hamming(np.round(u * 255), np.round(v * 255))),
    "minkowski": _flat(lambda u, v: sd.minkowski(u, v, 3)),
    "jensen_shannon": _flat(sd.jensenshannon),
    "correlation": _flat(sd.correlation),
    "chebyshev": _flat(sd.chebyshev),
    "wasserstein": _flat(wasserstein_distance),
    "ssim": _ssim_reference,
    "mse": _flat(lambda u, v: np.mean((u - v) ** 2)),
    "mae": _flat(lambda u, v: np.mean(np.abs(u - v))),
}


def make_image_patches(
    sizes: tuple[int, ...], q: int, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """q colour patch pairs with sizes cycling through ``sizes``; values are uint8 / 255."""
    rng = np.random.default_rng(seed)
    originals, recons = [], []
    for k in range(q):
        s = sizes[k % len(sizes)]
        o = rng.integers(0, 256, size=(s, s, 3))
        r = np.clip(o + rng.normal(0.0, 12.0, o.shape).round(), 0, 255)
        originals.append(o / 255.0)
        recons.append(r / 255.0)
    return originals, recons


def reference_loop(
    originals: list[np.ndarray], recons: list[np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    return {
        name: np.array([REFERENCE[name](o, r) for o, r in zip(originals, recons, strict=True)])
        for name in names
    }


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _stack_groups(
    originals: list[np.ndarray], recons: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, o in enumerate(originals):
        groups.setdefault(o.shape, []).append(k)
    return [
        (np.stack([originals[k] for k in ix]), np.stack([recons[k] for k in ix]))
        for ix in groups.values()
    ]


def bench_mix(sizes: tuple[int, ...], q: int, repeats: int) -> dict[str, object]:
    names = list(PATCH_DISTANCES)
    vec_all, ref_all, stack_all = [], [], []
    per_metric_vec: dict[str, list[float]] = {n: [] for n in names}
    per_metric_ref: dict[str, list[float]] = {n: [] for n in names}
    max_rel_diff = dict.fromkeys(names, 0.0)
    for rep in range(repeats):
        originals, recons = make_image_patches(sizes, q, seed=rep)
        vec_all.append(_time(lambda o=originals, r=recons: paired_patch_distances(o, r)))
        ref_all.append(_time(lambda o=originals, r=recons: reference_loop(o, r, names)))
        stack_all.append(_time(lambda o=originals, r=recons: _stack_groups(o, r)))
        stacked = _stack_groups(originals, recons)
        for name in names:
            fn = PATCH_DISTANCES[name]
            per_metric_vec[name].append(_time(lambda fn=fn, g=stacked: [fn(a, b) for a, b in g]))
            per_metric_ref[name].append(
                _time(lambda o=originals, r=recons, n=name: reference_loop(o, r, [n]))
            )
        got = paired_patch_distances(originals, recons)
        ref = reference_loop(originals, recons, names)
        for name in names:
            denom = np.maximum(np.abs(ref[name]), 1e-300)
            rel = float(np.max(np.abs(got[name] - ref[name]) / denom))
            max_rel_diff[name] = max(max_rel_diff[name], rel)
    vec_ms = float(np.median(vec_all))
    ref_ms = float(np.median(ref_all))
    metrics = {}
    for name in names:
        v = float(np.median(per_metric_vec[name]))
        r = float(np.median(per_metric_ref[name]))
        metrics[name] = {
            "vectorised_ms": round(v, 3),
            "reference_ms": round(r, 3),
            "ratio": round(r / v, 1),
            "max_rel_diff": max_rel_diff[name],
        }
    return {
        "patch_sides_px": list(sizes),
        "channels": 3,
        "q": q,
        "repeats": repeats,
        "all_metrics": {
            "vectorised_ms_per_image": round(vec_ms, 3),
            "reference_ms_per_image": round(ref_ms, 3),
            "ratio": round(ref_ms / vec_ms, 1),
            "of_which_grouping_and_stacking_ms": round(float(np.median(stack_all)), 3),
        },
        "per_metric_note": "vectorised: the public function on patches already stacked by size "
        "(stacking excluded, validation included); reference: per-patch loop",
        "per_metric": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q", type=int, default=None, help="patches per image (default 250)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="images timed per size mix (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: q = 40, 1 image per mix")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads during the run (scipy's per-patch np.dot calls stall when several "
        "BLAS threads compete with other work on a shared machine); 0 = library default",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/distances.json)"
    )
    args = parser.parse_args()
    q = args.q if args.q is not None else (40 if args.quick else 250)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    load_at_start = load_average()

    limit = args.blas_threads if args.blas_threads > 0 else None
    with threadpool_limits(limits=limit, user_api="blas"):
        blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
        mixes = {label: bench_mix(sizes, q, repeats) for label, sizes in SIZE_MIXES.items()}
    results = {
        "benchmark": "patch distances: vectorised vs per-patch scipy/skimage loop",
        "unit": "milliseconds per image (median over repeats)",
        "quick": args.quick,
        "machine": {"blas_threads": blas, "load_average_at_start": load_at_start},
        "mixes": mixes,
    }
    for label, res in results["mixes"].items():
        total = res["all_metrics"]
        print(
            f"{label}: all {len(PATCH_DISTANCES)} metrics on q={q}: vectorised "
            f"{total['vectorised_ms_per_image']:.2f} ms, reference "
            f"{total['reference_ms_per_image']:.2f} ms, ratio {total['ratio']:.1f}x "
            f"(grouping + stacking {total['of_which_grouping_and_stacking_ms']:.2f} ms)"
        )
        for name, m in res["per_metric"].items():
            print(
                f"  {name:15s} {m['vectorised_ms']:9.3f} ms  vs {m['reference_ms']:9.3f} ms  "
                f"x{m['ratio']:7.1f}  max rel diff {m['max_rel_diff']:.1e}"
            )
    stem = "distances_quick" if args.quick else "distances"
    out = write_result(stem, results, path=args.out)
    print(f"wrote {display_path(out)}")


if __name__ == "__main__":
    main()
