"""Benchmark of the VQGAN on this CPU: training throughput by precision / memory layout,
reconstruction throughput at 256 and 1024 px, peak memory of 1024 px inference, codebook usage
with and without the collapse remedy, and reconstruction quality after the ``demo`` budget.

Sections (all in one process, so ratios compare like with like on a shared machine):

* ``train_throughput``: training images/s of the ``demo`` model on its training crops, fp32 vs
  bf16 autocast, each with and without channels_last; ratio against fp32 / contiguous.
* ``reconstruct_throughput``: inference images/s of the ``demo`` model on whole 256 px and
  1024 px images, fp32 vs bf16, and the largest |fp32 - bf16| pixel difference.
* ``memory_1024``: peak resident memory increase (VmHWM after a reset, minus VmRSS before) of
  reconstructing one 1024 px image with the demo model, and torch's own peak where it has one
  (CUDA).
* ``codebook_usage``: the demo configuration trained for ``--remedy-steps`` steps with
  codebook_remedy "none" and with the demo preset's remedy: fraction of codes used and
  perplexity on held-out normal boards.
* ``demo_quality``: the full ``demo`` preset trained on ``--n-train`` synthetic 256 px normal
  boards: wall time, images/s, held-out PSNR / SSIM on normal boards, and how much more the
  reconstruction error is inside the defect masks of abnormal boards than outside
  (pooled ratio of mean |x - x_hat|, and per-image median / minimum).
* ``demo_quality_by_downsampling`` (with ``--downsampling 8,4``): the same training and
  measurements with each downsampling factor f (model.config.with_downsampling; the first is
  ``demo_quality``), and each one's PSNR gain (dB), defect-contrast ratio and training-time
  ratio against the first. A finer code map reconstructs normal detail better but may also
  copy a defect through: the defect contrast says which wins.

Run: ``.venv/bin/python bench/bench_vqgan.py [--quick] [--threads N] [--downsampling 8,4]
[--quality-only] [--out PATH]`` -> prints and writes ``bench/results/vqgan.json``
(``--quality-only``: the demo-quality sections alone, to ``vqgan_quality.json``). ``--quick``
shrinks every section to a sanity run and writes ``vqgan_quick.json`` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.model.config import (
    TrainConfig,
    VQGANConfig,
    vqgan_preset,
    with_downsampling,
)
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.model.tensors import images_to_tensor
from vqganodip_pipeline.model.train import _Trainer, train_vqgan
from vqganodip_pipeline.model.vqgan import build_vqgan

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python bench/bench_vqgan.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import display_path, load_average, median_time, write_result  # noqa: E402


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def bench_train_throughput(
    config: VQGANConfig, train: TrainConfig, images: np.ndarray, steps: int
) -> dict[str, Any]:
    """Training images/s of the same model per (precision, channels_last, threads)."""
    out: dict[str, Any] = {
        "crop_size": train.crop_size,
        "batch_size": train.batch_size,
        "steps_timed": steps,
        "note": "median step time incl. data, D active, perceptual as in the preset",
    }
    default_threads = torch.get_num_threads()
    variants = [("fp32", False, default_threads), ("bf16", False, default_threads)]
    variants += [("fp32", True, default_threads), ("bf16", True, default_threads)]
    other = 1 if default_threads > 1 else min(2, os.cpu_count() or 1)
    if other != default_threads:
        variants.append(("bf16", False, other))
    for precision, channels_last, threads in variants:
        tc = dataclasses.replace(
            train, precision=precision, channels_last=channels_last, device="cpu", disc_start=0
        )
        torch.set_num_threads(threads)
        try:
            trainer = _Trainer(images, None, config, tc, None, "bench", None)

            def step(_: int, trainer: _Trainer = trainer) -> None:
                trainer._train_step(trainer._batch())
                trainer.step += 1

            median_time(step, 2)  # warm-up: oneDNN primitive creation
            seconds, _ = median_time(step, steps)
        finally:
            torch.set_num_threads(default_threads)
        key = f"{precision}{'+channels_last' if channels_last else ''}_{threads}thread"
        out[key] = {"images_per_s": tc.batch_size / seconds}
    base = out[f"fp32_{default_threads}thread"]["images_per_s"]
    for value in out.values():
        if isinstance(value, dict):
            value["ratio_vs_fp32"] = value["images_per_s"] / base
    return out


def bench_reconstruct(model: torch.nn.Module, sizes: list[int], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        batch = 4 if size <= 256 else 1
        images = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
        row: dict[str, Any] = {"batch_size": batch}
        results = {}
        for precision in ("fp32", "bf16"):
            reconstruct(model, images[:1], precision=precision)  # warm-up
            times = []
            for _ in range(repeats):
                rec = reconstruct(model, images, batch_size=batch, precision=precision)
                times.append(rec.seconds)
            results[precision] = rec.x_hat
            row[f"{precision}_images_per_s"] = batch / float(np.median(times))
        row["bf16_ratio_vs_fp32"] = row["bf16_images_per_s"] / row["fp32_images_per_s"]
        diff = np.abs(results["fp32"].astype(int) - results["bf16"].astype(int))
        row["bf16_vs_fp32_max_abs_diff_gray_levels"] = int(diff.max())
        row["bf16_vs_fp32_mean_abs_diff_gray_levels"] = float(diff.mean())
        out[f"{size}px"] = row
    return out


def bench_memory_1024(model: torch.nn.Module) -> dict[str, Any]:
    image = np.random.default_rng(1).integers(0, 256, size=(1, 1024, 1024, 3), dtype=np.uint8)
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        reconstruct(model, image[:, :64, :64], precision=precision)
        can_reset = _reset_peak_rss()
        before = _proc_status_kib("VmRSS")
        reconstruct(model, image, batch_size=1, precision=precision)
        peak = _proc_status_kib("VmHWM")
        out[precision] = {
            "rss_delta_mib": (peak - before) / 1024 if can_reset and peak and before else None,
            "method": "VmHWM after clear_refs=5 minus VmRSS before" if can_reset else "unavailable",
        }
    if torch.cuda.is_available():
        cuda_model = model.to("cuda")
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            cuda_model(images_to_tensor(image, "cuda"))
        out["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        model.to("cpu")
    else:
        out["torch_peak"] = "not available on CPU (torch keeps no allocator statistics there)"
    return out


def _defect_contrast(images: np.ndarray, x_hat: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    err = np.abs(images.astype(np.float32) - x_hat.astype(np.float32)).mean(-1) / 255.0
    per_image = np.array(
        [err[i][masks[i]].mean() / err[i][~masks[i]].mean() for i in range(len(err))]
    )
    return {
        "mean_err_inside_defects": float(err[masks].mean()),
        "mean_err_outside_defects": float(err[~masks].mean()),
        "ratio_pooled": float(err[masks].mean() / err[~masks].mean()),
        "ratio_per_image_median": float(np.median(per_image)),
        "ratio_per_image_min": float(per_image.min()),
        "n_abnormal": len(err),
    }


def _quality(model: torch.nn.Module, normal: np.ndarray) -> dict[str, float]:
    rec = reconstruct(model, normal, batch_size=8, precision="fp32")
    psnr = 10 * np.log10(1.0 / np.maximum(rec.mse, 1e-10))
    ssim = [
        structural_similarity(a, b, channel_axis=-1, data_range=255)
        for a, b in zip(normal, rec.x_hat, strict=True)
    ]
    return {"psnr_db": float(psnr.mean()), "ssim": float(np.mean(ssim)), "n_heldout": len(normal)}


def bench_codebook(
    config: VQGANConfig, train: TrainConfig, images: np.ndarray, val: np.ndarray, steps: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": steps}
    for remedy in ("none", train.codebook_remedy):
        tc = dataclasses.replace(
            train, steps=steps, codebook_remedy=remedy, eval_every=steps, disc_start=steps + 1
        )
        result = train_vqgan(images, val, config, tc)
        last = result.history["eval"][-1]
        out[remedy] = {
            "val_codebook_usage": last["val_codebook_usage"],
            "val_perplexity": last["val_perplexity"],
            "val_psnr_db": last["val_psnr"],
            "restarted_codes": sum(r["n_restarted"] for r in result.history["restarts"]),
        }
    return out


def bench_demo(
    config: VQGANConfig,
    train: TrainConfig,
    data: Any,
    n_train: int,
    n_val: int,
) -> tuple[dict[str, Any], torch.nn.Module]:
    normal = data.images[: n_train + n_val]
    abnormal = np.array([lab == "abnormal" for lab in data.labels])
    start = time.perf_counter()
    result = train_vqgan(normal[:n_train], normal[n_train : n_train + 8], config, train)
    seconds = time.perf_counter() - start
    model = result.model
    rec = reconstruct(model, data.images[abnormal], batch_size=8, precision="fp32")
    out = {
        "steps": result.step,
        "train_seconds": seconds,
        "train_images_per_s": result.images_per_s,
        "n_train": n_train,
        "final_val_codebook_usage": result.history["eval"][-1]["val_codebook_usage"],
        "heldout_normal": _quality(model, normal[n_train + 8 : n_train + n_val]),
        "defects": _defect_contrast(data.images[abnormal], rec.x_hat, data.masks[abnormal]),
        "perceptual": result.perceptual,
    }
    return out, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sanity run")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch CPU threads (0: torch default). On a busy shared CPU one thread is often "
        "faster than two (OpenMP barriers spin while the other core is taken)",
    )  # fmt: skip
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--remedy-steps", type=int, default=300)
    parser.add_argument(
        "--downsampling",
        default="8",
        help="comma-separated VQGAN factors f for the demo-quality section (first: reference)",
    )
    parser.add_argument(
        "--quality-only", action="store_true", help="only the demo-quality section(s)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/vqgan.json)"
    )
    args = parser.parse_args()
    factors = [int(f) for f in args.downsampling.split(",")]
    load_at_start = load_average()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quick = args.quick
    n_train = 16 if quick else args.n_train
    n_val = 8 + (4 if quick else 30)
    n_abnormal = 4 if quick else 48
    remedy_steps = 10 if quick else args.remedy_steps

    config, train = vqgan_preset("demo")
    config = with_downsampling(config, factors[0])
    if quick:
        train = dataclasses.replace(
            train, steps=20, disc_start=10, eval_every=10, checkpoint_every=10
        )
    start = time.perf_counter()
    data = generate_images(n_train + n_val, n_abnormal, size=256, seed=0)
    gen_seconds = time.perf_counter() - start
    results: dict[str, Any] = {
        "benchmark": "VQGAN training / reconstruction on CPU (demo preset)",
        "quick": quick,
        "machine": {
            "load_average_at_start": load_at_start,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "demo_config": config.to_dict(),
        "demo_train_config": train.to_dict(),
        "synthetic_generation_seconds": gen_seconds,
    }
    normal_train = data.images[:n_train]
    if not args.quality_only:
        results["train_throughput"] = bench_train_throughput(
            config, train, normal_train, steps=3 if quick else 12
        )
        print("train throughput:", json.dumps(results["train_throughput"], indent=1))
        results["codebook_usage"] = bench_codebook(
            config, train, normal_train, data.images[n_train : n_train + 8], remedy_steps
        )
        print("codebook usage:", json.dumps(results["codebook_usage"], indent=1))
    demo, model = bench_demo(config, train, data, n_train, n_val)
    results["demo_quality"] = demo
    print("demo quality:", json.dumps(demo, indent=1))
    if len(factors) > 1:
        by_f = {str(factors[0]): demo}
        for f in factors[1:]:
            other, _ = bench_demo(with_downsampling(config, f), train, data, n_train, n_val)
            other["vs_first"] = {
                "psnr_gain_db": other["heldout_normal"]["psnr_db"]
                - demo["heldout_normal"]["psnr_db"],
                "defect_ratio_pooled_ratio": other["defects"]["ratio_pooled"]
                / demo["defects"]["ratio_pooled"],
                "train_seconds_ratio": other["train_seconds"] / demo["train_seconds"],
            }
            by_f[str(f)] = other
            print(f"demo quality at f = {f}:", json.dumps(other, indent=1))
        results["demo_quality_by_downsampling"] = by_f
    if args.quality_only:
        name = "vqgan_quality_quick" if quick else "vqgan_quality"
        out = write_result(name, results, path=args.out)
        print(f"wrote {display_path(out)}")
        return
    results["reconstruct_throughput"] = bench_reconstruct(model, [256, 1024], 1 if quick else 3)
    print("reconstruct:", json.dumps(results["reconstruct_throughput"], indent=1))
    results["memory_1024"] = bench_memory_1024(model)
    print("memory:", json.dumps(results["memory_1024"], indent=1))
    paper = build_vqgan(vqgan_preset("paper")[0])
    results["paper_model_parameters_millions"] = sum(p.numel() for p in paper.parameters()) / 1e6
    out = write_result("vqgan_quick" if quick else "vqgan", results, path=args.out)
    print(f"wrote {display_path(out)}")


if __name__ == "__main__":
    main()
