"""The shipped composite anomaly score: one fitted pipeline plus its ZFN threshold and evidence.

:func:`fit_composite_model` searches and calibrates every candidate on the classifier set with
k-fold cross-validation (:mod:`~vqganodip_pipeline.scoring.calibrate`), keeps the one with the
best out-of-fold ZFN accuracy, refits it on all rows and ships the threshold read off its
out-of-fold scores: the lowest out-of-fold score of an abnormal image, minus ``margin``.

About the miss-probability bound stored with the model (``1 / (n + 1)`` for ``n`` abnormal
calibration images, :func:`~vqganodip_pipeline.scoring.thresholds.miss_probability_bound`): it
is a guarantee for a threshold taken on images that played no part in fitting the model. Out-of-fold
scores come from k models each fitted without the scored image, which is close to that but not
identical (the shipped model is fitted on all rows, and the hyper-parameter search and the
choice of classifier saw every row), so read the bound as the order of magnitude the number of
abnormal calibration images supports, not as a certificate. The honest protocol
(:mod:`~vqganodip_pipeline.scoring.honest`) and :func:`evaluate` on a holdout measure the
achieved miss rate directly.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline

from vqganodip_pipeline.scoring.calibrate import calibrate_candidates, choose
from vqganodip_pipeline.scoring.classifiers import (
    PREPROCESS_STEP,
    ClassifierSpec,
    build_pipeline,
    resolve_classifiers,
)
from vqganodip_pipeline.scoring.report import params_json, rank_leaderboard
from vqganodip_pipeline.scoring.search import ProgressCallback, SearchConfig, quiet_fitting
from vqganodip_pipeline.scoring.splits import stratified_folds
from vqganodip_pipeline.scoring.table import (
    check_finite,
    image_ids,
    labels_to_y,
    select_role,
    short_list,
    training_table,
)
from vqganodip_pipeline.scoring.thresholds import metrics_row, miss_probability_bound

_VERSIONED = ("scikit-learn", "xgboost", "lightgbm", "imbalanced-learn", "numpy", "scipy", "pandas")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a fitted model depends on (for reproducibility and unpickling)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class CompositeScoreModel:
    """A fitted composite anomaly score with its ZFN threshold.

    ``score(df)`` is the predicted abnormal probability; ``decide(df)`` is ``score >= threshold``
    (True = abnormal, send to operator). Evidence: ``n_abnormal_calibration`` abnormal images
    set the threshold (out-of-fold), ``miss_probability_bound`` = 1 / (n + 1) (see the module
    docstring for what it does and does not guarantee), ``calibration`` holds the out-of-fold
    metrics, ``selection`` the out-of-fold leaderboard of every candidate.
    """

    classifier: str
    classifier_name: str
    params: dict[str, Any]
    pipeline: Pipeline
    threshold: float
    margin: float
    n_abnormal_calibration: int
    n_normal_calibration: int
    miss_probability_bound: float
    feature_names_in: list[str]
    feature_names_kept: list[str]
    dropped_correlated: dict[str, str]
    calibration: dict[str, Any]
    calibration_scores: pd.DataFrame
    selection: pd.DataFrame
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=library_versions)
    fitted_at: str = ""

    def _features(self, df: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame metric table, got {type(df).__name__}")
        missing = [column for column in self.feature_names_in if column not in df.columns]
        if missing:
            raise ValueError(
                f"metric table lacks {len(missing)} of the model's {len(self.feature_names_in)} "
                f"metric columns: {short_list(missing)}"
            )
        check_finite(df, self.feature_names_in)
        return df[self.feature_names_in].astype(np.float64)

    def score(self, df: pd.DataFrame) -> np.ndarray:
        """Composite anomaly score (predicted abnormal probability) of every row of ``df``."""
        if len(df) == 0:
            return np.empty(0, dtype=np.float64)
        proba = self.pipeline.predict_proba(self._features(df))
        return np.asarray(proba[:, 1], dtype=np.float64)

    def decide(self, df: pd.DataFrame) -> np.ndarray:
        """True where ``score >= threshold`` (abnormal: send to operator)."""
        return self.score(df) >= self.threshold

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (for asset metadata and reports)."""
        return {
            "classifier": self.classifier,
            "classifier_name": self.classifier_name,
            "params": self.params,
            "threshold": self.threshold,
            "margin": self.margin,
            "n_abnormal_calibration": self.n_abnormal_calibration,
            "n_normal_calibration": self.n_normal_calibration,
            "miss_probability_bound": self.miss_probability_bound,
            "n_features_in": len(self.feature_names_in),
            "n_features_kept": len(self.feature_names_kept),
            "calibration": {
                key: (value.item() if isinstance(value, np.generic) else value)
                for key, value in self.calibration.items()
            },
            "config": self.config,
            "versions": self.versions,
            "fitted_at": self.fitted_at,
        }


def fit_composite_model(
    df: pd.DataFrame,
    *,
    classifiers: Mapping[str, ClassifierSpec] | Sequence[str] | None = None,
    config: SearchConfig | None = None,
    margin: float = 0.0,
    role: str | None = "classifier_set",
    progress: ProgressCallback | None = None,
) -> CompositeScoreModel:
    """Fit the shipped composite score on the ``role`` rows of ``df`` (all rows if no role).

    Raises ``ValueError`` for one class only or fewer abnormal (or normal) images than
    ``config.n_splits`` folds, naming the counts.
    """
    config = config or SearchConfig()
    specs = resolve_classifiers(classifiers)
    table = training_table(df, role)
    splits = stratified_folds(
        table.y, table.groups, config.n_splits, config.seed, "fit_composite_model"
    )
    candidates = calibrate_candidates(
        specs, table.X, table.y, splits, config, margin, progress, "select"
    )
    chosen = choose(candidates)
    pipeline = build_pipeline(
        chosen.spec,
        config.seed,
        chosen.smote,
        config.correlation_threshold,
        chosen.params,
        config.max_features,
    )
    features = pd.DataFrame(table.X, columns=table.columns)
    with quiet_fitting():
        pipeline.fit(features, table.y)
    preprocessor = pipeline.named_steps[PREPROCESS_STEP]
    selection = rank_leaderboard(
        [
            {
                "classifier": c.code,
                "name": c.spec.name,
                **c.oof_metrics,
                "cv_accuracy": c.search.best_score,
                "best_params": params_json(c.params),
                "search_s": c.search.elapsed_s,
            }
            for c in candidates
        ]
    )
    n_abnormal = int(table.y.sum())
    return CompositeScoreModel(
        classifier=chosen.code,
        classifier_name=chosen.spec.name,
        params=dict(chosen.params),
        pipeline=pipeline,
        threshold=chosen.threshold,
        margin=margin,
        n_abnormal_calibration=n_abnormal,
        n_normal_calibration=int(len(table.y) - n_abnormal),
        miss_probability_bound=miss_probability_bound(n_abnormal),
        feature_names_in=list(table.columns),
        feature_names_kept=[str(name) for name in preprocessor.get_feature_names_out()],
        dropped_correlated=preprocessor.dropped_correlated(),
        calibration=dict(chosen.oof_metrics),
        calibration_scores=pd.DataFrame(
            {"image_id": table.image_ids, "y": table.y, "score": chosen.oof_scores}
        ),
        selection=selection,
        config=config.to_dict(),
        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def evaluate(
    model: CompositeScoreModel, df: pd.DataFrame, role: str | None = None
) -> dict[str, Any]:
    """Metrics of ``model`` on a separate labelled table (e.g. ``role="holdout"`` rows).

    Same keys as :func:`~vqganodip_pipeline.scoring.thresholds.metrics_row` (ZFN = the model's
    shipped threshold) plus ``missed_image_ids`` (abnormal images scored below it) and
    ``n_images``. Raises for unlabelled ("unknown") rows.
    """
    df = select_role(df, role)
    y = labels_to_y(df)
    scores = model.score(df)
    row: dict[str, Any] = metrics_row(scores, y, model.threshold)
    ids = np.asarray(image_ids(df), dtype=object)
    row["missed_image_ids"] = [str(v) for v in ids[(y == 1) & (scores < model.threshold)]]
    row["n_images"] = len(y)
    return row
