"""Model selection and ZFN calibration on one training set, from out-of-fold scores only.

For every candidate classifier: randomized search with CV on the training set, out-of-fold
abnormal probabilities with the best parameters on the same folds, ZFN threshold = the lowest
out-of-fold score of an abnormal image (minus ``margin``). The candidate with the best
out-of-fold ZFN accuracy is chosen (ties: higher out-of-fold STD accuracy, then code). Used on
each outer training part by the honest protocol and on the whole classifier set for the shipped
model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vqganodip_pipeline.scoring.classifiers import ClassifierSpec, SmoteSettings, plan_smote
from vqganodip_pipeline.scoring.search import (
    ClassifierFitError,
    ProgressCallback,
    SearchConfig,
    SearchProgress,
    SearchResult,
    out_of_fold_scores,
    search_classifier,
)
from vqganodip_pipeline.scoring.splits import Split
from vqganodip_pipeline.scoring.thresholds import metrics_row, zfn_threshold

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One classifier searched and calibrated on a training set.

    oof_scores: out-of-fold abnormal probabilities (aligned with the training rows);
    threshold: ZFN threshold from them (margin subtracted); oof_metrics: metrics_row of the
    out-of-fold scores at 0.5 and at ``threshold``; smote: the SMOTE settings of a full refit.
    """

    code: str
    spec: ClassifierSpec
    search: SearchResult
    oof_scores: np.ndarray
    threshold: float
    oof_metrics: dict[str, Any]
    smote: SmoteSettings | None

    @property
    def params(self) -> dict[str, Any]:
        return self.search.best_params


def calibrate_candidates(
    specs: Mapping[str, ClassifierSpec],
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    config: SearchConfig,
    margin: float = 0.0,
    progress: ProgressCallback | None = None,
    stage: str = "calibrate",
) -> list[Candidate]:
    """Search and calibrate every classifier of ``specs`` on ``(X, y)`` with ``splits``.
    A classifier that cannot be fitted on these rows is skipped with a warning; none left is an
    error."""
    smote_cv = plan_smote(
        y,
        [train for train, _ in splits],
        config.smote_below,
        config.smote_ratio,
        config.smote_k_neighbors,
    )
    smote_full = plan_smote(
        y, [np.arange(len(y))], config.smote_below, config.smote_ratio, config.smote_k_neighbors
    )
    candidates: list[Candidate] = []
    start = time.perf_counter()
    for done, (code, spec) in enumerate(specs.items(), start=1):
        try:
            search = search_classifier(spec, X, y, splits, config, smote_cv)
            oof = out_of_fold_scores(spec, search.best_params, X, y, splits, config, smote_cv)
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
                smote=smote_full,
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
