"""The composite score of a metric table: the shipped model, both protocols, the holdout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline import scoring, serialization
from vqganodip_pipeline.scoring.search import release_parallel_workers

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
    shortcut: dict[str, Any] | None = None  # see shortcut_finding


# What a stored composite model may contain: these dataclasses and the estimator types of the
# twelve candidates. A file that names anything else is refused, never executed.
BUNDLE_DATACLASSES = (
    ScoringOutcome,
    scoring.CompositeScoreModel,
    scoring.RiskStatement,
    scoring.MeanProbability,
)


def bundle_to_bytes(bundle: Any) -> bytes:
    """The composite model's stored form (see :func:`serialization.bundle_to_bytes`)."""
    return serialization.bundle_to_bytes(
        bundle, BUNDLE_DATACLASSES, scoring.classifiers.PERSISTED_TYPES
    )


def bytes_to_bundle(data: bytes) -> Any:
    """A stored composite model; refuses a file naming any type outside the trusted lists."""
    return serialization.bytes_to_bundle(
        data, BUNDLE_DATACLASSES, scoring.classifiers.PERSISTED_TYPES
    )


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
    try:
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
        shortcut = None
        if honest is not None:
            shortcut = shortcut_finding(
                honest.leaderboard, metrics[metrics["role"] == "classifier_set"]
            )
            if shortcut is not None:
                (log if not shortcut["warning"] else lambda m: log(f"WARNING: {m}"))(
                    shortcut["statement"]
                )
        return ScoringOutcome(
            shortcut=shortcut,
            shipped=shipped,
            paper_leaderboard=None if paper is None else paper.leaderboard,
            honest_leaderboard=None if honest is None else honest.leaderboard,
            honest_predictions=None
            if honest is None
            else honest.predictions[honest.predictions["method"] == "composite"],
            holdout=holdout,
            seconds=seconds,
        )

    finally:
        # idle joblib workers would outlive the step and stall the next one (see there)
        release_parallel_workers()


def shortcut_finding(leaderboard: pd.DataFrame, frame: pd.DataFrame) -> dict[str, Any] | None:
    """What the shortcut baseline (a classifier on capture statistics alone, honest folds) says
    about the data: its pooled AUROC and ZFN accuracy, whether it reaches
    ``SHORTCUT_WARNING_AUROC``, the statistics that separate the classes best on their own, and
    a sentence saying so. None when the table has no capture statistics."""
    rows = leaderboard[leaderboard["classifier"] == scoring.baselines.SHORTCUT_CODE]
    if rows.empty:
        return None
    row = rows.iloc[0]
    auroc = float(row["auroc_pooled"])
    statistics = scoring.baselines.shortcut_statistics(frame)
    warning = bool(auroc >= scoring.baselines.SHORTCUT_WARNING_AUROC)
    named = ", ".join(
        f"{s['statistic']} (AUROC {s['auroc']:.2f}; normal {s['mean_normal']:.4g}, abnormal "
        f"{s['mean_abnormal']:.4g})"
        for s in statistics
    )
    if warning:
        statement = (
            f"Global image statistics alone separate the classes: a classifier on capture "
            f"statistics (grey-level histogram, noise, gradient energy, compression estimates, "
            f"size, mean colour) reaches AUROC {auroc:.3f} on the honest folds (warning at "
            f">= {scoring.baselines.SHORTCUT_WARNING_AUROC}). Either the classes were captured "
            f"differently (camera, lighting, day, compression: a shortcut any detector can "
            f"learn) or the defects are large enough for any detector to see; look at {named}. "
            "A detector's figure on this data counts only where it beats this baseline."
        )
    else:
        statement = (
            f"No capture shortcut found: a classifier on capture statistics alone reaches AUROC "
            f"{auroc:.3f} on the honest folds (warning at >= "
            f"{scoring.baselines.SHORTCUT_WARNING_AUROC}); strongest single statistics: {named}."
        )
    return {
        "auroc": auroc,
        "zfn_accuracy": float(row["accuracy_zfn"]),
        "missed_zfn": int(row["missed_zfn"]),
        "warning": warning,
        "warning_auroc": scoring.baselines.SHORTCUT_WARNING_AUROC,
        "statistics": statistics,
        "statement": statement,
    }


def score_batch(
    model: Any,
    metrics: pd.DataFrame,
    patches: pd.DataFrame,
    trained_on: Any,
    top: int = 3,
) -> pd.DataFrame:
    """Score and decision of every image of a batch's metric table (``to_operator`` when the
    score reaches the model's threshold), its ``top`` raw patches, and ``seen_in_training``:
    whether the image is one the model side learnt from (``trained_on`` ids)."""
    scores = model.score(metrics)
    decisions = scores >= model.threshold
    best = (
        patches[(patches["variant"] == "raw") & (patches["rank"] < top)]
        .groupby("image_id")[["top", "left", "size"]]
        .apply(lambda p: p.to_numpy().tolist())
        if len(patches)
        else pd.Series(dtype=object)
    )
    return pd.DataFrame(
        {
            "image_id": metrics["image_id"],
            "uri": metrics.get("uri", ""),
            "label": metrics["label"],
            "score": scores,
            "threshold": model.threshold,
            "decision": np.where(decisions, "to_operator", "pass"),
            "seen_in_training": metrics["image_id"].astype(str).isin(set(trained_on)).to_numpy(),
            "top_patches": [str(best.get(i, [])) for i in metrics["image_id"]],
            "classifier": model.classifier,
            "model_fitted_at": model.fitted_at,
        }
    )


def labelled_evaluation(scored: pd.DataFrame) -> dict[str, Any] | None:
    """Confusion metrics of a scored batch (:func:`score_batch`) on its labelled images that
    the model side never learnt from; None without both classes among them. Images the model
    was trained, calibrated or selected on are left out: they are no evidence of how it does."""
    unseen = scored["label"].isin(["normal", "abnormal"]) & ~scored["seen_in_training"]
    part = scored[unseen]
    if part["label"].nunique() < 2:
        return None
    y = (part["label"] == "abnormal").to_numpy(int)
    evaluation = scoring.confusion_at_threshold(
        part["score"].to_numpy(), y, float(part["threshold"].iloc[0])
    )
    return {
        **{key: float(value) for key, value in evaluation.items()},
        "images": len(part),
        "protocol": "labelled images of this batch that the model side never trained, "
        "calibrated or selected on",
    }
