"""The composite score of a metric table: the shipped model, both protocols, the holdout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vqganodip_pipeline import scoring

Log = Callable[[str], None]


@dataclass
class ScoringOutcome:
    """The shipped composite model and how it was evaluated (paper and honest protocols)."""

    shipped: Any  # scoring.CompositeScoreModel
    paper_leaderboard: pd.DataFrame | None
    honest_leaderboard: pd.DataFrame | None
    honest_predictions: pd.DataFrame | None
    holdout: dict[str, Any] | None
    seconds: dict[str, float]


def score_metric_table(
    metrics: pd.DataFrame,
    *,
    classifiers: tuple[str, ...] | None,
    search: scoring.SearchConfig,
    outer_folds: int,
    calibration: scoring.CalibrationConfig | None = None,
    margin: float = 0.0,
    paper_protocol: bool = True,
    honest_protocol: bool = True,
    log: Log = print,
    progress: Callable[[Any], None] | None = None,
) -> ScoringOutcome:
    """Fit the shipped model on the ``classifier_set`` rows, run the protocols, and check the
    shipped threshold on the ``holdout`` rows.

    Both protocols use the same search settings (the same per-fold metric selection included),
    so they differ in protocol only: the paper's in-sample threshold against the honest
    protocol's split-conformal threshold on unseen folds."""
    seconds: dict[str, float] = {}
    begin = time.perf_counter()
    shipped = scoring.fit_composite_model(
        metrics,
        classifiers=classifiers,
        config=search,
        calibration=calibration,
        margin=margin,
        progress=progress,
    )
    seconds["fit_composite_model"] = time.perf_counter() - begin
    log(f"shipped model: {shipped.classifier_name}. {shipped.risk.sentence()}")
    paper = honest = None
    if paper_protocol:
        log("paper protocol (search, leave-one-out, in-sample threshold) ...")
        begin = time.perf_counter()
        paper = scoring.run_paper_protocol(
            metrics,
            classifiers=classifiers,
            config=search,
            progress=progress,
        )
        seconds["paper_protocol"] = time.perf_counter() - begin
    if honest_protocol:
        log(f"honest protocol ({outer_folds} outer folds, the shipped recipe in each) ...")
        begin = time.perf_counter()
        honest = scoring.run_honest_protocol(
            metrics,
            classifiers=classifiers,
            config=search,
            calibration=calibration,
            n_outer=outer_folds,
            margin=margin,
            progress=progress,
        )
        seconds["honest_protocol"] = time.perf_counter() - begin
    holdout_rows = metrics[metrics["role"] == "holdout"]
    holdout = (
        scoring.evaluate(shipped, holdout_rows)
        if len(holdout_rows) and holdout_rows["label"].nunique() == 2
        else None
    )
    return ScoringOutcome(
        shipped=shipped,
        paper_leaderboard=None if paper is None else paper.leaderboard,
        honest_leaderboard=None if honest is None else honest.leaderboard,
        honest_predictions=None
        if honest is None
        else honest.predictions[honest.predictions["method"] == "composite"],
        holdout=holdout,
        seconds=seconds,
    )
