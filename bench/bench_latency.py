"""Line speed: end-to-end seconds per new image at 256 and 1024 px, against a PatchCore-style
scorer timed in the same process, and peak memory.

End to end is what a production batch does per image, in the pipeline's own functions:
decode the PNG bytes (data.images.decode_image), reconstruct (model.reconstruct, fp32, with
the discriminator's logits), backbone features of the image and its reconstruction, every
metric of the row (metrics.table.image_metrics: all three variants, feature deviation,
nearest-neighbour distances, patch metrics, ORB) and the composite score (a fitted
MetricPreprocessor -> logistic regression pipeline; the shipped model's classifier varies, and
scoring took 4-10 ms per image in bench_evaluate).

The PatchCore-style peer per image: decode, one backbone pass, nearest-neighbour distance of
every position to the same memory bank, maximum (localize/nearest_neighbour.py): the score
of the ``patchcore`` baseline.

Setup (not timed): the preset's VQGAN architecture (``demo`` at 256 px, ``paper`` at 1024 px;
``--preset demo`` runs the demo architecture at every size, as ``VQGANODIP_IMAGE_SIZE=1024``
with the demo preset does)
with its initial weights (timing does not depend on training; the reconstruction's quality
does not matter here), ImageNet MobileNetV2 from ../shared/data/weights when present (else
the discriminator's features, said in the result), the normal variation of 12 synthetic
units (weighting mask, per-pixel and per-position statistics, memory bank) as the weighting
mask asset fits it. Each size runs in its own subprocess, so ``peak_rss_mib`` is that size's
whole process (Python, torch, models, statistics) at its high-water mark.

``--engines torch,onnxruntime,openvino`` times each inference engine of the reconstruction
(model/engines.py) in its own subprocess; an engine other than torch also records how far its
reconstructions of the new units are from eager PyTorch's (``vs_torch``: largest uint8
difference, share of pixels that differ, share of images whose metric row moved).

Targets (issue 14): <= 0.15 s per 256 px image and <= 1.5 s per 1024 px image end to end on
this 2-core CPU, peak memory <= 4 GiB. Run: ``.venv/bin/python bench/bench_latency.py
[--quick] [--sizes 256,1024] [--engines torch,onnxruntime]`` -> bench/results/latency.json.
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
if str(ROOT) not in sys.path:  # run as `python bench/bench_latency.py`
    sys.path.insert(0, str(ROOT))

from bench._common import write_result  # noqa: E402

DEFAULT_WEIGHTS = (
    ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"
)
TARGET_S = {256: 0.15, 1024: 1.5}
TARGET_PEAK_MIB = 4096


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_size(
    size: int, weights: str | None, images: int, engine: str = "torch", preset_name: str = "auto"
) -> dict[str, Any]:
    """Measure one size in this process (called in a subprocess)."""
    import numpy as np
    import pandas as pd
    import torch

    from vqganodip_pipeline.data.images import decode_image, encode_png
    from vqganodip_pipeline.data.synthetic import make_layout, render_unit
    from vqganodip_pipeline.localize.patch_distance import image_features
    from vqganodip_pipeline.metrics.keypoints import orb_keypoint_matching
    from vqganodip_pipeline.metrics.table import image_metrics
    from vqganodip_pipeline.model.config import vqgan_preset
    from vqganodip_pipeline.model.engines import compile_vqgan
    from vqganodip_pipeline.model.reconstruct import reconstruct
    from vqganodip_pipeline.model.tensors import images_to_tensor
    from vqganodip_pipeline.model.vqgan import build_discriminator, build_vqgan
    from vqganodip_pipeline.pipeline import (
        build_backbone,
        compute_normal_variation,
        metric_rows,
        reconstruction_frame,
    )
    from vqganodip_pipeline.presets import get_preset
    from vqganodip_pipeline.scoring.classifiers import build_pipeline, classifier_registry
    from vqganodip_pipeline.scoring.table import metric_columns

    torch.set_num_threads(2)
    if preset_name == "auto":
        preset_name = "paper" if size >= 1024 else "demo"
    # the preset at this working size, as PipelineSettings(image_size=size) gives it
    preset = get_preset(preset_name).with_image_size(size)
    config = preset.localize
    model_config, _ = vqgan_preset(preset.name)
    torch_model = build_vqgan(model_config, seed=0).eval()
    model = compile_vqgan(torch_model, engine)
    discriminator = build_discriminator(model_config, seed=0).eval()
    choice = build_backbone("auto", weights_path=weights, discriminator=discriminator)
    backbone = choice.backbone
    layout = make_layout(0)
    normals = np.stack([render_unit(layout, size=size, seed=300 + i)[0] for i in range(12)])
    start = time.perf_counter()
    normal = compute_normal_variation(
        model,
        normals[:6],
        config=config,
        batch_size=preset.batch_size,
        backbone=backbone,
        feature_images=normals[6:],
    )
    fit_s = time.perf_counter() - start
    assert normal.memory is not None

    def metric_records(pixels: np.ndarray, result: Any, names: list[str]) -> list[dict]:
        records, _ = metric_rows(
            pd.DataFrame({"image_id": names}),
            pixels,
            result.x_hat,
            reconstruction_frame(result),
            backbone,
            normal=normal,
            config=config,
        )
        return records

    def end_to_end(data: bytes, name: str) -> dict[str, Any]:
        # the production path: decode, reconstruct, then pipeline.metric_rows
        pixels = decode_image(data, name).pixels[None]
        result = reconstruct(model, pixels, batch_size=1, discriminator=discriminator)
        return metric_records(pixels, result, [name])[0]

    def peer(data: bytes, name: str) -> float:
        pixels = decode_image(data, name).pixels[None]
        with torch.no_grad():
            maps = backbone.feature_maps(images_to_tensor(pixels))
        return float(normal.memory.distance_map([m[0] for m in maps], backbone.name).max())

    # a classifier to score with, fitted on rows of normal and defective units
    defects = ("missing", "solder_bridge", "scratch", "foreign_particle")
    train_rows = []
    for i in range(8):
        defect = defects[i % 4] if i % 2 else None
        x, _ = render_unit(layout, size=size, seed=400 + i, defect=defect)
        row = end_to_end(encode_png(x), f"train_{i}.png")
        train_rows.append({**row, "label": "abnormal" if defect else "normal"})
    frame = pd.DataFrame(train_rows)
    columns = metric_columns(frame)
    classifier = build_pipeline(classifier_registry()["lr"], seed=0).fit(
        frame[columns].to_numpy(), (frame["label"] == "abnormal").to_numpy(int)
    )

    new_units = []
    for i in range(images):
        defect = defects[i % 4] if i % 2 else None
        new_units.append(encode_png(render_unit(layout, size=size, seed=500 + i, defect=defect)[0]))
    stages: dict[str, list[float]] = {"end_to_end": [], "score": [], "peer": []}
    for i, data in enumerate(new_units):
        begin = time.perf_counter()
        row = end_to_end(data, f"new_{i}.png")
        scored = time.perf_counter()
        classifier.predict_proba(np.array([[row[c] for c in columns]]))
        stages["score"].append(time.perf_counter() - scored)
        stages["end_to_end"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        peer(data, f"new_{i}.png")
        stages["peer"].append(time.perf_counter() - begin)
    medians = {name: float(np.median(values)) for name, values in stages.items()}

    def compare_with_torch(units: list[bytes]) -> dict[str, float]:
        # the same new units through eager PyTorch: how far the engine's output is from it
        pixels = np.stack(
            [decode_image(data, f"new_{i}.png").pixels for i, data in enumerate(units)]
        )
        ours = reconstruct(model, pixels, batch_size=1, discriminator=discriminator)
        eager = reconstruct(torch_model, pixels, batch_size=1, discriminator=discriminator)
        difference = np.abs(ours.x_hat.astype(np.int16) - eager.x_hat.astype(np.int16))
        names = [f"new_{i}.png" for i in range(len(units))]
        rows = {}
        for name, result in (("engine", ours), ("torch", eager)):
            records = metric_records(pixels, result, names)
            rows[name] = np.array([[r[c] for c in columns] for r in records], dtype=np.float64)
        scores = {name: classifier.predict_proba(values)[:, 1] for name, values in rows.items()}
        moved = ~np.isclose(rows["engine"], rows["torch"], rtol=1e-6, atol=1e-9, equal_nan=True)
        return {
            "max_uint8_difference": int(difference.max()),
            "share_of_pixels_differing": float((difference > 0).mean()),
            "share_of_images_with_a_moved_metric": float(moved.any(axis=1).mean()),
            "share_of_metric_values_moved": float(moved.mean()),
            "max_score_difference": float(np.abs(scores["engine"] - scores["torch"]).max()),
        }

    # where the time goes: the same image once more, stage by stage
    pixels = decode_image(new_units[0], "profile.png").pixels[None]
    profile: dict[str, float] = {}
    begin = time.perf_counter()
    result = reconstruct(model, pixels, batch_size=1, discriminator=discriminator)
    profile["reconstruct"] = time.perf_counter() - begin
    begin = time.perf_counter()
    features = image_features(backbone, pixels[0], result.x_hat[0])
    profile["features"] = time.perf_counter() - begin
    begin = time.perf_counter()
    normal.memory.distance_map(features.x, backbone.name)
    profile["knn_map"] = time.perf_counter() - begin
    assert normal.features is not None
    begin = time.perf_counter()
    normal.features.deviation_maps(features.x, backbone.name)
    profile["feature_deviation_maps"] = time.perf_counter() - begin
    begin = time.perf_counter()
    orb_keypoint_matching(pixels[0], result.x_hat[0], n_keypoints=config.orb_keypoints)
    profile["orb_keypoints"] = time.perf_counter() - begin
    begin = time.perf_counter()
    image_metrics(pixels[0], result.x_hat[0], features, {}, normal, config)
    profile["image_metrics_all"] = time.perf_counter() - begin
    vs_torch = None if engine == "torch" else compare_with_torch(new_units)
    return {
        "size": size,
        "engine": engine,
        "vs_torch": vs_torch,
        "preset": preset.name,
        "backbone": choice.note,
        "images": images,
        "metric_columns": len(columns),
        "memory_bank": list(normal.memory.bank.shape),
        "normal_variation_fit_s_12_units": fit_s,
        "seconds_per_image": medians,
        "end_to_end_over_peer": medians["end_to_end"] / medians["peer"],
        "profile_one_image_s": profile,
        "target_s": TARGET_S.get(size),
        "target_met": medians["end_to_end"] <= TARGET_S.get(size, float("inf")),
        "misses_target_by": medians["end_to_end"] / TARGET_S[size] if size in TARGET_S else None,
        "peak_rss_mib": peak_rss_mib(),
        "peak_target_met": peak_rss_mib() <= TARGET_PEAK_MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 px, 2 images")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="MobileNetV2 weights")
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/)")
    parser.add_argument(
        "--sizes", default="256,1024", help="comma-separated sizes (8 images at 256, else 3)"
    )
    parser.add_argument(
        "--engines",
        default="torch",
        help="comma-separated inference engines of the reconstruction (torch, onnxruntime, "
        "openvino, openvino-bf16), each in its own subprocess",
    )
    parser.add_argument(
        "--preset",
        default="auto",
        help="the preset whose VQGAN and localisation settings are timed at each size (auto: "
        "demo below 1024 px, paper from 1024 px)",
    )
    parser.add_argument("--engine", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = args.weights if Path(args.weights).is_file() else None
    if args.size is not None:  # child process: one size
        print(json.dumps(run_size(args.size, weights, args.images, args.engine, args.preset)))
        return
    sizes_px = [int(v) for v in args.sizes.split(",")]
    plan = [(256, 2)] if args.quick else [(size, 8 if size <= 256 else 3) for size in sizes_px]
    engines = [value.strip() for value in args.engines.split(",") if value.strip()]
    sizes = []
    for size, images in plan:
        for engine in engines:
            command = [sys.executable, __file__, "--size", str(size), "--images", str(images)]
            command += ["--weights", args.weights, "--engine", engine, "--preset", args.preset]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            sizes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    name = "latency_quick" if args.quick else "latency"
    if args.preset != "auto" and not args.quick:
        name = f"latency_{args.preset}"
    path = write_result(name, {"benchmark": __doc__.splitlines()[0], "sizes": sizes}, args.out)
    print(path)
    for entry in sizes:
        print(
            f"{entry['size']} px, {entry['preset']}, {entry['engine']}: "
            f"end to end {entry['seconds_per_image']['end_to_end']:.3f} s "
            f"(target {entry['target_s']} s), peer {entry['seconds_per_image']['peer']:.3f} s, "
            f"peak {entry['peak_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
