"""The metric table contract: which columns are metrics, labels as 0/1, groups, finiteness.

A metric table is a :class:`pandas.DataFrame` with one row per image. Identity columns:
``image_id`` (str), ``label`` ("normal" / "abnormal" / "unknown"), ``defect_type`` (str),
``role`` (str, e.g. "classifier_set" / "holdout") and ``group_id`` (str; images of one group,
e.g. a DeepPCB template/test pair, must never be split across folds). Metric columns are the
float columns whose name contains ``"__"`` (``level__metric__aggregate__weighting``, e.g.
``patch__ssim__sum__weighted``). Columns starting with ``"baseline__"`` (reference scores
computed elsewhere, e.g. the golden-sample difference) are excluded from the classifier's inputs
so that the composite score and the baselines it is compared with stay independent; so are
columns starting with ``"capture__"`` (capture statistics of the image, data/capture.py: the
inputs of the shortcut baseline, never of the detector).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

METRIC_SEPARATOR = "__"
BASELINE_PREFIX = "baseline__"
CAPTURE_PREFIX = "capture__"  # = data.capture.CAPTURE_PREFIX (scoring imports nothing of data/)
LABEL_NORMAL = "normal"
LABEL_ABNORMAL = "abnormal"
LABEL_UNKNOWN = "unknown"
KNOWN_LABELS = (LABEL_NORMAL, LABEL_ABNORMAL)

# How many offending names an error message lists before summarising the rest as a count.
_LIST_AT_MOST = 10


def _short_list(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:_LIST_AT_MOST])
    if len(items) > _LIST_AT_MOST:
        shown += f", ... ({len(items) - _LIST_AT_MOST} more)"
    return shown


def _image_ids(df: pd.DataFrame, mask: np.ndarray) -> list[str]:
    if "image_id" in df.columns:
        return [str(value) for value in df["image_id"].to_numpy()[mask]]
    return [f"row {position}" for position in np.flatnonzero(mask)]


def metric_columns(
    df: pd.DataFrame, exclude_prefixes: Iterable[str] = (BASELINE_PREFIX, CAPTURE_PREFIX)
) -> list[str]:
    """Names of the metric columns of ``df``, in table order.

    A metric column is a float column whose name contains ``"__"`` and does not start with one
    of ``exclude_prefixes`` (default: ``"baseline__"`` and ``"capture__"``). Table order
    matters without ``max_features``: the correlation filter of
    :class:`~vqganodip_pipeline.scoring.preprocess.MetricPreprocessor` then keeps the earlier
    column of a correlated pair (with it, the one of stronger training AUROC).
    """
    excluded = tuple(exclude_prefixes)
    return [
        column
        for column in df.columns
        if isinstance(column, str)
        and METRIC_SEPARATOR in column
        and not (excluded and column.startswith(excluded))
        and pd.api.types.is_float_dtype(df[column])
    ]


def labels_to_y(df: pd.DataFrame) -> np.ndarray:
    """``label`` column -> int array, 1 = "abnormal", 0 = "normal".

    Raises ``ValueError`` naming the image ids whose label is "unknown" or anything else: a
    classifier can neither be trained nor evaluated on unlabelled images (filter them first,
    e.g. with :func:`labelled_rows`).
    """
    if "label" not in df.columns:
        raise ValueError(f"metric table has no 'label' column (columns: {_short_list(df.columns)})")
    labels = df["label"].astype("string").to_numpy(dtype=object)
    bad = ~np.isin(labels, KNOWN_LABELS)
    if bad.any():
        found = sorted({str(value) for value in labels[bad]})
        raise ValueError(
            f"label must be 'normal' or 'abnormal' here; {int(bad.sum())} image(s) have "
            f"{found}: {_short_list(_image_ids(df, bad))}"
        )
    return (labels == LABEL_ABNORMAL).astype(np.int64)


def labelled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` labelled "normal" or "abnormal" (drops "unknown")."""
    if "label" not in df.columns:
        raise ValueError("metric table has no 'label' column")
    return df[df["label"].isin(KNOWN_LABELS)]


def select_role(df: pd.DataFrame, role: str | None) -> pd.DataFrame:
    """Rows whose ``role`` equals ``role``; all rows when ``role`` is None or the table has no
    ``role`` column (a plain table is taken as one role)."""
    if role is None or "role" not in df.columns:
        return df
    selected = df[df["role"] == role]
    if selected.empty:
        present = sorted({str(value) for value in df["role"].unique()})
        raise ValueError(f"metric table has no rows with role {role!r} (roles present: {present})")
    return selected


def group_ids(df: pd.DataFrame) -> np.ndarray | None:
    """``group_id`` as a str array when some group holds more than one image, else None.

    None means every image is its own group, so plain (stratified) folds and leave-one-out are
    used; otherwise the group-aware variants keep each group on one side of every split.
    """
    if "group_id" not in df.columns:
        return None
    groups = df["group_id"]
    missing = groups.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"group_id is missing for {int(missing.sum())} image(s): "
            f"{_short_list(_image_ids(df, missing))}"
        )
    values = groups.astype(str).to_numpy()
    if len(np.unique(values)) == len(values):
        return None
    return values


def check_finite(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the columns and image ids with NaN or inf values."""
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(
            f"metric table lacks {len(missing)} metric column(s): {_short_list(missing)}"
        )
    values = df[list(columns)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        bad_columns = [columns[j] for j in np.flatnonzero(bad.any(axis=0))]
        bad_rows = bad.any(axis=1)
        raise ValueError(
            f"metric table has NaN/inf values in {len(bad_columns)} column(s): "
            f"{_short_list(bad_columns)}; image(s): {_short_list(_image_ids(df, bad_rows))}"
        )


def metric_matrix(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """``df[columns]`` as a finite float64 (n_images, n_metrics) array; see :func:`check_finite`."""
    if not columns:
        raise ValueError("metric table has no metric columns (float columns named like 'a__b')")
    check_finite(df, columns)
    return df[list(columns)].to_numpy(dtype=np.float64)


def image_ids(df: pd.DataFrame) -> list[str]:
    """``image_id`` values as str (row positions when the column is absent)."""
    return _image_ids(df, np.ones(len(df), dtype=bool))


def short_list(items: Sequence[object]) -> str:
    """Comma-separated, truncated list for error messages."""
    return _short_list(items)


@dataclass(frozen=True)
class TrainingTable:
    """The labelled rows a protocol works on, as arrays.

    frame: the selected rows (index reset); columns: metric column names; X: (n, m) float64;
    y: (n,) 1 = abnormal; groups: (n,) str or None (see :func:`group_ids`); image_ids: (n,) str.
    """

    frame: pd.DataFrame
    columns: list[str]
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    image_ids: np.ndarray


def training_table(
    df: pd.DataFrame, role: str | None = "classifier_set", columns: Sequence[str] | None = None
) -> TrainingTable:
    """Select ``role`` rows, check labels and finiteness, and return them as arrays.

    ``columns`` defaults to :func:`metric_columns`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame metric table, got {type(df).__name__}")
    frame = select_role(df, role).reset_index(drop=True)
    names = list(metric_columns(frame) if columns is None else columns)
    X = metric_matrix(frame, names)
    y = labels_to_y(frame)
    ids = np.asarray(image_ids(frame), dtype=object)
    return TrainingTable(frame, names, X, y, group_ids(frame), ids)
