"""Cross-validation splits that respect labels and groups.

Splits are explicit lists of ``(train_positions, test_positions)`` int arrays over the rows of
the table they were made for, so every protocol can record and check exactly which rows each fit
saw. Without groups: stratified k-fold / leave-one-out. With groups (some ``group_id`` shared by
several images): stratified group k-fold / leave-one-group-out, so a group is never split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import (
    LeaveOneGroupOut,
    LeaveOneOut,
    StratifiedGroupKFold,
    StratifiedKFold,
)

Split = tuple[np.ndarray, np.ndarray]


def check_classes(y: np.ndarray, n_splits: int, where: str = "metric table") -> None:
    """Raise ``ValueError`` when ``y`` has one class only or a class has fewer images than folds."""
    n_abnormal = int(np.sum(y == 1))
    n_normal = int(np.sum(y == 0))
    if n_abnormal == 0 or n_normal == 0:
        raise ValueError(
            f"{where}: need both normal and abnormal images, got {n_normal} normal and "
            f"{n_abnormal} abnormal"
        )
    if n_splits < 2:
        raise ValueError(f"{where}: n_splits must be >= 2, got {n_splits}")
    if n_abnormal < n_splits or n_normal < n_splits:
        raise ValueError(
            f"{where}: {n_abnormal} abnormal and {n_normal} normal images cannot fill "
            f"{n_splits} stratified folds (each class needs at least {n_splits} images)"
        )


def _check_groups(y: np.ndarray, groups: np.ndarray, n_splits: int, where: str) -> None:
    for label, name in ((1, "abnormal"), (0, "normal")):
        n_groups = len(np.unique(groups[y == label]))
        if n_groups < n_splits:
            raise ValueError(
                f"{where}: the {name} images fall into {n_groups} group(s); {n_splits} folds "
                f"that never split a group need at least {n_splits}"
            )


def stratified_folds(
    y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int, where: str = "metric table"
) -> list[Split]:
    """Shuffled stratified k-fold splits (group-aware when ``groups`` is given).

    Every row is in exactly one test part; every training part holds both classes.
    """
    y = np.asarray(y)
    check_classes(y, n_splits, where)
    dummy = np.zeros((len(y), 1))
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = list(splitter.split(dummy, y))
    else:
        groups = np.asarray(groups)
        _check_groups(y, groups, n_splits, where)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = list(splitter.split(dummy, y, groups))
    for k, (train, test) in enumerate(splits):
        if len(np.unique(y[train])) < 2 or len(test) == 0:
            raise ValueError(
                f"{where}: fold {k} of {n_splits} has an empty test part or a one-class training "
                f"part; use fewer folds or more groups"
            )
    return [(np.asarray(train), np.asarray(test)) for train, test in splits]


def leave_one_out(y: np.ndarray, groups: np.ndarray | None) -> list[Split]:
    """Leave-one-out splits (leave-one-group-out when ``groups`` is given)."""
    y = np.asarray(y)
    dummy = np.zeros((len(y), 1))
    if groups is None:
        splits = LeaveOneOut().split(dummy)
    else:
        splits = LeaveOneGroupOut().split(dummy, y, groups)
    result = [(np.asarray(train), np.asarray(test)) for train, test in splits]
    for train, test in result:
        if len(np.unique(y[train])) < 2:
            raise ValueError(
                f"leave-one-out: leaving out row(s) {test.tolist()} leaves one class only"
            )
    return result


def restrict(splits: list[Split], positions: np.ndarray) -> list[Split]:
    """Map splits over a sub-table back to row positions of the parent table."""
    positions = np.asarray(positions)
    return [(positions[train], positions[test]) for train, test in splits]
