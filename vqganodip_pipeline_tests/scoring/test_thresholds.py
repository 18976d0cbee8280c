from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from vqganodip_pipeline.scoring.baselines import auroc_columns, single_metric_auroc
from vqganodip_pipeline.scoring.thresholds import (
    accuracy_threshold,
    auroc,
    confusion_at_threshold,
    metrics_row,
    zfn_threshold,
)
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def test_zfn_threshold_is_lowest_abnormal_score_and_ties_count_as_abnormal() -> None:
    scores = np.array([0.1, 0.4, 0.4, 0.7, 0.4, 0.9])
    y = np.array([0, 0, 1, 1, 0, 1])
    threshold = zfn_threshold(scores, y)
    assert threshold == 0.4
    metrics = confusion_at_threshold(scores, y, threshold)
    # The two normal images tied at 0.4 are flagged with the abnormal one.
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (3, 2, 1, 0)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx(3 / 5)
    assert metrics["fpr"] == pytest.approx(2 / 3)
    assert metrics["fnr"] == 0.0 and metrics["missed"] == 0


def test_single_abnormal_image_and_all_scores_equal() -> None:
    assert zfn_threshold([0.2, 0.9, 0.3], [0, 1, 0]) == 0.9
    equal = np.full(5, 0.5)
    y = np.array([0, 1, 0, 1, 0])
    assert zfn_threshold(equal, y) == 0.5
    metrics = confusion_at_threshold(equal, y, 0.5)
    assert (metrics["tp"], metrics["fp"], metrics["fpr"], metrics["accuracy"]) == (2, 3, 1.0, 0.4)


def test_margin_lowers_the_threshold() -> None:
    scores, y = [0.3, 0.6, 0.8], [0, 1, 1]
    assert zfn_threshold(scores, y, margin=0.05) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="margin"):
        zfn_threshold(scores, y, margin=-0.1)


def test_zfn_threshold_gives_recall_one_in_sample() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, size=50)
        y[0] = 1
        scores = rng.random(50)
        metrics = confusion_at_threshold(scores, y, zfn_threshold(scores, y))
        assert metrics["fn"] == 0 and metrics["tp"] == y.sum()


def test_errors_for_no_abnormal_bad_labels_and_nan() -> None:
    with pytest.raises(ValueError, match="at least one abnormal"):
        zfn_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="only 0"):
        zfn_threshold([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        zfn_threshold([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="equal length"):
        confusion_at_threshold([0.1, 0.2], [0, 1, 1], 0.5)


def test_precision_without_predicted_positives_is_zero_and_empty_rates() -> None:
    metrics = confusion_at_threshold([0.1, 0.2, 0.3], [0, 1, 0], 0.9)
    assert metrics["precision"] == 0.0 and metrics["fnr"] == 1.0 and metrics["missed"] == 1
    only_normal = confusion_at_threshold([0.1, 0.7], [0, 0], 0.5)
    assert only_normal["fnr"] == 0.0 and only_normal["fpr"] == 0.5


def test_accuracy_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        y = rng.integers(0, 2, size=30)
        scores = np.round(rng.random(30), 1)  # ties
        threshold = accuracy_threshold(scores, y)
        candidates = [*np.unique(scores), np.inf]
        best = max(accuracy_score(y, scores >= c) for c in candidates)
        assert accuracy_score(y, scores >= threshold) == pytest.approx(best)
    assert accuracy_threshold([0.1, 0.2], [0, 0]) == np.inf


def test_auroc_helpers_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=40)
    X = np.round(rng.normal(size=(40, 5)) + y[:, None] * [0, 1, 2, -1, 0], 1)
    expected = [roc_auc_score(y, X[:, j]) for j in range(5)]
    np.testing.assert_allclose(auroc_columns(X, y), expected)
    assert auroc(X[:, 1], y) == pytest.approx(expected[1])
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))
    table = make_metric_table(10, 10)
    series = single_metric_auroc(table)
    assert series["patch__const__sum__raw"] == 0.5
    assert series["patch__fid0__sum__weighted"] == pytest.approx(
        roc_auc_score(table["label"] == "abnormal", table["patch__fid0__sum__weighted"])
    )


def test_metrics_row_keys_and_values() -> None:
    row = metrics_row([0.2, 0.6, 0.4, 0.9], [0, 1, 0, 1], threshold_zfn=0.6)
    assert row["accuracy_std"] == 1.0 and row["accuracy_zfn"] == 1.0
    assert row["threshold_std"] == 0.5 and row["auroc"] == 1.0
    assert (row["n_abnormal"], row["n_normal"]) == (2, 2)
    assert {f"{k}_{s}" for k in ("tp", "fp", "tn", "fn") for s in ("std", "zfn")} <= set(row)
