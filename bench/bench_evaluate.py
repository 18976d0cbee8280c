"""End-to-end evaluation (``vqganodip evaluate``, i.e. the Dagster asset graph materialized in
process) on the synthetic PCBA set and on DeepPCB, 3 seeds each, with the targets of the project
checked against what was measured and the spread over seeds.

* ``synthetic``: the embedded default, written with the run's seed (300 normal, 80 abnormal,
  256 px, MVTec layout), ``demo`` preset. Seeds 0, 1, 2 are benchmark seeds: nothing is tuned
  on them (design choices were made on seed 7).
* ``deeppcb``: ../shared/data/deeppcb-trainval (skipped, with the reason in the result, when
  absent), both images re-binarised by the reader (the JPEG shortcut removed), pairs split as
  its README says (templates of training pairs train the VQGAN; evaluation pairs give a normal
  template and an abnormal tested image), native 640 px, no weighting mask (every pair is
  another board region), ``demo`` preset, a seeded subset of ``--deeppcb-pairs`` pairs.

* ``elpv``: the ``elpv-dataset`` package's 2,624 electroluminescence images of solar cells
  (``pip install -e '.[bench]'``; skipped, with the reason in the result, when absent; CC BY-NC-SA:
  evaluation only, never committed). Defect probability 0 is normal and 1 abnormal; the unsure
  ratings (1/3, 2/3: 401 cells) are quarantined and counted. 300 px grey cells resized to 256 px,
  ``demo`` preset, no weighting mask (cells are aligned, but their busbars and cracks vary in
  position), a seeded subset of ``--elpv-cells`` cells.

The seed sets the data (synthetic), the pair or cell subset (DeepPCB, ELPV), the role split, the
VQGAN training and the classifier search. Both use the ImageNet MobileNetV2 weights from
../shared/data/weights when present.

Writes ``bench/results/evaluate_<name>.json``: per seed the summary and the whole report, and
``spread`` (mean, min, max over the seeds of each headline figure). The first seed's synthetic
report folder is kept as ``bench/results/evaluate_synthetic/`` (report.json, report.html,
figures/; the metric table and asset storage are not kept). The DeepPCB report folders show
DeepPCB images, which its licence keeps out of the repository: they stay in a temporary folder
whose path the script prints. ``--quick`` runs the tiny preset on a small synthetic set into a
temporary folder (a smoke run; results are not comparable).

Run: ``.venv/bin/python bench/bench_evaluate.py [--quick] [--only synthetic|deeppcb|elpv]
[--seeds 0,1,2]``. A long benchmark can run one seed per process (``--seeds 1 --out
part1.json``), so that a failure late on keeps the seeds already measured; ``--merge part0.json
part1.json ... --out evaluate_<name>.json`` then joins the parts of one dataset and recomputes
the spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS_DIR, display_path, load_average, write_result
from vqganodip_pipeline.data.synthetic import write_mvtec_dataset
from vqganodip_pipeline.evaluation import EvaluationConfig, run_evaluation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"
DEEPPCB = SHARED / "deeppcb-trainval"
DATASETS = ("synthetic", "deeppcb", "elpv")


def elpv_root() -> Path | None:
    """The installed ``elpv-dataset`` package's data folder, or None."""
    try:
        import elpv_dataset
    except ImportError:
        return None
    return Path(elpv_dataset.__file__).resolve().parent / "data"


ZFN = "protocols.honest.zfn.accuracy"
BASELINES = ("raw_mse", "best_single_metric", "golden_sample", "capture_shortcut")


def targets(honest_zfn: float, auroc: float | None) -> tuple[dict[str, Any], ...]:
    """The project's targets for one dataset: honest ZFN accuracy, image AUROC (when set), and
    the composite ahead of every baseline on honest ZFN accuracy, the shortcut baseline (a
    classifier on capture statistics alone) included: a result counts only where it beats it."""
    checks: list[dict[str, Any]] = [
        {"name": "honest ZFN accuracy", "path": ZFN, "op": ">=", "value": honest_zfn},
    ]
    if auroc is not None:
        checks.append({"name": "image AUROC", "path": "auroc", "op": ">=", "value": auroc})
    checks += [
        {
            "name": f"composite ahead of {name}",
            "path": ZFN,
            "op": ">=",
            "value": f"baselines.{name}.zfn.accuracy",
        }
        for name in BASELINES
    ]
    checks.append(
        {
            "name": "composite AUROC ahead of the shortcut baseline",
            "path": "auroc",
            "op": ">=",
            "value": "baselines.capture_shortcut.auroc",
        }
    )
    return tuple(checks)


LATENCY = {
    "name": "end-to-end seconds per 256 px image",
    "path": "seconds_per_image.end_to_end",
    "op": "<=",
    "value": 0.5,
}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    honest, paper = report["protocols"]["honest"], report["protocols"]["paper"]
    holdout = report.get("holdout") or {}
    shortcut = report.get("shortcut") or {}
    return {
        "honest_zfn_accuracy": honest["zfn"]["accuracy"],
        "honest_zfn_missed": honest["zfn"]["missed"],
        "honest_zfn_fpr": honest["zfn"]["fpr"],
        "honest_std_accuracy": honest["std"]["accuracy"],
        "paper_zfn_accuracy": paper["zfn"]["accuracy"],
        "paper_classifier": paper["classifier"],
        "auroc": report["auroc"],
        "auroc_fold_mean": report.get("auroc_fold_mean"),
        "n_abnormal_evaluated": honest["zfn"]["tp"] + honest["zfn"]["fn"],
        "shipped_n_calibration": report["shipped"]["n_calibration"],
        "shipped_miss_rate_upper_bound": report["shipped"]["miss_rate_upper_bound"],
        "shipped_expected_miss_rate": report["shipped"]["expected_miss_rate"],
        "holdout_zfn_accuracy": (holdout.get("zfn") or {}).get("accuracy"),
        "holdout_missed": (holdout.get("zfn") or {}).get("missed"),
        "holdout_abnormal": (
            (holdout.get("zfn") or {}).get("tp", 0) + (holdout.get("zfn") or {}).get("fn", 0)
        ),
        "shortcut_auroc": shortcut.get("auroc"),
        "shortcut_warning": shortcut.get("warning"),
        "baselines_zfn_accuracy": {
            name: value["zfn"]["accuracy"] for name, value in report["baselines"].items()
        },
        "baselines_auroc": {
            name: value.get("auroc") for name, value in report["baselines"].items()
        },
        "baselines_auroc_fold_mean": {
            name: value.get("auroc_fold_mean") for name, value in report["baselines"].items()
        },
        "localization_hit_rate": report["localization_hit_rate"],
        "end_to_end_s_per_image": report["seconds_per_image"]["end_to_end"],
        "wall_s": report.get("runs_seconds", {}).get("wall"),
        "targets_met": sum(t["met"] for t in report.get("targets", [])),
        "targets": len(report.get("targets", [])),
    }


SPREAD_KEYS = (
    "honest_zfn_accuracy",
    "honest_zfn_missed",
    "honest_zfn_fpr",
    "honest_std_accuracy",
    "paper_zfn_accuracy",
    "auroc",
    "auroc_fold_mean",
    "shipped_miss_rate_upper_bound",
    "holdout_zfn_accuracy",
    "holdout_missed",
    "shortcut_auroc",
    "localization_hit_rate",
    "end_to_end_s_per_image",
)


def spread(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, min and max over the seeds of every headline figure (and of each baseline's honest
    ZFN accuracy and AUROC)."""
    values: dict[str, list[float]] = {}
    for item in summaries:
        for key in SPREAD_KEYS:
            if item.get(key) is not None:
                values.setdefault(key, []).append(float(item[key]))
        for family in ("baselines_zfn_accuracy", "baselines_auroc", "baselines_auroc_fold_mean"):
            for name, value in item.get(family, {}).items():
                if value is not None:
                    values.setdefault(f"{family}.{name}", []).append(float(value))
    return {
        key: {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "n": len(v)}
        for key, v in values.items()
    }


def run_one(name: str, config: EvaluationConfig, out: Path) -> dict[str, Any]:
    print(f"[bench_evaluate] {name}, seed {config.seed}: {config.dataset}", flush=True)
    _, html_path, report = run_evaluation(
        config, out, log=lambda message: print(message, flush=True)
    )
    return {"summary": summary(report), "report": report, "html": display_path(html_path)}


def configs(
    name: str, seed: int, quick: bool, scratch: Path, weights: str | None, groups: int
) -> tuple[EvaluationConfig, dict[str, Any]]:
    """The evaluation of dataset ``name`` at ``seed``; ``groups`` limits DeepPCB pairs or ELPV
    cells (a seeded subset)."""
    if name == "synthetic":
        data = scratch / f"synthetic-seed{seed}"
        n_normal, n_abnormal = (60, 20) if quick else (300, 80)
        write_mvtec_dataset(data, n_normal=n_normal, n_abnormal=n_abnormal, size=256, seed=seed)
        spec = {
            "generator": "write_mvtec_dataset (deleted after the run)",
            "n_normal": n_normal,
            "n_abnormal": n_abnormal,
            "size": 256,
        }
        config = EvaluationConfig(
            dataset=str(data),
            layout="mvtec",
            preset="tiny" if quick else "demo",
            size=64 if quick else 256,
            weights=weights,
            seed=seed,
            targets=(*targets(0.95, 0.99), LATENCY),
        )
        return config, spec
    if name == "elpv":
        root = elpv_root()
        assert root is not None, "checked by the caller"
        n_cells = 120 if quick else groups
        spec = {"package": "elpv-dataset", "cells": n_cells, "unsure_ratings": "quarantined"}
        # the 300 px cells resized to 256 px, as the synthetic boards
        return real_config(root, "elpv", 64 if quick else 256, quick, weights, seed, n_cells), spec
    n_pairs = 24 if quick else groups
    spec = {"path": "../shared/data/deeppcb-trainval", "pairs": n_pairs, "binarised": True}
    size = 128 if quick else 640  # native
    return real_config(DEEPPCB, "deeppcb", size, quick, weights, seed, n_pairs), spec


def real_config(
    root: Path, layout: str, size: int, quick: bool, weights: str | None, seed: int, groups: int
) -> EvaluationConfig:
    """A real dataset's evaluation: a seeded subset of ``groups`` pairs or cells, no weighting
    mask (the position of what matters varies), ZFN accuracy target 0.90."""
    return EvaluationConfig(
        dataset=str(root),
        layout=layout,
        preset="tiny" if quick else "demo",
        size=size,
        weights=weights,
        position="free",
        seed=seed,
        max_groups=groups,
        targets=targets(0.90, None),
    )


def merge(paths: list[Path]) -> dict[str, Any]:
    """One result from per-seed result files of one dataset: their runs joined, the spread
    recomputed. Refuses files of another dataset, quick runs and a seed measured twice."""
    runs: dict[str, Any] = {}
    datasets: set[str] = set()
    loads: dict[str, Any] = {}
    for path in paths:
        part = json.loads(path.read_text())
        if "runs" not in part:
            raise ValueError(f"{path}: not a bench_evaluate result (no 'runs'; skipped run?)")
        if part.get("quick"):
            raise ValueError(f"{path}: a --quick result; its figures are not comparable")
        for seed, run in part["runs"].items():
            if seed in runs:
                raise ValueError(f"{path}: seed {seed} is already in an earlier file")
            datasets.add(json.dumps(run.get("dataset", {}), sort_keys=True))
            runs[seed] = run
            loads[seed] = part.get("machine", {}).get("load_average_at_start")
    if len(datasets) > 1:
        raise ValueError(f"the files hold different datasets: {sorted(datasets)}")
    seeds = sorted(int(seed) for seed in runs)
    ordered = {str(seed): runs[str(seed)] for seed in seeds}
    return {
        "seeds": seeds,
        "spread": spread([run["summary"] for run in ordered.values()]),
        "runs": ordered,
        "machine": {"load_average_at_start_by_seed": loads},
        "quick": False,
        "merged_from": [path.name for path in paths],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (minutes)")
    parser.add_argument("--only", choices=DATASETS, default=None)
    parser.add_argument("--deeppcb-pairs", type=int, default=150)
    parser.add_argument("--elpv-cells", type=int, default=600)
    parser.add_argument(
        "--seeds", default=None, help="comma-separated benchmark seeds (default 0,1,2; quick: 0)"
    )
    parser.add_argument(
        "--backbone-layers",
        default="",
        help="MobileNetV2 blocks (PipelineSettings.backbone_layers; default: the library's 3,6); "
        "set, the kept synthetic report folder is not replaced",
    )
    parser.add_argument("--out", default=None, help="result file (single dataset runs)")
    parser.add_argument(
        "--merge", nargs="+", default=None, metavar="FILE", help="join per-seed result files"
    )
    args = parser.parse_args(argv)
    if args.merge:
        if not args.out:
            parser.error("--merge needs --out")
        merged = merge([Path(path) for path in args.merge])
        written = write_result("evaluate", merged, Path(args.out))
        print(json.dumps(merged["spread"], indent=2))
        print(f"[bench_evaluate] wrote {display_path(written)}")
        return 0
    names = [args.only] if args.only else list(DATASETS)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    weights = str(WEIGHTS) if WEIGHTS.is_file() else None
    scratch = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    started_load = load_average()
    try:
        for name in names:
            if name == "deeppcb" and not DEEPPCB.is_dir():
                payload = {"skipped": f"DeepPCB not found at {DEEPPCB}"}
                print(f"[bench_evaluate] deeppcb skipped: {payload['skipped']}")
                write_result("evaluate_deeppcb", payload, Path(args.out) if args.out else None)
                continue
            if name == "elpv" and elpv_root() is None:
                payload = {"skipped": "elpv-dataset is not installed (pip install -e '.[bench]')"}
                print(f"[bench_evaluate] elpv skipped: {payload['skipped']}")
                write_result("evaluate_elpv", payload, Path(args.out) if args.out else None)
                continue
            runs: dict[str, Any] = {}
            for seed in seeds:
                groups = args.elpv_cells if name == "elpv" else args.deeppcb_pairs
                config, spec = configs(name, seed, args.quick, scratch, weights, groups)
                if args.backbone_layers:
                    config = replace(config, backbone_layers=args.backbone_layers)
                    spec = {**spec, "backbone_layers": args.backbone_layers}
                out = scratch / f"report_{name}_seed{seed}"
                runs[str(seed)] = run_one(name, config, out)
                runs[str(seed)]["dataset"] = spec
                # DeepPCB's and ELPV's licences keep their images (shown in the figures) out
                # of the repository; the first synthetic seed's report folder is kept
                kept_run = not args.quick and not args.backbone_layers
                if kept_run and name == "synthetic" and seed == seeds[0]:
                    kept = RESULTS_DIR / "evaluate_synthetic"
                    shutil.rmtree(kept, ignore_errors=True)
                    kept.mkdir(parents=True)
                    for part in ("report.json", "report.html", "figures"):
                        source = out / part
                        if source.is_dir():
                            shutil.copytree(source, kept / part)
                        elif source.is_file():
                            shutil.copy2(source, kept / part)
                shutil.rmtree(out / "storage", ignore_errors=True)
                shutil.rmtree(out / "work", ignore_errors=True)
                shutil.rmtree(scratch / f"synthetic-seed{seed}", ignore_errors=True)
            result = {
                "seeds": seeds,
                "spread": spread([run["summary"] for run in runs.values()]),
                "runs": runs,
                "machine": {"load_average_at_start": started_load},
                "quick": args.quick,
            }
            if args.out:
                path = Path(args.out)
            elif args.quick:
                path = scratch / f"evaluate_{name}.json"
            else:
                path = None
            written = write_result(f"evaluate_{name}", result, path)
            print(json.dumps(result["spread"], indent=2))
            print(f"[bench_evaluate] wrote {display_path(written)}")
    finally:
        print(f"[bench_evaluate] scratch folder (reports not kept in the repository): {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
