"""What each metric family adds: the honest protocol on one metric table with families left out.

Families (by column name, ``<level>__<metric>__<aggregate>__<variant>``):

- ``knn``: the PatchCore-style nearest-neighbour distances (``image__knn__*``, ``patch__knn__*``);
- ``feature_deviation``: the PaDiM-style per-position Mahalanobis distances
  (``image__feature_deviation_*``; only with a weighting mask, i.e. fixed position);
- ``reconstruction``: every other metric column (the VQGAN's difference image, the selected
  patches' distances, model outputs, ORB).

For every subset that keeps at least one family the table has, the composite's honest ZFN
accuracy and pooled AUROC (the same protocol, search and calibration settings as ``vqganodip
evaluate`` at the table's preset) are reported with the baselines of that run on the same
folds: the best single metric is chosen among the subset's columns, and the PatchCore-style
peer (``image__knn__max__raw``) is there only while the ``knn`` family is kept.

Input: ``metrics.parquet`` files that ``vqganodip evaluate --out`` (and bench_evaluate) write.
Run: ``.venv/bin/python bench/bench_ablation.py --table NAME=PATH [...] [--preset demo]`` ->
bench/results/ablation.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/bench_ablation.py`
    sys.path.insert(0, str(ROOT))

from bench._common import write_result  # noqa: E402
from vqganodip_pipeline import scoring  # noqa: E402
from vqganodip_pipeline.presets import get_preset  # noqa: E402
from vqganodip_pipeline.scoring.table import metric_columns  # noqa: E402

FAMILIES = ("reconstruction", "feature_deviation", "knn")


def family_of(column: str) -> str:
    """The metric family of a metric column."""
    metric = column.split("__")[1] if column.count("__") >= 3 else ""
    if metric == "knn":
        return "knn"
    if metric.startswith("feature_deviation"):
        return "feature_deviation"
    return "reconstruction"


def without(metrics: pd.DataFrame, dropped: tuple[str, ...]) -> pd.DataFrame:
    """The table with the metric columns of the ``dropped`` families removed (identity,
    baseline and capture columns stay)."""
    gone = [c for c in metric_columns(metrics) if family_of(c) in dropped]
    return metrics.drop(columns=gone)


def ablate(metrics: pd.DataFrame, preset_name: str, seed: int) -> list[dict[str, Any]]:
    preset = get_preset(preset_name)
    search = preset.search_config(seed)
    present = sorted({family_of(c) for c in metric_columns(metrics)}, key=FAMILIES.index)
    rows = []
    for k in range(len(present), 0, -1):
        for kept in itertools.combinations(present, k):
            dropped = tuple(f for f in present if f not in kept)
            table = without(metrics, dropped)
            begin = time.perf_counter()
            result = scoring.run_honest_protocol(
                table,
                classifiers=preset.classifiers,
                config=search,
                n_outer=preset.outer_folds,
            )
            board = result.leaderboard.set_index("classifier")
            composite = board.loc["composite"]
            rows.append(
                {
                    "families": list(kept),
                    "metric_columns": len(metric_columns(table)),
                    "honest_zfn_accuracy": float(composite["accuracy_zfn"]),
                    "missed": int(composite["fn_zfn"]),
                    "auroc": float(composite["auroc_pooled"]),
                    "baselines_zfn_accuracy": {
                        name: float(board.loc[name, "accuracy_zfn"])
                        for name in board.index
                        if board.loc[name, "kind"] == "baseline"
                    },
                    "seconds": time.perf_counter() - begin,
                }
            )
            print(
                f"[ablation] {'+'.join(kept)}: honest ZFN accuracy "
                f"{rows[-1]['honest_zfn_accuracy']:.3f}, AUROC {rows[-1]['auroc']:.3f}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table", action="append", required=True, help="NAME=PATH of a metrics.parquet"
    )
    parser.add_argument("--preset", default="demo", help="search settings of this preset")
    parser.add_argument("--seed", type=int, default=0, help="search and fold seed")
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/)")
    args = parser.parse_args(argv)
    tables: dict[str, Any] = {}
    for item in args.table:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--table needs NAME=PATH, got {item!r}")
        metrics = pd.read_parquet(path)
        print(f"[ablation] {name}: {len(metrics)} rows from {path}", flush=True)
        tables[name] = {
            "path": path,
            "rows": len(metrics),
            "runs": ablate(metrics, args.preset, args.seed),
        }
    payload = {
        "benchmark": __doc__.splitlines()[0],
        "protocol": f"honest protocol, {args.preset} preset search settings, seed {args.seed}",
        "tables": tables,
    }
    print(write_result("ablation", payload, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
