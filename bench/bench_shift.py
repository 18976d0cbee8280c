"""Benchmark of scoring one production shift: throughput and peak memory as the shift grows.

A deployment (the ``tiny`` preset's model at ``--size`` px, trained and released once here) scores
shifts of ``--shifts`` images (default 100 and 1,000 synthetic boards, a tenth defective), each
by ``process_batch`` in a fresh Python process, so that each shift's peak resident memory
(``VmHWM``) is its own. Per shift: images/s of ``batch_reconstructions`` and ``batch_metrics``
(their materialization metadata), the run's wall time, and the peak memory.

Reference, in the same run: the smallest shift. ``batch_reconstructions`` stores its x_hat one
reconstruction batch at a time and ``batch_metrics`` reads them back one at a time, so the
peak should not grow with the shift by anything like the x_hat of the whole shift, which the
code before this benchmark held at once (in the asset's value, its serialized bytes and the
reader's copy): ``x_hat_mib`` gives that size (N x size^2 x 3 float32) beside the measured
growth. What still grows with the shift is the metric table and the patch table themselves.

Run: ``.venv/bin/python bench/bench_shift.py [--quick] [--size 256] [--shifts 100,1000]`` ->
prints a table, writes ``bench/results/shift.json`` (``shift_quick.json`` with ``--quick``:
64 px, shifts of 20 and 80).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import load_average, write_result  # noqa: E402

REFERENCE_BATCH = "reference"
WEIGHTS = REPO_ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"


def settings(root: Path, size: int) -> Any:
    from vqganodip_pipeline.defs.settings import PipelineSettings

    weights = str(WEIGHTS) if WEIGHTS.is_file() else ""
    return PipelineSettings(
        preset="tiny", image_size=size, work_dir=str(root / "work"), weights_path=weights
    )


def definitions(root: Path, size: int) -> Any:
    from vqganodip_pipeline.definitions import build_definitions

    return build_definitions(
        storage_base=str(root / "storage"),
        inbox_root=str(root / "inbox"),
        settings=settings(root, size),
    )


def write_shift(folder: Path, n: int, size: int, seed: int) -> None:
    """An unlabelled shift of ``n`` synthetic boards (a tenth defective), written in chunks."""
    from vqganodip_pipeline.data.images import encode_png
    from vqganodip_pipeline.data.synthetic import generate_images

    folder.mkdir(parents=True)
    for start in range(0, n, 100):
        count = min(100, n - start)
        abnormal = count // 10
        units = generate_images(count - abnormal, abnormal, size=size, seed=seed + start)
        for offset, image in enumerate(units.images):
            (folder / f"unit-{start + offset:05d}.png").write_bytes(encode_png(image))
    (folder / "_READY").write_text("")


def deploy(root: Path, size: int, shifts: list[int]) -> float:
    """Write the reference batch and the shifts, ingest, train and release; the seconds taken."""
    import dagster as dg

    from vqganodip_pipeline.data.synthetic import write_mvtec_dataset
    from vqganodip_pipeline.defs.instance import (
        execute_job,
        failed_checks_or_raise,
        prepare_instance_home,
    )
    from vqganodip_pipeline.defs.keys import key
    from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
    from vqganodip_pipeline.presets import get_preset

    started = time.monotonic()
    data = get_preset("tiny").demo_data
    inbox = root / "inbox"
    write_mvtec_dataset(
        inbox / REFERENCE_BATCH,
        n_normal=data.reference_normal,
        n_abnormal=data.reference_abnormal,
        size=size,
        seed=0,
    )
    for n in shifts:
        write_shift(inbox / f"shift-{n}", n, size, seed=10_000)
    home = prepare_instance_home(root / "dagster_home")
    defs = definitions(root, size)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(reference_partitions.name, [REFERENCE_BATCH])
        instance.add_dynamic_partitions(shift_partitions.name, [f"shift-{n}" for n in shifts])
        for job, partition in (("ingest_reference", REFERENCE_BATCH), ("train_model", None)):
            extra = {"partition_key": partition} if partition else {}
            result = execute_job(defs, job, instance, **extra)
            failed_checks_or_raise(job, result)
        if instance.get_latest_materialization_event(key("released_model")) is None:
            raise RuntimeError("the tiny deployment released no model; see the run's checks")
    return time.monotonic() - started


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def score_shift(root: Path, size: int, n: int) -> dict[str, Any]:
    """``process_batch`` on ``shift-<n>`` in this process (a fresh one): what the result holds."""
    import dagster as dg

    from vqganodip_pipeline.defs.instance import execute_job, failed_checks_or_raise

    defs = definitions(root, size)
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        started = time.monotonic()
        result = execute_job(defs, "process_batch", instance, partition_key=f"shift-{n}")
        failed_checks_or_raise("process_batch", result)
        wall = time.monotonic() - started
        rates = {}
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            name = materialization.asset_key.path[-1]
            if "images_per_second" in materialization.metadata:
                rates[name] = round(materialization.metadata["images_per_second"].value, 2)
        scores = result.output_for_node("batch_scores")
    return {
        "images": n,
        "scored": len(scores),
        "wall_s": round(wall, 1),
        "images_per_second": rates,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, shifts of 20 and 80")
    parser.add_argument("--size", type=int, default=None, help="image size in px (256)")
    parser.add_argument("--shifts", default=None, help="shift sizes, comma separated")
    parser.add_argument("--out", default=None)
    parser.add_argument("--score", nargs=2, metavar=("ROOT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (64 if args.quick else 256)
    if args.score:  # the child process: score one shift, print its figures as JSON
        print(json.dumps(score_shift(Path(args.score[0]), size, int(args.score[1]))))
        return 0
    shifts = sorted(
        int(s) for s in (args.shifts or ("20,80" if args.quick else "100,1000")).split(",")
    )
    started_load = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_shift_") as tmp:
        root = Path(tmp)
        deploy_s = deploy(root, size, shifts)
        runs = []
        for n in shifts:
            child = subprocess.run(
                [sys.executable, __file__, "--size", str(size), "--score", str(root), str(n)],
                capture_output=True,
                text=True,
                env={**os.environ, "DAGSTER_HOME": str(root / "dagster_home")},
            )
            if child.returncode != 0:
                sys.stderr.write(child.stderr[-4000:])
                raise RuntimeError(f"scoring shift-{n} failed (exit {child.returncode})")
            run = json.loads(child.stdout.strip().splitlines()[-1])
            run["x_hat_mib"] = round(n * size * size * 3 * 4 / 2**20, 1)
            runs.append(run)
    reference, largest = runs[0], runs[-1]
    growth = largest["peak_rss_mib"] - reference["peak_rss_mib"]
    extra_x_hat = largest["x_hat_mib"] - reference["x_hat_mib"]
    payload = {
        "preset": "tiny",
        "size_px": size,
        "deploy_s": round(deploy_s, 1),
        "runs": runs,
        "peak_growth_mib": round(growth, 1),
        "x_hat_growth_mib": round(extra_x_hat, 1),
        "growth_over_x_hat": round(growth / extra_x_hat, 3) if extra_x_hat else None,
        "machine": {"load_average_at_start": started_load},
        "quick": args.quick,
    }
    print(
        f"{'images':>7} {'wall s':>7} {'recon img/s':>12} {'metrics img/s':>14} "
        f"{'peak MiB':>9} {'x_hat MiB':>10}"
    )
    for run in runs:
        rates = run["images_per_second"]
        print(
            f"{run['images']:>7} {run['wall_s']:>7} {rates.get('batch_reconstructions', 0):>12} "
            f"{rates.get('batch_metrics', 0):>14} {run['peak_rss_mib']:>9} {run['x_hat_mib']:>10}"
        )
    print(
        f"peak memory grew {growth:.0f} MiB from {reference['images']} to {largest['images']} "
        f"images, against {extra_x_hat:.0f} MiB more x_hat"
    )
    name = "shift_quick" if args.quick else "shift"
    written = write_result(name, payload, Path(args.out) if args.out else None)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
