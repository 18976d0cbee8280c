"""Honest (nested) evaluation of the composite score under the ZFN constraint.

Outer stratified (group) folds split the table into a training part and a test part. Everything
that is learnt — the search of every classifier, the choice among them, the ZFN threshold (from
inner out-of-fold scores, :mod:`~vqganodip_pipeline.scoring.calibrate`) and the baselines'
column choice and thresholds — uses the training part only; the test part is scored once at the
end. Metrics are pooled over the outer test parts, so the reported ZFN FNR and missed count are
what a deployed threshold would have let through on unseen images.

Every fit and every scoring call is recorded in :attr:`HonestResult.fit_log` with the table row
positions it was given, which makes "the outer test part was never seen" checkable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline.scoring.baselines import (
    DEFAULT_GOLDEN_COLUMN,
    DEFAULT_MSE_COLUMN,
    default_baselines,
)
from vqganodip_pipeline.scoring.calibrate import Candidate, calibrate_candidates, choose
from vqganodip_pipeline.scoring.classifiers import (
    ClassifierSpec,
    build_pipeline,
    resolve_classifiers,
)
from vqganodip_pipeline.scoring.report import params_json, rank_leaderboard
from vqganodip_pipeline.scoring.search import (
    ProgressCallback,
    SearchConfig,
    SearchProgress,
    quiet_fitting,
)
from vqganodip_pipeline.scoring.splits import Split, check_classes, restrict, stratified_folds
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline.scoring.thresholds import (
    STD_THRESHOLD,
    accuracy_threshold,
    auroc,
    confusion_from_decisions,
    metrics_row,
    miss_probability_bound,
    zfn_threshold,
)

COMPOSITE = "composite"


@dataclass(frozen=True)
class FitRecord:
    """One use of table rows: ``stage`` is "inner_search", "inner_calibration", "refit",
    "baseline_fit" (rows = the outer training part given to it) or "test_scoring" (rows = the
    outer test part scored by the fitted model). ``rows`` are positions in the protocol's table."""

    outer_fold: int
    stage: str
    method: str
    rows: np.ndarray


@dataclass
class OuterFold:
    """Exact rows of one outer fold; ``inner_splits`` are positions in the protocol's table."""

    fold: int
    train_rows: np.ndarray
    test_rows: np.ndarray
    train_image_ids: list[str]
    test_image_ids: list[str]
    inner_splits: list[Split]
    selected: str


@dataclass
class HonestResult:
    """Outcome of :func:`run_honest_protocol`.

    leaderboard: one row per method ("composite" = the classifier chosen inside each outer
        fold, each fixed classifier, each baseline), metrics pooled over the outer test parts,
        best first (ZFN accuracy, then STD accuracy, then name).
    fold_details: one row per (outer fold, method): chosen classifier and parameters, thresholds,
        calibration counts, and the test-part metrics.
    predictions: one row per (image, method): outer fold, score, thresholds, decisions.
    folds / fit_log: the exact rows of each outer fold and of each fit (see :class:`FitRecord`).
    notes: baselines skipped and why.
    """

    leaderboard: pd.DataFrame
    fold_details: pd.DataFrame
    predictions: pd.DataFrame
    folds: list[OuterFold]
    fit_log: list[FitRecord]
    notes: list[str]
    image_ids: np.ndarray
    y: np.ndarray
    margin: float
    config: SearchConfig
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _pooled_row(method: str, name: str, kind: str, part: pd.DataFrame) -> dict[str, Any]:
    y = part["y"].to_numpy()
    row: dict[str, Any] = {"classifier": method, "name": name, "kind": kind}
    for suffix in ("std", "zfn"):
        decisions = part[f"abnormal_{suffix}"].to_numpy()
        for key, value in confusion_from_decisions(decisions, y).items():
            row[f"{key}_{suffix}"] = value
    # Scores of different outer folds come from different models; pooled AUROC mixes them.
    row["auroc_pooled"] = auroc(part["score"].to_numpy(), y)
    row["n_abnormal"] = int(y.sum())
    row["n_normal"] = int(len(y) - y.sum())
    return row


def run_honest_protocol(
    df: pd.DataFrame,
    *,
    classifiers: Mapping[str, ClassifierSpec] | Sequence[str] | None = None,
    config: SearchConfig | None = None,
    n_outer: int = 5,
    margin: float = 0.0,
    role: str | None = "classifier_set",
    mse_column: str | None = DEFAULT_MSE_COLUMN,
    golden_column: str | None = DEFAULT_GOLDEN_COLUMN,
    progress: ProgressCallback | None = None,
) -> HonestResult:
    """Nested evaluation of the composite score and the baselines on the ``role`` rows of ``df``.

    ``n_outer`` outer folds; inside each outer training part ``config.n_splits`` inner folds
    drive the search and the out-of-fold calibration. ``margin`` (probability units) is
    subtracted from the classifiers' ZFN thresholds; the baselines' raw scores have other units,
    so their ZFN threshold is the plain training minimum. A baseline's STD threshold is the one
    maximising its training accuracy.
    """
    config = config or SearchConfig()
    specs = resolve_classifiers(classifiers)
    table = training_table(df, role)
    X, y, groups, frame = table.X, table.y, table.groups, table.frame
    outer = stratified_folds(y, groups, n_outer, config.seed, "honest protocol (outer folds)")
    for k, (train, _) in enumerate(outer):
        check_classes(
            y[train], config.n_splits, f"honest protocol, training part of outer fold {k}"
        )
    baselines, notes = default_baselines(frame, mse_column, golden_column)

    folds: list[OuterFold] = []
    log: list[FitRecord] = []
    details: list[dict[str, Any]] = []
    predictions: list[pd.DataFrame] = []
    start = time.perf_counter()

    def record(
        fold: int,
        method: str,
        kind: str,
        test: np.ndarray,
        scores: np.ndarray,
        threshold_zfn: float,
        threshold_std: float,
        extra: dict[str, Any],
    ) -> None:
        y_test = y[test]
        detail: dict[str, Any] = {"fold": fold, "method": method, "kind": kind, **extra}
        detail.update(metrics_row(scores, y_test, threshold_zfn, threshold_std))
        details.append(detail)
        predictions.append(
            pd.DataFrame(
                {
                    "image_id": table.image_ids[test],
                    "row": test,
                    "fold": fold,
                    "method": method,
                    "y": y_test,
                    "score": scores,
                    "threshold_zfn": threshold_zfn,
                    "threshold_std": threshold_std,
                    "abnormal_zfn": scores >= threshold_zfn,
                    "abnormal_std": scores >= threshold_std,
                }
            )
        )

    for k, (train, test) in enumerate(outer):
        X_train, y_train = X[train], y[train]
        inner_local = stratified_folds(
            y_train,
            None if groups is None else groups[train],
            config.n_splits,
            config.seed,
            f"honest protocol, inner folds of outer fold {k}",
        )
        for code in specs:
            log.append(FitRecord(k, "inner_search", code, train))
            log.append(FitRecord(k, "inner_calibration", code, train))

        def fold_progress(event: SearchProgress, k: int = k) -> None:
            if progress is not None:
                progress(
                    SearchProgress(
                        stage=f"honest outer fold {k + 1}/{n_outer}",
                        classifier=event.classifier,
                        done=k * len(specs) + event.done,
                        total=n_outer * len(specs),
                        best_score=event.best_score,
                        elapsed_s=time.perf_counter() - start,
                    )
                )

        candidates = calibrate_candidates(
            specs, X_train, y_train, inner_local, config, margin, fold_progress, "inner"
        )
        chosen = choose(candidates)
        n_abnormal_cal = int(y_train.sum())
        candidate: Candidate
        for candidate in candidates:
            pipeline = build_pipeline(
                candidate.spec,
                config.seed,
                candidate.smote,
                config.correlation_threshold,
                candidate.params,
                config.max_features,
            )
            log.append(FitRecord(k, "refit", candidate.code, train))
            with quiet_fitting():
                pipeline.fit(X_train, y_train)
            log.append(FitRecord(k, "test_scoring", candidate.code, test))
            scores = np.asarray(pipeline.predict_proba(X[test])[:, 1], dtype=np.float64)
            extra = {
                "selected": candidate.code,
                "params": params_json(candidate.params),
                "inner_cv_accuracy": candidate.search.best_score,
                "inner_oof_accuracy_zfn": candidate.oof_metrics["accuracy_zfn"],
                "inner_oof_accuracy_std": candidate.oof_metrics["accuracy_std"],
                "n_abnormal_calibration": n_abnormal_cal,
                "miss_probability_bound": miss_probability_bound(n_abnormal_cal),
            }
            record(
                k,
                candidate.code,
                "classifier",
                test,
                scores,
                candidate.threshold,
                STD_THRESHOLD,
                extra,
            )
            if candidate is chosen:
                record(
                    k,
                    COMPOSITE,
                    "selected",
                    test,
                    scores,
                    candidate.threshold,
                    STD_THRESHOLD,
                    extra,
                )
        for baseline in baselines:
            log.append(FitRecord(k, "baseline_fit", baseline.code, train))
            baseline.fit(frame.iloc[train], y_train)
            train_scores = baseline.score(frame.iloc[train])
            log.append(FitRecord(k, "test_scoring", baseline.code, test))
            scores = baseline.score(frame.iloc[test])
            extra = {
                "selected": baseline.code,
                "params": params_json(baseline.describe()),
                "n_abnormal_calibration": n_abnormal_cal,
                "miss_probability_bound": miss_probability_bound(n_abnormal_cal),
            }
            record(
                k,
                baseline.code,
                "baseline",
                test,
                scores,
                zfn_threshold(train_scores, y_train),
                accuracy_threshold(train_scores, y_train),
                extra,
            )
        folds.append(
            OuterFold(
                fold=k,
                train_rows=train,
                test_rows=test,
                train_image_ids=[str(v) for v in table.image_ids[train]],
                test_image_ids=[str(v) for v in table.image_ids[test]],
                inner_splits=restrict(inner_local, train),
                selected=chosen.code,
            )
        )

    predictions_frame = pd.concat(predictions, ignore_index=True)
    names = {code: spec.name for code, spec in specs.items()}
    names[COMPOSITE] = "Composite (chosen per fold)"
    kinds = {COMPOSITE: "selected", **dict.fromkeys(specs, "classifier")}
    for baseline in baselines:
        names[baseline.code] = baseline.code
        kinds[baseline.code] = "baseline"
    rows = [
        _pooled_row(str(method), names[str(method)], kinds[str(method)], part)
        for method, part in predictions_frame.groupby("method", sort=False)
    ]
    return HonestResult(
        leaderboard=rank_leaderboard(rows),
        fold_details=pd.DataFrame(details),
        predictions=predictions_frame,
        folds=folds,
        fit_log=log,
        notes=notes,
        image_ids=table.image_ids,
        y=y,
        margin=margin,
        config=config,
        elapsed_s=time.perf_counter() - start,
        extra={"selected_per_fold": [fold.selected for fold in folds]},
    )
