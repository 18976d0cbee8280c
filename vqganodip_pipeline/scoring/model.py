"""The shipped composite anomaly score: fitted models plus their ZFN threshold and evidence.

:func:`fit_composite_model` runs the split-conformal recipe of
:mod:`~vqganodip_pipeline.scoring.calibrate` on the classifier set: search and out-of-fold
models on a fit part, the composite made of them (by default the mean probability of every
candidate's fold models; ``SearchConfig.combine="best"``: the one candidate chosen on
out-of-fold evidence), and its threshold read off its own scores of the abnormal images of a
calibration part that the models, their search and the choice never saw. The
:class:`~vqganodip_pipeline.scoring.conformal.RiskStatement` stored with the model says what
that threshold guarantees and under which assumption (exchangeable defect scores): an exact
one-sided upper confidence bound on the miss rate of new defects and the expected-miss form
``k / (n + 1)``. The honest protocol (:mod:`~vqganodip_pipeline.scoring.honest`) runs the same
recipe inside every outer fold, and :func:`evaluate` measures the achieved miss rate on a
holdout.
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

from vqganodip_pipeline.scoring.calibrate import CalibrationConfig, fit_and_calibrate
from vqganodip_pipeline.scoring.classifiers import ClassifierSpec, resolve_classifiers
from vqganodip_pipeline.scoring.conformal import RiskStatement
from vqganodip_pipeline.scoring.ensemble import (
    MeanProbability,
    dropped_in_every_member,
    kept_metrics,
)
from vqganodip_pipeline.scoring.report import params_json, rank_leaderboard
from vqganodip_pipeline.scoring.search import ProgressCallback, SearchConfig
from vqganodip_pipeline.scoring.table import (
    check_finite,
    image_ids,
    labels_to_y,
    select_role,
    short_list,
    training_table,
)
from vqganodip_pipeline.scoring.thresholds import metrics_row

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
    """A fitted composite anomaly score with its split-conformal ZFN threshold.

    ``classifier`` is the composite's code (``"mean"``: the mean of the candidates named in
    ``params["members"]``; else one candidate's code) and ``pipeline`` what scores:
    a :class:`~vqganodip_pipeline.scoring.ensemble.MeanProbability` of fitted pipelines.
    ``score(df)`` is the predicted abnormal probability; ``decide(df)`` is ``score >= threshold``
    (True = abnormal, send to operator). Evidence: ``risk`` (the threshold, the number of
    abnormal calibration images it was read off, how many fall below it, the miss-rate bounds
    and their assumption), ``calibration`` the metrics of the calibration part at 0.5 and at the
    threshold, ``calibration_scores`` the shipped model's scores of the calibration images,
    ``selection`` the out-of-fold leaderboard of every candidate on the fit part (with each
    candidate's own calibration-part metrics), ``fit_image_ids`` the rows it was fitted on.
    """

    classifier: str
    classifier_name: str
    params: dict[str, Any]
    pipeline: MeanProbability
    risk: RiskStatement
    n_normal_calibration: int
    feature_names_in: list[str]
    feature_names_kept: list[str]
    dropped_correlated: dict[str, str]
    calibration: dict[str, Any]
    calibration_scores: pd.DataFrame
    fit_image_ids: list[str]
    selection: pd.DataFrame
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=library_versions)
    fitted_at: str = ""

    @property
    def threshold(self) -> float:
        return self.risk.threshold

    @property
    def n_abnormal_calibration(self) -> int:
        return self.risk.n_calibration

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
            "risk": self.risk.to_dict(),
            "n_normal_calibration": self.n_normal_calibration,
            "n_fit": len(self.fit_image_ids),
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
    calibration: CalibrationConfig | None = None,
    margin: float = 0.0,
    role: str | None = "classifier_set",
    progress: ProgressCallback | None = None,
) -> CompositeScoreModel:
    """Fit the shipped composite score on the ``role`` rows of ``df`` (all rows if no role).

    Raises ``ValueError`` for one class only, or too few abnormal (or normal) images to fill a
    calibration part and the search folds of the fit part, naming the counts.
    """
    config = config or SearchConfig()
    calibration = calibration or CalibrationConfig()
    specs = resolve_classifiers(classifiers)
    table = training_table(df, role)
    recipe = fit_and_calibrate(
        specs,
        table.X,
        table.y,
        table.groups,
        config,
        calibration,
        margin,
        progress,
        "fit_composite_model",
        columns=table.columns,
    )
    chosen = recipe.chosen
    selection = rank_leaderboard(
        [
            {
                "classifier": c.code,
                "name": c.name,
                **c.candidate.oof_metrics,
                "cv_accuracy": c.candidate.search.best_score,
                "calibration_accuracy_zfn": c.calibration_metrics["accuracy_zfn"],
                "calibration_fpr_zfn": c.calibration_metrics["fpr_zfn"],
                "best_params": params_json(c.params),
                "search_s": c.candidate.search.elapsed_s,
            }
            for c in recipe.calibrated
            if c.candidate is not None
        ]
    )
    cal = recipe.calibration_rows
    y_cal = table.y[cal]
    return CompositeScoreModel(
        classifier=chosen.code,
        classifier_name=chosen.name,
        params=dict(chosen.params),
        pipeline=chosen.pipeline,
        risk=chosen.risk,
        n_normal_calibration=int((y_cal == 0).sum()),
        feature_names_in=list(table.columns),
        feature_names_kept=kept_metrics(chosen.pipeline),
        dropped_correlated=dropped_in_every_member(chosen.pipeline),
        calibration=dict(chosen.calibration_metrics),
        calibration_scores=pd.DataFrame(
            {"image_id": table.image_ids[cal], "y": y_cal, "score": chosen.calibration_scores}
        ),
        fit_image_ids=[str(v) for v in table.image_ids[recipe.fit_rows]],
        selection=selection,
        config={**config.to_dict(), "calibration": calibration.to_dict()},
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
