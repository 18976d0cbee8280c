"""Honest (nested) evaluation of the composite score under the ZFN constraint.

Outer stratified (group) folds split the table into a training part and a test part. Inside
every training part the shipped model's own recipe runs
(:func:`~vqganodip_pipeline.scoring.calibrate.fit_and_calibrate`): search and choice of the
classifier on a fit part, the split-conformal ZFN threshold on a calibration part. The baselines
are fitted on the same fit part (column choice, STD threshold) and thresholded on the same
calibration part. The test part is scored once at the end. Metrics are pooled over the outer
test parts, so the reported ZFN FNR and missed count are what the shipped recipe would have let
through on unseen images.

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
    DEFAULT_PEER_COLUMN,
    default_baselines,
)
from vqganodip_pipeline.scoring.calibrate import (
    CalibrationConfig,
    calibration_split,
    fit_and_calibrate,
)
from vqganodip_pipeline.scoring.classifiers import ClassifierSpec, resolve_classifiers
from vqganodip_pipeline.scoring.conformal import RiskStatement, conformal_threshold
from vqganodip_pipeline.scoring.report import params_json, rank_leaderboard
from vqganodip_pipeline.scoring.search import ProgressCallback, SearchConfig, SearchProgress
from vqganodip_pipeline.scoring.splits import Split, restrict, stratified_folds
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline.scoring.thresholds import (
    STD_THRESHOLD,
    accuracy_threshold,
    auroc,
    confusion_from_decisions,
    metrics_row,
)

COMPOSITE = "composite"


@dataclass(frozen=True)
class FitRecord:
    """One use of table rows: ``stage`` is "inner_search", "inner_calibration" (search and
    out-of-fold scores on the fit part), "fold_models" (the models of the out-of-fold pass,
    fitted on parts of the fit part, which the candidate ships), "baseline_fit" (fit part),
    "conformal_calibration" (rows = the calibration part scored to set the threshold) or
    "test_scoring" (rows = the outer test part scored by the fitted model). ``rows`` are
    positions in the protocol's table."""

    outer_fold: int
    stage: str
    method: str
    rows: np.ndarray


@dataclass
class OuterFold:
    """Exact rows of one outer fold (positions in the protocol's table): ``train_rows`` =
    ``fit_rows`` + ``calibration_rows``; ``inner_splits`` are the search folds of the fit part."""

    fold: int
    train_rows: np.ndarray
    fit_rows: np.ndarray
    calibration_rows: np.ndarray
    test_rows: np.ndarray
    train_image_ids: list[str]
    test_image_ids: list[str]
    inner_splits: list[Split]
    selected: str


@dataclass
class HonestResult:
    """Outcome of :func:`run_honest_protocol`.

    leaderboard: one row per method ("composite" = the recipe's composite inside each outer
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
    # Scores of different outer folds come from different models; pooled AUROC mixes them,
    # so a model whose scale moves from fold to fold can rank worse pooled than within every
    # fold (Forman and Scholz 2010), or better. Both are reported: pooled, and the mean over
    # outer folds of each fold's own AUROC.
    row["auroc_pooled"] = auroc(part["score"].to_numpy(), y)
    row["auroc_fold_mean"] = fold_mean_auroc(part)
    row["n_abnormal"] = int(y.sum())
    row["n_normal"] = int(len(y) - y.sum())
    return row


def fold_mean_auroc(part: pd.DataFrame) -> float:
    """Mean over outer folds of the AUROC of each fold's test scores (``part``: one method's
    predictions with columns ``fold``, ``score``, ``y``); folds without both classes are left
    out, NaN when none has both."""
    values = [
        auroc(fold["score"].to_numpy(), fold["y"].to_numpy())
        for _, fold in part.groupby("fold", sort=True)
        if 0 < int(fold["y"].sum()) < len(fold)
    ]
    return float(np.mean(values)) if values else float("nan")


def check_protocol(
    y: np.ndarray,
    groups: np.ndarray | None,
    config: SearchConfig,
    calibration: CalibrationConfig,
    n_outer: int,
) -> list[Split]:
    """The outer folds of the honest protocol over ``(y, groups)``, after checking that every
    outer training part fills a calibration part and the search folds of its fit part (the
    shipped model's recipe needs the same of the whole set). Raises ``ValueError`` naming the
    fold and the counts, before anything is fitted."""
    calibration_split(y, groups, calibration, config.n_splits, config.seed, "classifier set")
    outer = stratified_folds(y, groups, n_outer, config.seed, "honest protocol (outer folds)")
    for k, (train, _) in enumerate(outer):
        calibration_split(
            y[train],
            None if groups is None else groups[train],
            calibration,
            config.n_splits,
            config.seed,
            f"honest protocol, outer fold {k}",
        )
    return outer


def _risk_columns(risk: RiskStatement) -> dict[str, Any]:
    return {
        "n_abnormal_calibration": risk.n_calibration,
        "calibration_k": risk.k,
        "miss_rate_upper_bound": risk.miss_rate_upper_bound,
        "expected_miss_rate": risk.expected_miss_rate,
    }


def run_honest_protocol(
    df: pd.DataFrame,
    *,
    classifiers: Mapping[str, ClassifierSpec] | Sequence[str] | None = None,
    config: SearchConfig | None = None,
    calibration: CalibrationConfig | None = None,
    n_outer: int = 5,
    margin: float = 0.0,
    role: str | None = "classifier_set",
    mse_column: str | None = DEFAULT_MSE_COLUMN,
    golden_column: str | None = DEFAULT_GOLDEN_COLUMN,
    peer_column: str | None = DEFAULT_PEER_COLUMN,
    progress: ProgressCallback | None = None,
) -> HonestResult:
    """Nested evaluation of the composite score and the baselines on the ``role`` rows of ``df``.

    ``n_outer`` outer folds; inside each outer training part ``config.n_splits`` inner folds
    drive the search and the out-of-fold choice on the fit part of the outer training part, and
    ``calibration`` sets every threshold on its calibration part. ``margin`` (probability units)
    is subtracted from the classifiers' ZFN thresholds; the baselines' raw scores have other
    units, so their ZFN threshold is the plain conformal one. A baseline's STD threshold is the
    one maximising its accuracy on the fit part.
    """
    config = config or SearchConfig()
    calibration = calibration or CalibrationConfig()
    specs = resolve_classifiers(classifiers)
    table = training_table(df, role)
    X, y, groups, frame = table.X, table.y, table.groups, table.frame
    outer = check_protocol(y, groups, config, calibration, n_outer)
    baselines, notes = default_baselines(frame, mse_column, golden_column, peer_column)

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

        recipe = fit_and_calibrate(
            specs,
            X[train],
            y[train],
            None if groups is None else groups[train],
            config,
            calibration,
            margin,
            fold_progress,
            f"honest protocol, outer fold {k}",
        )
        fit, cal = train[recipe.fit_rows], train[recipe.calibration_rows]
        for code in specs:
            log.append(FitRecord(k, "inner_search", code, fit))
            log.append(FitRecord(k, "inner_calibration", code, fit))
            log.append(FitRecord(k, "fold_models", code, fit))
        shipped = list(recipe.calibrated)
        if not any(c is recipe.chosen for c in shipped):
            shipped.append(recipe.chosen)  # the mean of the candidates
        for calibrated in shipped:
            log.append(FitRecord(k, "conformal_calibration", calibrated.code, cal))
            log.append(FitRecord(k, "test_scoring", calibrated.code, test))
            scores = np.asarray(calibrated.pipeline.predict_proba(X[test])[:, 1], dtype=np.float64)
            candidate = calibrated.candidate
            extra = {
                "selected": calibrated.code,
                "params": params_json(calibrated.params),
                "inner_cv_accuracy": np.nan if candidate is None else candidate.search.best_score,
                "inner_oof_accuracy_zfn": (
                    np.nan if candidate is None else candidate.oof_metrics["accuracy_zfn"]
                ),
                "inner_oof_accuracy_std": (
                    np.nan if candidate is None else candidate.oof_metrics["accuracy_std"]
                ),
                **_risk_columns(calibrated.risk),
            }
            methods = [] if candidate is None else [(calibrated.code, "classifier")]
            if calibrated is recipe.chosen:
                methods.append((COMPOSITE, "selected"))
            for method, kind in methods:
                record(k, method, kind, test, scores, calibrated.threshold, STD_THRESHOLD, extra)
        for baseline in baselines:
            log.append(FitRecord(k, "baseline_fit", baseline.code, fit))
            baseline.fit(frame.iloc[fit], y[fit])
            fit_scores = baseline.score(frame.iloc[fit])
            log.append(FitRecord(k, "conformal_calibration", baseline.code, cal))
            risk = conformal_threshold(
                baseline.score(frame.iloc[cal]),
                y[cal],
                target_miss_rate=calibration.target_miss_rate,
                confidence=calibration.confidence,
                rule=calibration.rule,
            )
            log.append(FitRecord(k, "test_scoring", baseline.code, test))
            scores = baseline.score(frame.iloc[test])
            extra = {
                "selected": baseline.code,
                "params": params_json(baseline.describe()),
                **_risk_columns(risk),
            }
            record(
                k,
                baseline.code,
                "baseline",
                test,
                scores,
                risk.threshold,
                accuracy_threshold(fit_scores, y[fit]),
                extra,
            )
        folds.append(
            OuterFold(
                fold=k,
                train_rows=train,
                fit_rows=fit,
                calibration_rows=cal,
                test_rows=test,
                train_image_ids=[str(v) for v in table.image_ids[train]],
                test_image_ids=[str(v) for v in table.image_ids[test]],
                inner_splits=restrict(recipe.inner_splits, train),
                selected=recipe.chosen.code,
            )
        )

    predictions_frame = pd.concat(predictions, ignore_index=True)
    names = {code: spec.name for code, spec in specs.items()}
    names[COMPOSITE] = (
        "Composite (mean of the classifiers' fold models)"
        if config.combine == "mean"
        else "Composite (classifier chosen per fold)"
    )
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
