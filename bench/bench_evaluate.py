"""End-to-end evaluation (``vqganodip evaluate``) on the synthetic PCBA set and on DeepPCB, with
the targets of the project checked against what was measured.

* ``synthetic``: the embedded default, written here with seed 0 (300 normal, 80 abnormal,
  256 px, MVTec layout), ``demo`` preset. Seed 0 is the benchmark seed: nothing is tuned on it.
* ``deeppcb``: ../shared/data/deeppcb-trainval (skipped, with the reason in the result, when
  absent), pairs split as its README says (templates of training pairs train the VQGAN;
  evaluation pairs give a normal template and an abnormal tested image), native 640 px, no
  weighting mask (every pair is another board region), ``demo`` preset, a seeded subset of
  ``--deeppcb-pairs`` pairs to keep the run within about 20 minutes on 2 cores.

Both use the ImageNet MobileNetV2 weights from ../shared/data/weights when present.

Writes ``bench/results/evaluate_<name>.json`` (the report with its targets, plus the machine)
and, for the synthetic set, the report folder ``bench/results/evaluate_synthetic/`` (report.json,
the self-contained report.html, figures/; the metric table is not kept in the repository). The
DeepPCB report folder shows DeepPCB images, which its licence keeps out of the repository: it is
left in a temporary folder whose path the script prints. ``--quick`` runs the
tiny preset on a small synthetic set into a temporary folder (a smoke run; results are not
comparable).

Run: ``.venv/bin/python bench/bench_evaluate.py [--quick] [--only synthetic|deeppcb]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
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

ZFN = "protocols.honest.zfn.accuracy"
BASELINES = ("raw_mse", "best_single_metric", "golden_sample")


def targets(honest_zfn: float, auroc: float | None) -> tuple[dict[str, Any], ...]:
    """The issue's targets for one dataset: honest ZFN accuracy, image AUROC (when set), the
    composite ahead of every baseline, and <= 0.5 s per 256 px image end to end."""
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
    return tuple(checks)


LATENCY = {
    "name": "end-to-end seconds per 256 px image",
    "path": "seconds_per_image.end_to_end",
    "op": "<=",
    "value": 0.5,
}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    honest, paper = report["protocols"]["honest"], report["protocols"]["paper"]
    return {
        "honest_zfn_accuracy": honest["zfn"]["accuracy"],
        "honest_zfn_missed": honest["zfn"]["missed"],
        "honest_std_accuracy": honest["std"]["accuracy"],
        "paper_zfn_accuracy": paper["zfn"]["accuracy"],
        "paper_classifier": paper["classifier"],
        "auroc": report["auroc"],
        "baselines_zfn_accuracy": {
            name: value["zfn"]["accuracy"] for name, value in report["baselines"].items()
        },
        "localization_hit_rate": report["localization_hit_rate"],
        "end_to_end_s_per_image": report["seconds_per_image"]["end_to_end"],
        "targets_met": sum(t["met"] for t in report.get("targets", [])),
        "targets": len(report.get("targets", [])),
    }


def run_one(name: str, config: EvaluationConfig, out: Path) -> dict[str, Any]:
    print(f"[bench_evaluate] {name}: {config.dataset}", flush=True)
    _, html_path, report = run_evaluation(
        config, out, log=lambda message: print(message, flush=True)
    )
    return {"summary": summary(report), "report": report, "html": display_path(html_path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (minutes)")
    parser.add_argument("--only", choices=("synthetic", "deeppcb"), default=None)
    parser.add_argument("--deeppcb-pairs", type=int, default=200)
    parser.add_argument("--out", default=None, help="result file (single dataset runs)")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else ["synthetic", "deeppcb"]
    weights = str(WEIGHTS) if WEIGHTS.is_file() else None
    scratch = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    started_load = load_average()
    try:
        for name in names:
            # DeepPCB's licence keeps its images out of the repository, and the report's figures
            # show them: its report folder stays in the temporary folder (the JSON has it all)
            keep = not args.quick and name == "synthetic"
            out = RESULTS_DIR / f"evaluate_{name}" if keep else scratch / f"report_{name}"
            if name == "synthetic":
                data = scratch / "synthetic"
                n_normal, n_abnormal = (60, 20) if args.quick else (300, 80)
                write_mvtec_dataset(
                    data, n_normal=n_normal, n_abnormal=n_abnormal, size=256, seed=0
                )
                spec = {
                    "generator": "write_mvtec_dataset (deleted after the run)",
                    "n_normal": n_normal,
                    "n_abnormal": n_abnormal,
                    "size": 256,
                    "seed": 0,
                }
                config = EvaluationConfig(
                    dataset=str(data),
                    layout="mvtec",
                    preset="tiny" if args.quick else "demo",
                    size=64 if args.quick else 256,
                    weights=weights,
                    seed=0,
                    targets=(*targets(0.95, 0.99), LATENCY),
                )
            else:
                config_pairs = 24 if args.quick else args.deeppcb_pairs
                if not DEEPPCB.is_dir():
                    payload = {"skipped": f"DeepPCB not found at {DEEPPCB}"}
                    print(f"[bench_evaluate] deeppcb skipped: {payload['skipped']}")
                    write_result("evaluate_deeppcb", payload, Path(args.out) if args.out else None)
                    continue
                spec = {"path": "../shared/data/deeppcb-trainval", "pairs": config_pairs}
                config = EvaluationConfig(
                    dataset=str(DEEPPCB),
                    layout="deeppcb",
                    preset="tiny" if args.quick else "demo",
                    size=128 if args.quick else None,
                    weights=weights,
                    seed=0,
                    max_groups=config_pairs,
                    targets=targets(0.90, None),
                )
            result = run_one(name, config, out)
            result["dataset"] = spec
            if keep:
                # the metric table (about 1 MB) stays out of the repository
                (out / "metrics.parquet").unlink(missing_ok=True)
            result["machine"] = {"load_average_at_start": started_load}
            result["quick"] = args.quick
            if args.out:
                path = Path(args.out)
            elif args.quick:
                path = scratch / f"evaluate_{name}.json"
            else:
                path = None
            written = write_result(f"evaluate_{name}", result, path)
            print(json.dumps(result["summary"], indent=2))
            print(f"[bench_evaluate] wrote {display_path(written)}")
    finally:
        shutil.rmtree(scratch / "synthetic", ignore_errors=True)
        print(f"[bench_evaluate] scratch folder (reports not kept in the repository): {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
