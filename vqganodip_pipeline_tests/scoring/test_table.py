from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vqganodip_pipeline.scoring.table import (
    check_finite,
    group_ids,
    labels_to_y,
    metric_columns,
    select_role,
    training_table,
)
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "label": ["normal", "abnormal", "normal"],
            "defect_type": ["good", "short", "good"],
            "role": ["classifier_set", "classifier_set", "holdout"],
            "group_id": ["g0", "g1", "g2"],
            "patch__ssim__sum__weighted": [0.1, 0.2, 0.3],
            "image__orb__count__raw": [3, 4, 5],  # integer: not a metric column by contract
            "image__mse__value__raw": [1.0, 2.0, 3.0],
            "baseline__golden_mse__value__raw": [0.5, 0.7, 0.9],
            "score": [0.1, 0.2, 0.3],  # float without "__"
            "patch__note__text__raw": ["x", "y", "z"],
        }
    )


def test_metric_columns_are_float_double_underscore_non_baseline_in_table_order() -> None:
    assert metric_columns(_frame()) == ["patch__ssim__sum__weighted", "image__mse__value__raw"]
    assert metric_columns(_frame(), exclude_prefixes=()) == [
        "patch__ssim__sum__weighted",
        "image__mse__value__raw",
        "baseline__golden_mse__value__raw",
    ]


def test_labels_to_y_maps_abnormal_to_one_and_names_bad_images() -> None:
    np.testing.assert_array_equal(labels_to_y(_frame()), [0, 1, 0])
    frame = _frame()
    frame.loc[2, "label"] = "unknown"
    with pytest.raises(ValueError, match=r"\['unknown'\]: c"):
        labels_to_y(frame)
    with pytest.raises(ValueError, match="no 'label' column"):
        labels_to_y(frame.drop(columns="label"))


def test_check_finite_names_columns_and_image_ids() -> None:
    frame = _frame()
    frame.loc[1, "image__mse__value__raw"] = np.inf
    frame.loc[2, "patch__ssim__sum__weighted"] = np.nan
    with pytest.raises(ValueError) as info:
        check_finite(frame, metric_columns(frame))
    message = str(info.value)
    assert "patch__ssim__sum__weighted, image__mse__value__raw" in message
    assert "image(s): b, c" in message
    with pytest.raises(ValueError, match="lacks 1 metric column"):
        check_finite(frame, ["patch__absent__sum__raw"])


def test_group_ids_only_when_a_group_repeats() -> None:
    assert group_ids(_frame()) is None
    paired = make_metric_table(4, 4, pair_groups=True)
    groups = group_ids(paired)
    assert groups is not None and len(np.unique(groups)) == 4
    frame = _frame()
    frame.loc[0, "group_id"] = None
    with pytest.raises(ValueError, match="group_id is missing for 1 image"):
        group_ids(frame)


def test_select_role_and_training_table() -> None:
    assert list(select_role(_frame(), "holdout")["image_id"]) == ["c"]
    assert len(select_role(_frame().drop(columns="role"), "holdout")) == 3
    with pytest.raises(ValueError, match=r"no rows with role 'train'.*'classifier_set', 'holdout'"):
        select_role(_frame(), "train")
    table = training_table(_frame(), "classifier_set")
    assert table.columns == ["patch__ssim__sum__weighted", "image__mse__value__raw"]
    np.testing.assert_array_equal(table.X, [[0.1, 1.0], [0.2, 2.0]])
    np.testing.assert_array_equal(table.y, [0, 1])
    assert list(table.image_ids) == ["a", "b"]
