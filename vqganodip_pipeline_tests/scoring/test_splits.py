from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.scoring.splits import leave_one_out, stratified_folds
from vqganodip_pipeline.scoring.table import group_ids, labels_to_y
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def test_folds_partition_rows_and_stratify() -> None:
    y = np.r_[np.zeros(20, int), np.ones(10, int)]
    folds = stratified_folds(y, None, 5, seed=0)
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(30))
    for train, test in folds:
        assert set(train).isdisjoint(test)
        assert y[test].sum() == 2
    again = stratified_folds(y, None, 5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_groups_never_split_across_folds_or_leave_one_out() -> None:
    table = make_metric_table(20, 14, pair_groups=True)
    groups = group_ids(table)
    y = labels_to_y(table)
    assert groups is not None
    for folds in (stratified_folds(y, groups, 4, seed=1), leave_one_out(y, groups)):
        for train, test in folds:
            assert set(groups[train]).isdisjoint(groups[test])
    assert len(leave_one_out(y, groups)) == 20  # one split per pair / lone image


def test_one_class_or_too_few_abnormal_images_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="0 abnormal"):
        stratified_folds(np.zeros(10, int), None, 5, seed=0)
    with pytest.raises(ValueError, match=r"3 abnormal and 12 normal images cannot fill 5"):
        stratified_folds(np.r_[np.zeros(12, int), np.ones(3, int)], None, 5, seed=0)
    y = np.r_[np.zeros(6, int), np.ones(6, int)]
    groups = np.array(["g0", "g1"] * 6)
    with pytest.raises(ValueError, match="fall into 2 group"):
        stratified_folds(y, groups, 3, seed=0)
