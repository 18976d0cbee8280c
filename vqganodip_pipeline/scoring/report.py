"""Leaderboards shaped like the paper's Table 1: ordering and presentation."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

TABLE1_METRICS = (
    ("accuracy", "Accuracy(%)"),
    ("precision", "Precision(%)"),
    ("fpr", "FPR(%)"),
    ("fnr", "FNR(%)"),
)
LEADING_COLUMNS = [
    "classifier",
    "name",
    *(f"{metric}_{suffix}" for metric, _ in TABLE1_METRICS for suffix in ("std", "zfn")),
    "missed_std",
    "missed_zfn",
]


def rank_leaderboard(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """One row per method, best first: highest ZFN accuracy, then higher STD accuracy, then
    name (``classifier`` code). NaN accuracies sort last. Leading columns in Table-1 order."""
    board = pd.DataFrame(rows).copy()
    board["_zfn"] = board["accuracy_zfn"].fillna(-np.inf)
    board["_std"] = board["accuracy_std"].fillna(-np.inf)
    board = board.sort_values(
        ["_zfn", "_std", "classifier"], ascending=[False, False, True], kind="mergesort"
    ).drop(columns=["_zfn", "_std"])
    leading = [column for column in LEADING_COLUMNS if column in board.columns]
    rest = [column for column in board.columns if column not in leading]
    return board[leading + rest].reset_index(drop=True)


def table1(leaderboard: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """Table-1 view: index = classifier name, columns (metric, STD/ZFN), values in percent."""
    data = {
        (title, suffix.upper()): (leaderboard[f"{metric}_{suffix}"] * 100).round(decimals)
        for metric, title in TABLE1_METRICS
        for suffix in ("std", "zfn")
    }
    table = pd.DataFrame(data)
    table.index = pd.Index(leaderboard["name"], name="Classifier")
    table.columns = pd.MultiIndex.from_tuples(list(data))
    return table


def params_json(params: dict[str, Any]) -> str:
    """Parameters as a sorted JSON string (a Parquet- and metadata-friendly cell value)."""
    return json.dumps(params, sort_keys=True, default=str)
