"""GanoDIP localisation and the metric table: per-stage time per image at 256 and 1024 px,
the fast patch-distance paths against the naive per-patch reference (ratio and overlap of the
selected q patches) at the paper's p=100, n=4, alpha=4, q=250, and peak memory.

Two fast paths: ``whole_image`` (features of the whole image once, what the metric row uses
because its image-level metrics need those features anyway) and ``regions`` (features only on
the crops covering the candidates, the path for localisation alone). Target: >= 50x faster than
naive with >= 90% overlap of the selected q patches (``fast_path_summary``).

Image pairs: a synthetic board with a defect and, as its "reconstruction", another normal unit
of the same product (every normal variation differs: a harder case than a trained VQGAN's
output). Backbone: ImageNet MobileNetV2 from ../shared/data/weights when present (the
``--weights`` option), else a randomly initialised PatchGAN discriminator (same code path as the
trained one). Each size runs in its own subprocess so peak memory is per size.

``--scaled-alpha`` uses alpha = 4 px per 256 px of image side (16 px at 1024) instead, so the
patches cover the same share of the board at every size -> localize_scaled_alpha.json.

Run: ``.venv/bin/python bench/bench_localize.py [--quick] [--scaled-alpha]`` ->
bench/results/localize.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = (
    ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_size(size: int, weights: str | None, quick: bool, scaled_alpha: bool) -> dict[str, Any]:
    """Measure one image size in this process (called in a subprocess)."""
    import numpy as np
    import torch

    from vqganodip_pipeline.data.synthetic import make_layout, render_unit
    from vqganodip_pipeline.localize.candidates import top_p_pixels, zoom_out_and_shift
    from vqganodip_pipeline.localize.feature_deviation import fit_feature_statistics
    from vqganodip_pipeline.localize.mask import NormalVariation, difference_image, normal_variation
    from vqganodip_pipeline.localize.patch_distance import (
        image_features,
        patch_distances_fast,
        patch_distances_naive,
        patch_distances_regions,
        patch_distances_resized,
        select_top_q,
    )
    from vqganodip_pipeline.metrics.table import LocalizeConfig, image_metrics
    from vqganodip_pipeline.model.config import vqgan_preset
    from vqganodip_pipeline.model.vqgan import build_discriminator
    from vqganodip_pipeline.pipeline import build_backbone
    from vqganodip_pipeline.presets import get_preset

    torch.set_num_threads(1)
    # the paper's alpha = 4 px at every size; --scaled-alpha keeps the patches' share of the
    # image fixed instead (alpha = 4 px per 256 px)
    alpha = 4 * max(1, size // 256) if scaled_alpha else 4
    # the joint feature map's channel cap of the preset that runs at this size
    joint_channels = get_preset("paper" if size >= 1024 else "demo").localize.joint_channels
    config = LocalizeConfig(p=100, n=4, alpha=alpha, q=250, joint_channels=joint_channels)
    model_config, _ = vqgan_preset("demo")
    discriminator = build_discriminator(model_config, seed=0).eval()
    choice = build_backbone("auto", weights_path=weights, discriminator=discriminator)
    layout = make_layout(0)
    start_rss = peak_rss_mb()
    defects = ["solder_bridge"] if quick else ["solder_bridge", "missing", "scratch"]
    stages: dict[str, list[float]] = {}
    comparisons = []

    def timed(name: str, fn, *args, **kwargs):
        begin = time.perf_counter()
        value = fn(*args, **kwargs)
        stages.setdefault(name, []).append(time.perf_counter() - begin)
        return value

    outputs = {"mse": 0.0, "quant_loss": 0.0, "codes_used": 1.0}
    # normal variation of a few units (each "reconstructed" by another unit), as the weighting
    # mask asset would store it: W, per-pixel statistics and per-position feature statistics
    units = np.stack([render_unit(layout, size=size, seed=300 + i)[0] for i in range(6)])
    plain = normal_variation(units, np.roll(units, 1, axis=0))
    normal = NormalVariation(
        plain.weights,
        plain.mean,
        plain.std,
        plain.sigma,
        plain.eps,
        timed(
            "feature_statistics_6_units",
            fit_feature_statistics,
            choice.backbone,
            units,
            joint_channels=config.joint_channels,
        ),
    )
    for k, defect in enumerate(defects):
        x, _ = render_unit(layout, size=size, seed=100 + k, defect=defect)
        x_hat, _ = render_unit(layout, size=size, seed=200 + k)
        features = timed("features", image_features, choice.backbone, x, x_hat)
        delta = timed("difference", difference_image, x, x_hat)
        pixels = timed("top_p", top_p_pixels, delta, config.p)
        candidates = timed(
            "candidates", zoom_out_and_shift, pixels, (size, size), config.n, config.alpha
        )
        for estimator in ("pooled", "frechet"):
            fast = timed(f"fast_{estimator}", patch_distances_fast, features, candidates, estimator)
            chosen_fast = select_top_q(fast, candidates, config.q)
            entry: dict[str, Any] = {"defect": defect, "estimator": estimator}
            begin = time.perf_counter()
            naive = patch_distances_naive(choice.backbone, x, x_hat, candidates, estimator)
            entry["naive_s"] = time.perf_counter() - begin
            entry["fast_s"] = stages[f"fast_{estimator}"][-1] + stages["features"][-1]
            chosen_naive = select_top_q(naive, candidates, config.q)
            fast_set = {tuple(p) for p in candidates[chosen_fast]}
            naive_set = {tuple(p) for p in candidates[chosen_naive]}
            entry["speedup"] = entry["naive_s"] / entry["fast_s"]
            entry["overlap_top_q"] = len(fast_set & naive_set) / config.q
            entry["pearson"] = float(np.corrcoef(fast, naive)[0, 1])
            regions = timed(
                f"regions_{estimator}",
                patch_distances_regions,
                choice.backbone,
                x,
                x_hat,
                candidates,
                estimator,
            )
            regions_set = {
                tuple(p) for p in candidates[select_top_q(regions, candidates, config.q)]
            }
            entry["regions_s"] = stages[f"regions_{estimator}"][-1]
            entry["regions_speedup"] = entry["naive_s"] / entry["regions_s"]
            entry["regions_overlap_top_q"] = len(regions_set & naive_set) / config.q
            if estimator == "pooled" and not quick:
                begin = time.perf_counter()
                resized = patch_distances_resized(choice.backbone, x, x_hat, candidates, estimator)
                entry["paper_resized_s"] = time.perf_counter() - begin
                resized_set = {
                    tuple(p) for p in candidates[select_top_q(resized, candidates, config.q)]
                }
                entry["paper_resized_overlap_top_q"] = len(fast_set & resized_set) / config.q
            comparisons.append(entry)
        timed("image_metrics_total", image_metrics, x, x_hat, features, outputs, normal, config)
    paths = {
        "whole_image": ("speedup", "overlap_top_q"),
        "regions": ("regions_speedup", "regions_overlap_top_q"),
    }
    summary = {
        path: {
            "min_speedup": min(entry[speed] for entry in comparisons),
            "min_overlap_top_q": min(entry[overlap] for entry in comparisons),
            "target_met": min(entry[speed] for entry in comparisons) >= 50
            and min(entry[overlap] for entry in comparisons) >= 0.9,
        }
        for path, (speed, overlap) in paths.items()
    }
    return {
        "size": size,
        "fast_path_summary": summary,
        "backbone": choice.note,
        "config": {
            "p": config.p,
            "n": config.n,
            "alpha": config.alpha,
            "q": config.q,
            "joint_channels": config.joint_channels,
        },
        "candidates_per_image": len(candidates),
        "seconds_per_image": {name: float(np.median(v)) for name, v in stages.items()},
        "fast_vs_naive": comparisons,
        "peak_rss_mb": peak_rss_mb(),
        "rss_increase_mb": peak_rss_mb() - start_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one image, 256 px only")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="MobileNetV2 weights")
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/)")
    parser.add_argument(
        "--scaled-alpha",
        action="store_true",
        help="alpha = 4 px per 256 px of image side instead of the paper's 4 px",
    )
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = args.weights if Path(args.weights).is_file() else None
    if args.size is not None:  # child process
        print(json.dumps(run_size(args.size, weights, args.quick, args.scaled_alpha)))
        return
    sizes = [256] if args.quick else [256, 1024]
    results = []
    for size in sizes:
        command = [sys.executable, __file__, "--size", str(size), "--weights", args.weights]
        if args.quick:
            command.append("--quick")
        if args.scaled_alpha:
            command.append("--scaled-alpha")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1], indent=2))
    try:
        from bench._common import write_result
    except ImportError:
        sys.path.insert(0, str(ROOT))
        from bench._common import write_result
    payload = {
        "benchmark": "localize",
        "quick": args.quick,
        "alpha": "4 px per 256 px" if args.scaled_alpha else "4 px (paper)",
        "sizes": results,
    }
    name = "localize_quick" if args.quick else "localize"
    if args.scaled_alpha:
        name += "_scaled_alpha"
    write_result(name, payload, path=args.out)


if __name__ == "__main__":
    main()
