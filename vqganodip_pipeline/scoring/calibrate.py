"""Model selection and split-conformal ZFN calibration on one labelled set.

The recipe (:func:`fit_and_calibrate`), used for the shipped model on the classifier set and by
the honest protocol on every outer training part:

1. split the rows into a *fit part* and a *calibration part* (stratified, group-aware, seeded:
   one of ``round(1 / fraction)`` folds is the calibration part);
2. on the fit part only: for every candidate classifier, randomized search with CV, out-of-fold
   abnormal probabilities with the best parameters on the same folds (their fitted fold models
   are kept), an out-of-fold ZFN threshold (the lowest out-of-fold abnormal score, minus
   ``margin``);
3. every candidate ships its fold models (:class:`~vqganodip_pipeline.scoring.ensemble.
   MeanProbability` of them, no refit), and the composite is ``SearchConfig.combine``:
   ``"mean"`` (default) the mean probability of every candidate's fold models, ``"best"`` (the
   paper's choice) the candidate with the best out-of-fold ZFN accuracy (ties: higher
   out-of-fold STD accuracy, then code);
4. the threshold of each candidate and of the composite is read off *its own* scores of the
   abnormal calibration images (:func:`~vqganodip_pipeline.scoring.conformal.
   conformal_threshold`), which neither it, its search nor the choice ever saw: a split-conformal
   threshold with a valid statement of risk (``CalibrationConfig.rule``: lowered to just above
   the highest normal calibration score when that is lower, or the paper's lowest abnormal
   score alone).

Why the mean: on the development tables (``bench/bench_choice.py``, synthetic seed 7) the choice
of one refitted candidate on out-of-fold evidence gave honest ZFN accuracy 0.842, because in one
outer fold a candidate with saturated scores (AdaBoost) was chosen and one hard calibration
defect dragged its threshold to the bottom; the mean of the fold models gave 0.958.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline

from vqganodip_pipeline.scoring.classifiers import ClassifierSpec, plan_smote
from vqganodip_pipeline.scoring.conformal import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RULE,
    THRESHOLD_RULES,
    RiskStatement,
    conformal_threshold,
)
from vqganodip_pipeline.scoring.ensemble import MeanProbability
from vqganodip_pipeline.scoring.search import (
    ClassifierFitError,
    ProgressCallback,
    SearchConfig,
    SearchProgress,
    SearchResult,
    out_of_fold_models,
    preprocessing_cache,
    search_classifier,
)
from vqganodip_pipeline.scoring.splits import Split, check_classes, restrict, stratified_folds
from vqganodip_pipeline.scoring.thresholds import metrics_row, zfn_threshold

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One classifier searched and calibrated on a training set.

    oof_scores: out-of-fold abnormal probabilities (aligned with the training rows);
    threshold: ZFN threshold from them (margin subtracted); oof_metrics: metrics_row of the
    out-of-fold scores at 0.5 and at ``threshold``; fold_models: the pipelines fitted on the
    out-of-fold pass's training parts (split order).
    """

    code: str
    spec: ClassifierSpec
    search: SearchResult
    oof_scores: np.ndarray
    threshold: float
    oof_metrics: dict[str, Any]
    fold_models: list[Pipeline] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return self.search.best_params

    def shipped(self) -> MeanProbability:
        """What this candidate ships: the mean probability of its fold models."""
        return MeanProbability(self.fold_models, [self.code] * len(self.fold_models))


def calibrate_candidates(
    specs: Mapping[str, ClassifierSpec],
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    config: SearchConfig,
    margin: float = 0.0,
    progress: ProgressCallback | None = None,
    stage: str = "calibrate",
    columns: Sequence[str] | None = None,
) -> list[Candidate]:
    """Search and calibrate every classifier of ``specs`` on ``(X, y)`` with ``splits``, keeping
    each one's fold models (``columns``: the metric names of ``X``, which the kept models then
    name). A classifier that cannot be fitted on these rows is skipped with a warning; none left
    is an error."""
    smote_cv = plan_smote(
        y,
        [train for train, _ in splits],
        config.smote_below,
        config.smote_ratio,
        config.smote_k_neighbors,
    )
    candidates: list[Candidate] = []
    start = time.perf_counter()
    with preprocessing_cache(config) as memory:
        for done, (code, spec) in enumerate(specs.items(), start=1):
            try:
                search = search_classifier(spec, X, y, splits, config, smote_cv, memory)
                oof, fold_models = out_of_fold_models(
                    spec,
                    search.best_params,
                    X,
                    y,
                    splits,
                    config,
                    smote_cv,
                    memory,
                    columns=columns,
                )
            except ClassifierFitError as error:
                log.warning("%s: skipping %s: %s", stage, code, error)
                continue
            threshold = zfn_threshold(oof, y, margin)
            candidates.append(
                Candidate(
                    code=code,
                    spec=spec,
                    search=search,
                    oof_scores=oof,
                    threshold=threshold,
                    oof_metrics=metrics_row(oof, y, threshold),
                    fold_models=fold_models,
                )
            )
            if progress is not None:
                progress(
                    SearchProgress(
                        stage=stage,
                        classifier=code,
                        done=done,
                        total=len(specs),
                        best_score=search.best_score,
                        elapsed_s=time.perf_counter() - start,
                    )
                )
    if not candidates:
        raise ClassifierFitError(
            f"no classifier of {list(specs)} could be fitted on {len(y)} rows ({stage})"
        )
    return candidates


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """Highest out-of-fold ZFN accuracy; ties: higher out-of-fold STD accuracy, then code."""
    if not candidates:
        raise ValueError("no candidate classifier to choose from")
    return min(
        candidates,
        key=lambda c: (-c.oof_metrics["accuracy_zfn"], -c.oof_metrics["accuracy_std"], c.code),
    )


@dataclass(frozen=True)
class CalibrationConfig:
    """How the ZFN threshold is calibrated (split-conformal).

    fraction: share of the rows held out as the calibration part, in (0, 0.5]: one of
        ``round(1 / fraction)`` stratified (group) folds; more calibration defects give a
        tighter risk bound, fewer rows for fitting a weaker model.
    confidence: confidence of the miss-rate upper bound (Clopper-Pearson), default 95 %.
    target_miss_rate: None = the threshold is the minimum abnormal calibration score (k = 1);
        a rate in (0, 1) = the highest k-th lowest score whose bound still certifies it.
    rule: ``"gap"`` (default) lowers that threshold to just above the highest normal
        calibration score when the calibration part separates the classes;
        ``"lowest_abnormal"`` is the paper's rule (scoring/conformal.py).
    """

    fraction: float = 1.0 / 3.0
    confidence: float = DEFAULT_CONFIDENCE
    target_miss_rate: float | None = None
    rule: str = DEFAULT_RULE

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 0.5:
            raise ValueError(f"calibration fraction must be in (0, 0.5], got {self.fraction}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.target_miss_rate is not None and not 0.0 < self.target_miss_rate < 1.0:
            raise ValueError(f"target_miss_rate must be in (0, 1), got {self.target_miss_rate}")
        if self.rule not in THRESHOLD_RULES:
            raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {self.rule!r}")

    @property
    def n_folds(self) -> int:
        return max(2, round(1.0 / self.fraction))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "confidence": self.confidence,
            "target_miss_rate": self.target_miss_rate,
            "rule": self.rule,
        }


def calibration_split(
    y: np.ndarray,
    groups: np.ndarray | None,
    calibration: CalibrationConfig,
    n_search_folds: int,
    seed: int,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows): positions of a seeded stratified (group) split in which the
    calibration part is one of ``calibration.n_folds`` folds. Raises ``ValueError`` naming the
    counts when the fit part cannot fill ``n_search_folds`` folds or the calibration part holds
    no abnormal image."""
    check_classes(y, calibration.n_folds, f"{where} (calibration split)")
    fit, cal = stratified_folds(y, groups, calibration.n_folds, seed, where)[0]
    if not np.any(y[cal] == 1):
        raise ValueError(f"{where}: the calibration part holds no abnormal image")
    check_classes(y[fit], n_search_folds, f"{where}, fit part")
    return np.sort(fit), np.sort(cal)


MEAN = "mean"


@dataclass
class Calibrated:
    """One shipped scorer (a candidate's fold models, or the composite's mean of every
    candidate's), with its split-conformal threshold.

    code / name / params: what it is (``"mean"`` for the mean of the candidates); candidate: the
    candidate it ships (None for the mean); members: the candidate codes it averages;
    calibration_scores: its scores of the calibration rows (aligned with
    :attr:`Recipe.calibration_rows`); risk: the threshold and what it guarantees;
    calibration_metrics: metrics_row of the calibration part at 0.5 and at the threshold.
    """

    code: str
    name: str
    params: dict[str, Any]
    candidate: Candidate | None
    members: list[str]
    pipeline: MeanProbability
    calibration_scores: np.ndarray
    risk: RiskStatement
    calibration_metrics: dict[str, Any]

    @property
    def threshold(self) -> float:
        return self.risk.threshold


@dataclass
class Recipe:
    """Outcome of :func:`fit_and_calibrate` on one labelled set (positions in its rows).

    fit_rows / calibration_rows: the two parts; inner_splits: the search / out-of-fold folds
    over the fit part (positions of the set); calibrated: every candidate that could be fitted
    and calibrated; chosen: the composite (``SearchConfig.combine``: the mean of the calibrated
    candidates, or the one chosen on the fit part's out-of-fold scores).
    """

    fit_rows: np.ndarray
    calibration_rows: np.ndarray
    inner_splits: list[Split]
    calibrated: list[Calibrated]
    chosen: Calibrated


def fit_and_calibrate(
    specs: Mapping[str, ClassifierSpec],
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    config: SearchConfig,
    calibration: CalibrationConfig,
    margin: float = 0.0,
    progress: ProgressCallback | None = None,
    stage: str = "calibrate",
    columns: Sequence[str] | None = None,
) -> Recipe:
    """The whole recipe of the module docstring on ``(X, y)``; see :class:`Recipe`.

    ``columns`` (metric names of ``X``) makes the refitted pipelines name their features, as the
    shipped model needs to score metric tables by column name."""
    fit, cal = calibration_split(y, groups, calibration, config.n_splits, config.seed, stage)
    inner_local = stratified_folds(
        y[fit], None if groups is None else groups[fit], config.n_splits, config.seed, stage
    )
    candidates = calibrate_candidates(
        specs, X[fit], y[fit], inner_local, config, margin, progress, stage, columns
    )
    X_cal = X[cal] if columns is None else pd.DataFrame(X[cal], columns=list(columns))

    def calibrate(
        code: str,
        name: str,
        params: dict[str, Any],
        candidate: Candidate | None,
        pipeline: MeanProbability,
    ) -> Calibrated | None:
        try:
            scores = np.asarray(pipeline.predict_proba(X_cal)[:, 1], dtype=np.float64)
        except (ValueError, np.linalg.LinAlgError) as error:
            log.warning(
                "%s: skipping %s: it failed to score the calibration part: %s", stage, code, error
            )
            return None
        if not np.isfinite(scores).all():
            log.warning("%s: skipping %s: non-finite calibration scores", stage, code)
            return None
        risk = conformal_threshold(
            scores,
            y[cal],
            margin=margin,
            target_miss_rate=calibration.target_miss_rate,
            confidence=calibration.confidence,
            rule=calibration.rule,
        )
        return Calibrated(
            code=code,
            name=name,
            params=params,
            candidate=candidate,
            members=sorted(set(pipeline.labels)),
            pipeline=pipeline,
            calibration_scores=scores,
            risk=risk,
            calibration_metrics=metrics_row(scores, y[cal], risk.threshold),
        )

    calibrated = [
        c
        for c in (
            calibrate(c.code, c.spec.name, dict(c.params), c, c.shipped()) for c in candidates
        )
        if c is not None
    ]
    if not calibrated:
        raise ClassifierFitError(f"no classifier of {list(specs)} could be calibrated ({stage})")
    if config.combine == MEAN:
        members = [model for c in calibrated for model in c.pipeline.members]
        labels = [label for c in calibrated for label in c.pipeline.labels]
        mean = calibrate(
            MEAN,
            f"Mean of {len(calibrated)} classifiers ({len(members)} fold models)",
            {"members": [c.code for c in calibrated], "fold_models": len(members)},
            None,
            MeanProbability(members, labels),
        )
        if mean is None:
            raise ClassifierFitError(f"the mean of {[c.code for c in calibrated]} failed ({stage})")
        chosen = mean
    else:
        best = choose([c.candidate for c in calibrated if c.candidate is not None]).code
        chosen = next(c for c in calibrated if c.code == best)
    return Recipe(
        fit_rows=fit,
        calibration_rows=cal,
        inner_splits=restrict(inner_local, fit),
        calibrated=calibrated,
        chosen=chosen,
    )
