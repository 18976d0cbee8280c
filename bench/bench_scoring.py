"""Benchmark of the composite-score step: the paper's protocol at full size on this CPU.

The paper protocol (randomized search with 500 iterations and 5-fold stratified CV, then
leave-one-out with the best parameters, for all twelve classifiers) on a 348-row table
(174 normal + 174 abnormal) of ~300 metric columns. Writes bench/results/scoring.json with the
wall time per classifier (search, leave-one-out) and in total, the leaderboard (paper Table 1
layout), machine info and, when fewer than 500 iterations were run, an extrapolation to 500
iterations that is labelled as such.

The table is synthetic unless ``--table PATH.parquet`` gives a real metric table. How the
synthetic table is made (see :func:`synthetic_metric_table`): per image, latent factors —
defect severity (0 for normal units; log-normal(0.4, 0.5) for abnormal ones, with 5 % "hard"
defects at half strength), number of defect patches (3-40 of q = 250), normal-unit nuisance (gamma;
reflections, shifts) and reconstruction quality (normal). For each of 18 patch distances and each
of raw / weighted difference images, q = 250 patch values are drawn log-normally around the
image's nuisance and quality, defect patches are boosted by the severity, and the seven
aggregates (sum, max, min, mean, q1, median, q3) are computed from the values, so sum and mean
are exactly proportional and other aggregates strongly correlated, as in a real table; the
weighting mask damps the nuisance (x 0.35) more than the defects (x 0.8). Pixel level: the
p = 100 highest differences, aggregated the same way. Image level: MSE, perceptual, quantization,
discriminator on x and x_hat, ORB matches and the seven aggregates of the whole difference image.
Plus a constant column (the patch count q) and ``baseline__golden_mse__value__raw``.

``--protocol composite`` times what a training run does instead: the shipped composite fit
plus the honest protocol (fit_composite_model + run_honest_protocol through
``workflow.scoring.score_metric_table``, paper protocol off) at the demo preset's settings (10
candidates, 5 folds, 5 outer folds, twelve classifiers, max_features "auto") on a 588-row
table of ~440 metrics (392 normal + 196 abnormal, all three difference images), twice in the
same process: with the preprocessing refitted in every fit (the reference, the code before the
preprocessing cache) and with it fitted once per fold. Both must choose the same classifiers and
give the same figures; the file records the times, their ratio and both leaderboards.

Usage:
    python bench/bench_scoring.py                       # 500 iterations (hours on 2 cores)
    python bench/bench_scoring.py --protocol composite  # -> scoring_composite.json
    python bench/bench_scoring.py --iterations 10       # + extrapolation to 500
    python bench/bench_scoring.py --quick               # smoke run -> scoring_quick.json
    python bench/bench_scoring.py --table metrics.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python bench/bench_scoring.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import display_path, load_average, write_result  # noqa: E402
from vqganodip_pipeline.scoring.classifiers import (  # noqa: E402
    PREPROCESS_STEP,
    build_pipeline,
    classifier_registry,
)
from vqganodip_pipeline.scoring.paper import run_paper_protocol  # noqa: E402
from vqganodip_pipeline.scoring.report import table1  # noqa: E402
from vqganodip_pipeline.scoring.search import SearchConfig, SearchProgress  # noqa: E402
from vqganodip_pipeline.scoring.table import training_table  # noqa: E402

PAPER_ITERATIONS = 500
AGGREGATES = ("sum", "max", "min", "mean", "q1", "median", "q3")
PATCH_DISTANCES = (
    "fid", "ssim", "braycurtis", "canberra", "euclidean", "cosine", "wasserstein", "hamming",
    "minkowski", "jensenshannon", "correlation", "chebyshev", "cityblock", "sqeuclidean", "mse",
    "psnr", "kl", "histogram",
)  # fmt: skip
SIMILARITIES = {"ssim", "psnr", "correlation"}  # higher = more alike: anomalies lower them
IMAGE_METRICS = ("mse", "perceptual", "quantization", "disc_x", "disc_xhat", "orb_matches")
# Defect severity: log-normal(SEVERITY_MU, 0.5); a HARD_FRACTION of the defects are "hard"
# (tiny: HARD_STRENGTH x the severity). These decide how far ZFN accuracy falls below STD.
SEVERITY_MU = 0.4
HARD_FRACTION = 0.05
HARD_STRENGTH = 0.5
# difference image -> (nuisance, defect) scale: the weighting mask damps the nuisance more than
# the defects; the per-position standardisation a little less so
WEIGHTINGS = {"raw": (1.0, 1.0), "weighted": (0.35, 0.8), "standardized": (0.45, 0.85)}
DEFECT_TYPES = ("missing", "bridge", "shift", "tombstone", "insufficient_solder", "polarity")


def _aggregate(values: np.ndarray) -> dict[str, np.ndarray]:
    """Seven aggregates over the last axis."""
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75], axis=-1)
    return {
        "sum": values.sum(axis=-1),
        "max": values.max(axis=-1),
        "min": values.min(axis=-1),
        "mean": values.mean(axis=-1),
        "q1": q1,
        "median": median,
        "q3": q3,
    }


def synthetic_metric_table(
    n_normal: int = 174,
    n_abnormal: int = 174,
    q: int = 250,
    p: int = 100,
    seed: int = 0,
    severity_mu: float = SEVERITY_MU,
    hard_fraction: float = HARD_FRACTION,
    hard_strength: float = HARD_STRENGTH,
    weightings: tuple[str, ...] = ("raw", "weighted"),
) -> pd.DataFrame:
    """A metric table shaped like the pipeline's (see the module docstring for the model).

    ``weightings``: the difference images the families are computed on, of ``WEIGHTINGS``
    (146 columns each); all three give a table of the pipeline's width (~440 columns)."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_abnormal
    y = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_abnormal, dtype=int)]
    severity = np.where(y == 1, rng.lognormal(severity_mu, 0.5, n), 0.0)
    hard = (y == 1) & (rng.random(n) < hard_fraction)
    severity[hard] *= hard_strength
    n_defect = np.where(y == 1, rng.integers(3, 41, n), 0)
    nuisance = rng.gamma(2.0, 0.5, n)
    quality = rng.normal(size=n)
    columns: dict[str, np.ndarray] = {}

    def patch_like(
        sensitivity: float,
        spread: float,
        nuisance_scale: float,
        defect_scale: float,
        quality_load: float,
        count: int,
    ) -> np.ndarray:
        base = np.exp(quality_load * quality + 0.6 * nuisance_scale * nuisance)[:, None]
        values = base * rng.lognormal(0.0, spread, (n, count))
        boost = np.exp(sensitivity * defect_scale * severity)
        defect = np.arange(count)[None, :] < np.minimum(n_defect, count)[:, None]
        return np.where(defect, values * boost[:, None], values)

    for weighting in weightings:
        nuisance_scale, defect_scale = WEIGHTINGS[weighting]
        # Image level.
        for name in IMAGE_METRICS:
            load = rng.uniform(0.05, 0.4)
            value = np.exp(
                load * severity + 0.5 * nuisance_scale * nuisance + 0.3 * quality
                + 0.3 * rng.normal(size=n)
            )  # fmt: skip
            if name == "orb_matches":
                value = np.round(400.0 / value)
            elif name.startswith("disc"):
                value = np.log(value)
            columns[f"image__{name}__value__{weighting}"] = value
        for agg, values in _aggregate(
            patch_like(0.3, 0.8, nuisance_scale, defect_scale, 0.3, 400)
        ).items():
            columns[f"image__delta__{agg}__{weighting}"] = values
        # Pixel level: the p highest differences.
        pixels = np.sort(patch_like(1.0, 0.5, nuisance_scale, defect_scale, 0.2, 3 * p), axis=1)
        for agg, values in _aggregate(pixels[:, -p:]).items():
            columns[f"pixel__top_p__{agg}__{weighting}"] = values
        # Patch level: the q retained patches.
        for distance in PATCH_DISTANCES:
            sensitivity = rng.uniform(0.3, 1.5) * (1.4 if distance == "fid" else 1.0)
            values = patch_like(
                sensitivity,
                rng.uniform(0.3, 0.9),
                nuisance_scale,
                defect_scale,
                rng.uniform(0.0, 0.4),
                q,
            )
            if distance in SIMILARITIES:
                values = 1.0 / (1.0 + values)
            for agg, aggregated in _aggregate(values).items():
                columns[f"patch__{distance}__{agg}__{weighting}"] = aggregated
    columns["patch__count__value__raw"] = np.full(n, float(q))
    golden = np.exp(0.3 * severity + 0.8 * nuisance + 0.4 * rng.normal(size=n))
    ids = [f"synth{i:04d}" for i in range(n)]
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "label": np.where(y == 1, "abnormal", "normal"),
            "defect_type": np.where(y == 1, rng.choice(DEFECT_TYPES, n), "good"),
            "role": "classifier_set",
            "group_id": ids,
            **{name: values.astype(np.float64) for name, values in columns.items()},
            "baseline__golden_mse__value__raw": golden,
        }
    )
    return frame


def composite_protocol(table: pd.DataFrame, n_jobs: int, seed: int) -> dict[str, Any]:
    """Shipped fit + honest protocol at the demo preset's settings, without then with the
    preprocessing cache (see the module docstring)."""
    from vqganodip_pipeline.presets import get_preset
    from vqganodip_pipeline.workflow.scoring import score_metric_table

    preset = get_preset("demo")
    runs: dict[str, Any] = {}
    for name, cache in (("reference_refit_every_fit", False), ("cached_once_per_fold", True)):
        config = preset.search_config(seed, n_jobs=n_jobs, cache_preprocessing=cache)
        start = time.perf_counter()
        outcome = score_metric_table(
            table,
            classifiers=preset.classifiers,
            search=config,
            outer_folds=preset.outer_folds,
            paper_protocol=False,
            log=lambda line, name=name: print(f"[{name}] {line}", flush=True),
            progress=lambda event, name=name: print(f"[{name}] {event}", flush=True),
        )
        honest = outcome.honest_leaderboard
        runs[name] = {
            "total_s": time.perf_counter() - start,
            "seconds": outcome.seconds,
            "shipped_classifier": outcome.shipped.classifier,
            "shipped_threshold": float(outcome.shipped.threshold),
            "honest_leaderboard": json.loads(honest.to_json(orient="records")),
        }
    reference, cached = runs["reference_refit_every_fit"], runs["cached_once_per_fold"]
    same = (
        reference["shipped_classifier"] == cached["shipped_classifier"]
        and reference["shipped_threshold"] == cached["shipped_threshold"]
        and reference["honest_leaderboard"] == cached["honest_leaderboard"]
    )
    return {
        "settings": {
            "preset": "demo",
            "search_iterations": preset.search_iterations,
            "search_folds": preset.search_folds,
            "outer_folds": preset.outer_folds,
            "classifiers": "all twelve" if preset.classifiers is None else preset.classifiers,
            "max_features": preset.max_features,
            "n_jobs": n_jobs,
            "paper_protocol": False,
        },
        "runs": runs,
        "cached_over_reference": cached["total_s"] / reference["total_s"],
        "same_choices_and_figures": same,
        "target_s": 300.0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"search iterations per classifier (default {PAPER_ITERATIONS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 iterations, 60 + 60 rows, ensembles <= 50 estimators",
    )
    parser.add_argument("--table", type=Path, default=None, help="metric table (.parquet)")
    parser.add_argument(
        "--protocol",
        choices=("paper", "composite"),
        default="paper",
        help="paper: the paper protocol at full size; composite: shipped fit + honest protocol",
    )
    parser.add_argument("--classifiers", default=None, help="comma-separated codes (default all)")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/scoring.json)"
    )
    args = parser.parse_args(argv)
    if args.protocol == "composite":
        return _main_composite(args)

    iterations = args.iterations or (3 if args.quick else PAPER_ITERATIONS)
    max_estimators = 50 if args.quick else 300
    if args.table is not None:
        table = pd.read_parquet(args.table)
        source: dict[str, Any] = {"kind": "parquet", "path": str(args.table)}
    else:
        n_side = 60 if args.quick else 174
        table = synthetic_metric_table(n_side, n_side, seed=args.seed)
        source = {
            "kind": "synthetic",
            "generator": "bench.bench_scoring.synthetic_metric_table",
            "n_normal": n_side,
            "n_abnormal": n_side,
            "seed": args.seed,
        }
    registry = classifier_registry(max_estimators=max_estimators)
    if args.classifiers:
        registry = {code: registry[code] for code in args.classifiers.split(",")}
    config = SearchConfig(n_iter=iterations, n_splits=5, n_jobs=args.n_jobs, seed=args.seed)

    data = training_table(table)
    # Reference in the same process: one fit of each pipeline with default parameters.
    reference: dict[str, float] = {}
    for code, spec in registry.items():
        start = time.perf_counter()
        build_pipeline(spec, args.seed).fit(data.X, data.y)
        reference[code] = time.perf_counter() - start
    kept = build_pipeline(registry[next(iter(registry))], args.seed).named_steps[PREPROCESS_STEP]
    n_kept = int(kept.fit(data.X).support_.sum())

    def progress(event: SearchProgress) -> None:
        print(
            f"[{event.done}/{event.total}] {event.classifier}: best CV accuracy "
            f"{event.best_score:.4f}, elapsed {event.elapsed_s:.1f} s",
            flush=True,
        )

    load_at_start = load_average()  # write_result records the load at the end
    start = time.perf_counter()
    result = run_paper_protocol(table, classifiers=registry, config=config, progress=progress)
    total_s = time.perf_counter() - start

    n_rows = len(data.y)
    per_classifier = {}
    for code, timing in result.timings_s.items():
        search_fits = iterations * config.n_splits
        loo_fits = len(result.loo_splits)
        per_classifier[code] = {
            **timing,
            "total_s": timing["search_s"] + timing["loo_s"],
            "search_fits": search_fits,
            "loo_fits": loo_fits,
            "s_per_search_fit_wall": timing["search_s"] / search_fits,
            "s_per_loo_fit_wall": timing["loo_s"] / loo_fits,
            "reference_default_fit_s": reference[code],
            "search_s_over_reference": timing["search_s"] / reference[code],
        }
    report: dict[str, Any] = {
        "benchmark": "scoring: paper protocol (randomized search + leave-one-out, 12 classifiers)",
        "quick": args.quick,
        "machine": {"load_average_at_start": load_at_start},
        "n_jobs": args.n_jobs,
        "table": {
            **source,
            "rows": n_rows,
            "metric_columns": len(data.columns),
            "kept_after_preprocessing_all_rows": n_kept,
        },
        "config": {**config.to_dict(), "max_estimators": max_estimators},
        "measured": {
            "iterations": iterations,
            "total_s": total_s,
            "per_classifier": per_classifier,
        },
        "leaderboard": json.loads(result.leaderboard.to_json(orient="records")),
        "table1_percent": {
            name: {" ".join(col): float(value) for col, value in row.items()}
            for name, row in table1(result.leaderboard).iterrows()
        },
        "best": result.best,
    }
    if iterations < PAPER_ITERATIONS:
        # Search time grows linearly with the candidates; leave-one-out does not depend on them.
        factor = PAPER_ITERATIONS / iterations
        report["extrapolated_to_500_iterations"] = {
            "note": (
                f"EXTRAPOLATION, not measured: search_s x {factor:g} + loo_s, from "
                f"{iterations} iterations; the best parameters (and so the leave-one-out "
                "cost) of a 500-iteration search differ, and the fixed start-up cost of each "
                "search (parallel workers) is multiplied too, which overstates fast classifiers"
            ),
            "per_classifier_s": {
                code: t["search_s"] * factor + t["loo_s"] for code, t in result.timings_s.items()
            },
            "total_s": sum(t["search_s"] * factor + t["loo_s"] for t in result.timings_s.values()),
        }
    stem = "scoring_quick" if args.quick else "scoring"
    out = write_result(stem, report, path=args.out, packages=("imbalanced-learn",))
    print(table1(result.leaderboard).to_string())
    print(f"total {total_s:.1f} s for {iterations} iterations; written to {display_path(out)}")
    if "extrapolated_to_500_iterations" in report:
        hours = report["extrapolated_to_500_iterations"]["total_s"] / 3600
        print(f"extrapolated to 500 iterations (not measured): {hours:.2f} h")
    return json.loads(out.read_text())


def _main_composite(args: argparse.Namespace) -> dict[str, Any]:
    if args.table is not None:
        table = pd.read_parquet(args.table)
        source: dict[str, Any] = {"kind": "parquet", "path": str(args.table)}
    else:
        weightings = tuple(WEIGHTINGS)
        table = synthetic_metric_table(392, 196, seed=args.seed, weightings=weightings)
        source = {
            "kind": "synthetic",
            "generator": "bench.bench_scoring.synthetic_metric_table",
            "n_normal": 392,
            "n_abnormal": 196,
            "weightings": list(weightings),
            "seed": args.seed,
        }
    data = training_table(table)
    load_at_start = load_average()
    measured = composite_protocol(table, args.n_jobs, args.seed)
    report = {
        "benchmark": "scoring: shipped composite fit + honest protocol, demo preset settings",
        "machine": {"load_average_at_start": load_at_start},
        "table": {**source, "rows": len(data.y), "metric_columns": len(data.columns)},
        **measured,
    }
    out = write_result("scoring_composite", report, path=args.out, packages=("imbalanced-learn",))
    for name, run in measured["runs"].items():
        print(f"{name}: {run['total_s']:.1f} s, shipped {run['shipped_classifier']}")
    print(
        f"cached / reference: {measured['cached_over_reference']:.3f}; same choices and "
        f"figures: {measured['same_choices_and_figures']}; written to {display_path(out)}"
    )
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()
