"""Reference anomaly scores that the composite score has to beat.

A baseline is fitted on a training part (it may choose a column and its sign there) and then
scores unseen rows; its ZFN threshold is chosen by the caller on the same training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.ensemble import RandomForestClassifier

from vqganodip_pipeline.scoring.table import (
    CAPTURE_PREFIX,
    check_finite,
    labelled_rows,
    labels_to_y,
    metric_columns,
)

DEFAULT_MSE_COLUMN = "image__mse__value__raw"
DEFAULT_GOLDEN_COLUMN = "baseline__golden_mse__value__raw"
# the PatchCore-style peer's image score: the largest nearest-neighbour distance of any
# position to the coreset memory bank (localize/nearest_neighbour.py), PatchCore's own score
DEFAULT_PEER_COLUMN = "image__knn__max__raw"
SHORTCUT_CODE = "capture_shortcut"
SHORTCUT_WARNING_AUROC = 0.7  # capture statistics this good at telling the classes apart: warn


def auroc_columns(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``X`` (n, m) as a score for ``y`` (Mann-Whitney U with average
    ranks for ties, equal to ``sklearn.metrics.roc_auc_score`` per column)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} abnormal and {n_neg} normal")
    ranks = rankdata(X, axis=0, method="average")
    return (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def single_metric_auroc(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """AUROC of each metric column on the labelled rows of ``df`` (0.5 = no signal; below 0.5
    means lower values are more anomalous). Sorted as the columns are."""
    rows = labelled_rows(df)
    names = list(metric_columns(rows) if columns is None else columns)
    check_finite(rows, names)
    values = auroc_columns(rows[names].to_numpy(dtype=np.float64), labels_to_y(rows))
    return pd.Series(values, index=pd.Index(names, name="metric"), name="auroc")


class ScoreBaseline(Protocol):
    """A score that can be fitted on training rows and applied to new ones."""

    code: str

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> ScoreBaseline: ...

    def score(self, frame: pd.DataFrame) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class ColumnBaseline:
    """A single precomputed column as the score (higher = more anomalous), e.g. raw image MSE
    or the golden-sample difference."""

    code: str
    column: str

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> ColumnBaseline:
        check_finite(frame, [self.column])
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        check_finite(frame, [self.column])
        return frame[self.column].to_numpy(dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"column": self.column, "sign": 1}


@dataclass
class BestSingleMetric:
    """The one metric column with the highest training AUROC (either direction): the score is
    ``sign * value`` with ``sign = -1`` when low values indicate anomalies. Ties: first column."""

    code: str = "best_single_metric"
    columns: list[str] | None = None
    column_: str | None = field(default=None, init=False)
    sign_: int = field(default=1, init=False)
    train_auroc_: float = field(default=float("nan"), init=False)

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> BestSingleMetric:
        names = list(metric_columns(frame) if self.columns is None else self.columns)
        check_finite(frame, names)
        aurocs = auroc_columns(frame[names].to_numpy(dtype=np.float64), y)
        strength = np.maximum(aurocs, 1.0 - aurocs)
        best = int(np.argmax(strength))
        self.column_ = names[best]
        self.sign_ = 1 if aurocs[best] >= 0.5 else -1
        self.train_auroc_ = float(strength[best])
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column_ is None:
            raise RuntimeError("BestSingleMetric.score called before fit")
        check_finite(frame, [self.column_])
        return self.sign_ * frame[self.column_].to_numpy(dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"column": self.column_, "sign": self.sign_, "train_auroc": self.train_auroc_}


def capture_columns(frame: pd.DataFrame) -> list[str]:
    """The capture-statistic columns of a table (data/capture.py), in table order."""
    return [
        c
        for c in frame.columns
        if isinstance(c, str)
        and c.startswith(CAPTURE_PREFIX)
        and pd.api.types.is_numeric_dtype(frame[c])
    ]


@dataclass
class CaptureShortcut:
    """The shortcut baseline: a random forest on the capture statistics alone (grey-level
    histogram, noise and gradient energy, compression estimates, size, mean colour; no metric of
    the method). If it separates the classes, global image statistics do, whether through a
    capture difference between the classes or defects large enough for any detector."""

    code: str = SHORTCUT_CODE
    columns: list[str] | None = None
    n_estimators: int = 200
    seed: int = 0
    model_: RandomForestClassifier | None = field(default=None, init=False)
    columns_: list[str] = field(default_factory=list, init=False)

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> CaptureShortcut:
        self.columns_ = list(capture_columns(frame) if self.columns is None else self.columns)
        if not self.columns_:
            raise ValueError("the table has no capture__ columns (re-ingest its batches)")
        check_finite(frame, self.columns_)
        self.model_ = RandomForestClassifier(
            n_estimators=self.n_estimators, min_samples_leaf=2, random_state=self.seed, n_jobs=1
        ).fit(frame[self.columns_].to_numpy(dtype=np.float64), y)
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("CaptureShortcut.score called before fit")
        check_finite(frame, self.columns_)
        proba = self.model_.predict_proba(frame[self.columns_].to_numpy(dtype=np.float64))
        return np.asarray(proba[:, 1], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"columns": len(self.columns_), "model": f"RF({self.n_estimators})"}


def shortcut_statistics(frame: pd.DataFrame, top: int = 3) -> list[dict[str, Any]]:
    """The ``top`` capture statistics that best separate the labelled rows of ``frame`` on their
    own (AUROC in either direction), with the class means: what to look at when the shortcut
    baseline warns."""
    rows = labelled_rows(frame)
    names = capture_columns(rows)
    if not names:
        return []
    y = labels_to_y(rows)
    values = rows[names].to_numpy(dtype=np.float64)
    aurocs = auroc_columns(values, y)
    strength = np.maximum(aurocs, 1.0 - aurocs)
    order = np.argsort(-strength, kind="stable")[:top]
    return [
        {
            "statistic": names[j].removeprefix(CAPTURE_PREFIX),
            "auroc": float(strength[j]),
            "mean_normal": float(values[y == 0, j].mean()),
            "mean_abnormal": float(values[y == 1, j].mean()),
        }
        for j in order
    ]


def default_baselines(
    frame: pd.DataFrame,
    mse_column: str | None = DEFAULT_MSE_COLUMN,
    golden_column: str | None = DEFAULT_GOLDEN_COLUMN,
    peer_column: str | None = DEFAULT_PEER_COLUMN,
) -> tuple[list[ScoreBaseline], list[str]]:
    """Raw image MSE, best single metric, golden-sample difference, the PatchCore-style peer
    and the capture shortcut for this table.

    A baseline whose column is missing (or set to None) is skipped with a note saying why.
    """
    baselines: list[ScoreBaseline] = []
    notes: list[str] = []
    for code, column, what in (
        ("raw_mse", mse_column, "raw image MSE"),
        ("golden_sample", golden_column, "golden-sample difference"),
        ("patchcore", peer_column, "PatchCore-style nearest-neighbour peer"),
    ):
        if column is None:
            notes.append(f"baseline {code} ({what}) skipped: no column given")
        elif column not in frame.columns:
            notes.append(f"baseline {code} ({what}) skipped: column {column!r} not in the table")
        elif not pd.api.types.is_numeric_dtype(frame[column]):
            notes.append(f"baseline {code} ({what}) skipped: column {column!r} is not numeric")
        else:
            baselines.append(ColumnBaseline(code, column))
    baselines.insert(1 if baselines and baselines[0].code == "raw_mse" else 0, BestSingleMetric())
    if capture_columns(frame):
        baselines.append(CaptureShortcut())
    else:
        notes.append(
            f"baseline {SHORTCUT_CODE} (capture statistics) skipped: the table has no "
            "capture__ columns (metric tables from batches ingested by an older version)"
        )
    return baselines, notes
