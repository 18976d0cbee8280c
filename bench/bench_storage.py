"""Benchmark of the composite model's stored format: the JSON + Parquet + skops bundle that loads
only trusted types, against pickle (the format it replaced, which runs whatever a file says).

For each classifier a composite model is fitted on a synthetic metric table (``bench_scoring``'s
model of the pipeline's table) through ``workflow.scoring.score_metric_table`` (the asset's own
step, both protocols off), and the bundle the ``composite_score_model`` asset stores is written
and read back: median seconds of ``bundle_to_bytes`` / ``bytes_to_bundle`` against
``pickle.dumps`` / ``pickle.loads`` of the same bundle in the same process, and both sizes.
The load also checks that the loaded model scores the table exactly as the fitted one.

Run: ``.venv/bin/python bench/bench_storage.py [--quick] [--out PATH]`` -> prints a table, writes
``bench/results/storage.json`` (``storage_quick.json`` with ``--quick``: LR and RF only, fewer
repeats).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import display_path, load_average, median_time, write_result  # noqa: E402
from bench.bench_scoring import synthetic_metric_table  # noqa: E402
from vqganodip_pipeline.scoring.search import SearchConfig  # noqa: E402
from vqganodip_pipeline.workflow.scoring import (  # noqa: E402
    bundle_to_bytes,
    bytes_to_bundle,
    score_metric_table,
)

CLASSIFIERS = ("lr", "rf", "et", "gbc", "xgb", "lgbm", "knn")


def measure(code: str, repeats: int, seed: int) -> dict[str, Any]:
    table = synthetic_metric_table(n_normal=120, n_abnormal=60, q=50, p=30, seed=seed)
    outcome = score_metric_table(
        table,
        classifiers=(code,),
        search=SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=seed),
        outer_folds=3,
        paper_protocol=False,
        honest_protocol=False,
        log=lambda message: None,
    )
    bundle = {"model": outcome.shipped, "outcome": outcome, "trained_on": list(table["image_id"])}
    data = bundle_to_bytes(bundle)
    pickled = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    store_s, _ = median_time(lambda _: bundle_to_bytes(bundle), repeats)
    load_s, loaded = median_time(lambda _: bytes_to_bundle(data), repeats)
    pickle_store_s, _ = median_time(
        lambda _: pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL), repeats
    )
    pickle_load_s, _ = median_time(lambda _: pickle.loads(pickled), repeats)
    expected = outcome.shipped.score(table)
    same = bool(np.array_equal(loaded[0]["model"].score(table), expected))
    return {
        "classifier": code,
        "bundle_bytes": len(data),
        "pickle_bytes": len(pickled),
        "store_s": store_s,
        "load_s": load_s,
        "pickle_store_s": pickle_store_s,
        "pickle_load_s": pickle_load_s,
        "load_ratio_vs_pickle": load_s / pickle_load_s,
        "store_ratio_vs_pickle": store_s / pickle_store_s,
        "size_ratio_vs_pickle": len(data) / len(pickled),
        "scores_identical_after_load": same,
        "deterministic_bytes": bundle_to_bytes(bundle) == data,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="LR and RF, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    codes = ("lr", "rf") if args.quick else CLASSIFIERS
    repeats = args.repeats or (3 if args.quick else 7)
    load_at_start = load_average()
    rows = [measure(code, repeats, args.seed) for code in codes]
    print(
        f"{'classifier':10s} {'bundle KiB':>10s} {'pickle KiB':>10s} {'store ms':>9s} "
        f"{'load ms':>8s} {'pickle load ms':>14s} {'load x':>7s} same"
    )
    for row in rows:
        print(
            f"{row['classifier']:10s} {row['bundle_bytes'] / 1024:10.1f} "
            f"{row['pickle_bytes'] / 1024:10.1f} {row['store_s'] * 1e3:9.1f} "
            f"{row['load_s'] * 1e3:8.1f} {row['pickle_load_s'] * 1e3:14.1f} "
            f"{row['load_ratio_vs_pickle']:7.1f} {row['scores_identical_after_load']}"
        )
    payload = {
        "protocol": "composite model fitted by score_metric_table on bench_scoring's synthetic "
        "metric table (120 normal + 60 abnormal, q=50, p=30), 2 search iterations; median of "
        f"{repeats} in-process repeats; pickle of the same bundle as the reference",
        "rows": rows,
        "machine": {"load_average_at_start": load_at_start},
    }
    name = "storage_quick" if args.quick and args.out is None else "storage"
    out = write_result(name, payload, args.out, packages=("skops",))
    print(f"wrote {display_path(out)}")
    return payload


if __name__ == "__main__":
    main()
