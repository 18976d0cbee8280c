"""The paper's protocol for the composite anomaly score (for comparison with its Table 1).

Per candidate classifier: randomized search (5-fold stratified CV, accuracy) on the whole table,
leave-one-out predictions with the best parameters, ZFN threshold = the lowest leave-one-out
score among the abnormal images, metrics under 0.5 (STD) and under that threshold (ZFN).

The ZFN figures are in-sample: the threshold is read off the very predictions it is then judged
on, so ZFN FNR is 0 by construction. :mod:`vqganodip_pipeline.scoring.honest` gives the figures
on images the threshold never saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vqganodip_pipeline.scoring.classifiers import (
    ClassifierSpec,
    plan_smote,
    resolve_classifiers,
)
from vqganodip_pipeline.scoring.report import params_json, rank_leaderboard
from vqganodip_pipeline.scoring.search import (
    ClassifierFitError,
    ProgressCallback,
    SearchConfig,
    SearchProgress,
    SearchResult,
    out_of_fold_scores,
    preprocessing_cache,
    search_classifier,
)
from vqganodip_pipeline.scoring.splits import Split, leave_one_out, stratified_folds
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline.scoring.thresholds import metrics_row, zfn_threshold

log = logging.getLogger(__name__)


@dataclass
class PaperResult:
    """Outcome of :func:`run_paper_protocol`.

    leaderboard: one row per classifier (see :func:`~vqganodip_pipeline.scoring.report.table1`),
    best first; best: code of the first row; scores: leave-one-out abnormal probabilities per
    classifier, aligned with ``image_ids`` / ``y``; searches: the search of each classifier.
    """

    leaderboard: pd.DataFrame
    best: str
    scores: dict[str, np.ndarray]
    searches: dict[str, SearchResult]
    image_ids: np.ndarray
    y: np.ndarray
    cv_splits: list[Split]
    loo_splits: list[Split]
    config: SearchConfig
    timings_s: dict[str, dict[str, float]] = field(default_factory=dict)


def run_paper_protocol(
    df: pd.DataFrame,
    *,
    classifiers: Mapping[str, ClassifierSpec] | Sequence[str] | None = None,
    config: SearchConfig | None = None,
    role: str | None = "classifier_set",
    progress: ProgressCallback | None = None,
) -> PaperResult:
    """Run the paper's protocol on the ``role`` rows of the metric table ``df``.

    Leave-one-out becomes leave-one-group-out when ``group_id`` has repeats, and the search CV
    becomes stratified group k-fold, so a group is never on both sides of a split.
    """
    config = config or SearchConfig()
    specs = resolve_classifiers(classifiers)
    table = training_table(df, role)
    X, y, groups = table.X, table.y, table.groups
    cv_splits = stratified_folds(y, groups, config.n_splits, config.seed, "paper protocol")
    loo_splits = leave_one_out(y, groups)
    smote_cv = plan_smote(
        y,
        [train for train, _ in cv_splits],
        config.smote_below,
        config.smote_ratio,
        config.smote_k_neighbors,
    )
    smote_loo = plan_smote(
        y,
        [train for train, _ in loo_splits],
        config.smote_below,
        config.smote_ratio,
        config.smote_k_neighbors,
    )
    rows: list[dict[str, object]] = []
    scores: dict[str, np.ndarray] = {}
    searches: dict[str, SearchResult] = {}
    timings: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    with preprocessing_cache(config) as memory:
        for done, (code, spec) in enumerate(specs.items(), start=1):
            try:
                search = search_classifier(spec, X, y, cv_splits, config, smote_cv, memory)
                loo_start = time.perf_counter()
                loo = out_of_fold_scores(
                    spec, search.best_params, X, y, loo_splits, config, smote_loo, memory
                )
            except ClassifierFitError as error:
                log.warning("paper protocol: skipping %s: %s", code, error)
                continue
            loo_s = time.perf_counter() - loo_start
            threshold = zfn_threshold(loo, y)
            row: dict[str, object] = {"classifier": code, "name": spec.name}
            row.update(metrics_row(loo, y, threshold))
            row.update(
                {
                    "cv_accuracy": search.best_score,
                    "best_params": params_json(search.best_params),
                    "failed_candidates": search.n_failed,
                    "search_s": search.elapsed_s,
                    "loo_s": loo_s,
                }
            )
            rows.append(row)
            scores[code] = loo
            searches[code] = search
            timings[code] = {"search_s": search.elapsed_s, "loo_s": loo_s}
            if progress is not None:
                progress(
                    SearchProgress(
                        stage="paper",
                        classifier=code,
                        done=done,
                        total=len(specs),
                        best_score=search.best_score,
                        elapsed_s=time.perf_counter() - start,
                    )
                )
    if not rows:
        raise ClassifierFitError(f"no classifier of {list(specs)} could be fitted on {len(y)} rows")
    leaderboard = rank_leaderboard(rows)
    return PaperResult(
        leaderboard=leaderboard,
        best=str(leaderboard.loc[0, "classifier"]),
        scores=scores,
        searches=searches,
        image_ids=table.image_ids,
        y=y,
        cv_splits=cv_splits,
        loo_splits=loo_splits,
        config=config,
        timings_s=timings,
    )
