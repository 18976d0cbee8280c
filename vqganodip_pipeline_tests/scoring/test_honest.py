from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vqganodip_pipeline.scoring.honest import COMPOSITE, fold_mean_auroc, run_honest_protocol
from vqganodip_pipeline.scoring.search import SearchConfig
from vqganodip_pipeline.scoring.table import metric_columns
from vqganodip_pipeline_tests.scoring.tables import make_metric_table

CONFIG = SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=0)
CLASSIFIERS = ["lr", "nb", "knn"]


def _table(**kwargs: object) -> pd.DataFrame:
    table = make_metric_table(n_normal=24, n_abnormal=18, n_noise=6, **kwargs)
    rng = np.random.default_rng(7)
    table["baseline__golden_mse__value__raw"] = table["image__mse__value__raw"] + rng.normal(
        size=len(table)
    )
    return table


@pytest.fixture(scope="module")
def result():
    return run_honest_protocol(_table(), classifiers=CLASSIFIERS, config=CONFIG, n_outer=3)


def test_outer_test_rows_are_never_given_to_a_fit(result) -> None:
    n = len(result.y)
    tests = np.concatenate([fold.test_rows for fold in result.folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(n))
    for fold in result.folds:
        test = set(fold.test_rows.tolist())
        assert test.isdisjoint(fold.train_rows.tolist())
        assert set(fold.test_image_ids) == set(result.image_ids[fold.test_rows])
        for inner_train, inner_test in fold.inner_splits:
            assert test.isdisjoint(inner_train.tolist()) and test.isdisjoint(inner_test.tolist())
        records = [r for r in result.fit_log if r.outer_fold == fold.fold]
        stages = {r.stage for r in records}
        assert {
            "inner_search",
            "inner_calibration",
            "fold_models",
            "baseline_fit",
            "conformal_calibration",
        } <= stages
        fit, cal = set(fold.fit_rows.tolist()), set(fold.calibration_rows.tolist())
        assert fit.isdisjoint(cal) and fit | cal == set(fold.train_rows.tolist())
        for record in records:
            if record.stage == "test_scoring":
                np.testing.assert_array_equal(record.rows, fold.test_rows)
            elif record.stage == "conformal_calibration":
                np.testing.assert_array_equal(record.rows, fold.calibration_rows)
            else:
                # search, out-of-fold choice, fold models, baseline fit: the fit part only
                assert cal.isdisjoint(record.rows.tolist()), record
                assert test.isdisjoint(record.rows.tolist()), record


def test_outer_test_values_do_not_influence_choice_search_or_threshold(result) -> None:
    # Replace the metric values of outer fold 0's test part by noise: everything learnt in fold 0
    # must stay identical, only its test scores may change.
    table = _table()
    test = result.folds[0].test_rows
    columns = [*metric_columns(table), "baseline__golden_mse__value__raw"]
    rng = np.random.default_rng(99)
    table.loc[test, columns] = rng.normal(5.0, 3.0, size=(len(test), len(columns)))
    perturbed = run_honest_protocol(table, classifiers=CLASSIFIERS, config=CONFIG, n_outer=3)
    np.testing.assert_array_equal(perturbed.folds[0].test_rows, test)
    learnt = ["method", "selected", "params", "threshold_zfn", "threshold_std", "inner_cv_accuracy"]
    before = result.fold_details.query("fold == 0")[learnt].reset_index(drop=True)
    after = perturbed.fold_details.query("fold == 0")[learnt].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    scores_before = result.predictions.query("fold == 0")["score"].to_numpy()
    scores_after = perturbed.predictions.query("fold == 0")["score"].to_numpy()
    assert not np.allclose(scores_before, scores_after)


def test_leaderboard_pools_outer_test_parts(result) -> None:
    board = result.leaderboard.set_index("classifier")
    expected_methods = {*CLASSIFIERS, COMPOSITE, "raw_mse", "best_single_metric", "golden_sample"}
    assert set(board.index) == expected_methods
    n_abnormal, n = int(result.y.sum()), len(result.y)
    for method, row in board.iterrows():
        assert row["tp_zfn"] + row["fn_zfn"] == n_abnormal
        assert row["tp_zfn"] + row["fp_zfn"] + row["tn_zfn"] + row["fn_zfn"] == n
        part = result.predictions[result.predictions["method"] == method]
        decided = part["score"] >= part["threshold_zfn"]
        assert row["missed_zfn"] == int(((part["y"] == 1) & ~decided).sum())
        assert row["fnr_zfn"] == pytest.approx(row["missed_zfn"] / n_abnormal)
    # The composite row is, fold by fold, the classifier chosen on the training part.
    details = result.fold_details
    for fold in result.folds:
        chosen = details[(details["fold"] == fold.fold) & (details["method"] == COMPOSITE)]
        assert chosen["selected"].item() == fold.selected
    assert result.extra["selected_per_fold"] == [fold.selected for fold in result.folds]


def test_fold_mean_auroc_is_the_mean_of_each_folds_own(result) -> None:
    board = result.leaderboard.set_index("classifier")
    for method, row in board.iterrows():
        part = result.predictions[result.predictions["method"] == method]
        per_fold = [roc_auc_score(f["y"], f["score"]) for _, f in part.groupby("fold")]
        assert row["auroc_fold_mean"] == pytest.approx(np.mean(per_fold))
        assert row["auroc_pooled"] == pytest.approx(roc_auc_score(part["y"], part["score"]))
    # two folds, each ranked perfectly by its own model on its own scale: every fold's AUROC
    # is 1, pooled the second fold's normal units outrank the first fold's abnormal ones
    shifted = pd.DataFrame(
        {
            "fold": [0, 0, 0, 0, 1, 1, 1, 1],
            "y": [0, 0, 1, 1, 0, 0, 1, 1],
            "score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        }
    )
    assert fold_mean_auroc(shifted) == 1.0
    assert roc_auc_score(shifted["y"], shifted["score"]) == 0.75
    # a fold with one class has no AUROC and is left out; none with both: NaN
    one_class = pd.concat([shifted, pd.DataFrame({"fold": [2], "y": [1], "score": [0.0]})])
    assert fold_mean_auroc(one_class) == 1.0
    assert np.isnan(fold_mean_auroc(shifted[shifted["y"] == 1]))


def test_thresholds_come_from_the_calibration_part(result) -> None:
    details = result.fold_details
    table = _table()
    for fold in result.folds:
        mse = details[(details["fold"] == fold.fold) & (details["method"] == "raw_mse")]
        cal = table.iloc[fold.calibration_rows]
        expected = cal.loc[cal["label"] == "abnormal", "image__mse__value__raw"].min()
        assert mse["threshold_zfn"].item() == expected
        assert (
            details.query(f"fold == {fold.fold}")["n_abnormal_calibration"]
            == result.y[fold.calibration_rows].sum()
        ).all()


def test_margin_lowers_every_classifier_threshold() -> None:
    table = _table()
    plain = run_honest_protocol(table, classifiers=["nb"], config=CONFIG, n_outer=3)
    wide = run_honest_protocol(table, classifiers=["nb"], config=CONFIG, n_outer=3, margin=0.05)
    a = plain.fold_details.query("method == 'nb'")["threshold_zfn"].to_numpy()
    b = wide.fold_details.query("method == 'nb'")["threshold_zfn"].to_numpy()
    np.testing.assert_allclose(b, a - 0.05)
    assert (
        wide.leaderboard.set_index("classifier").loc["nb", "missed_zfn"]
        <= (plain.leaderboard.set_index("classifier").loc["nb", "missed_zfn"])
    )


def test_groups_stay_together_and_missing_baselines_are_noted() -> None:
    table = _table(pair_groups=True).drop(columns="baseline__golden_mse__value__raw")
    result = run_honest_protocol(table, classifiers=["nb"], config=CONFIG, n_outer=3)
    groups = table["group_id"].to_numpy()
    for fold in result.folds:
        assert set(groups[fold.train_rows]).isdisjoint(groups[fold.test_rows])
        for inner_train, inner_test in fold.inner_splits:
            assert set(groups[inner_train]).isdisjoint(groups[inner_test])
    assert any("golden_sample" in note and "not in the table" in note for note in result.notes)
    assert "golden_sample" not in set(result.leaderboard["classifier"])


def test_too_few_abnormal_images_for_nested_folds() -> None:
    # 6 defects: 2 go to the calibration part, 4 cannot fill 5 search folds of the fit part
    table = make_metric_table(n_normal=20, n_abnormal=6, n_noise=2)
    with pytest.raises(
        ValueError,
        match=r"classifier set, fit part: 4 abnormal and \d+ normal images cannot fill 5",
    ):
        run_honest_protocol(
            table, classifiers=["nb"], config=SearchConfig(n_iter=1, n_splits=5), n_outer=3
        )


def test_each_outer_fold_is_checked_before_any_fit() -> None:
    # 9 defects fill the whole set's parts (3 + 6 >= 5) but not an outer training part's
    table = make_metric_table(n_normal=20, n_abnormal=9, n_noise=2)
    with pytest.raises(
        ValueError,
        match=r"outer fold \d+, fit part: 4 abnormal and \d+ normal images cannot fill 5",
    ):
        run_honest_protocol(
            table, classifiers=["nb"], config=SearchConfig(n_iter=1, n_splits=5), n_outer=3
        )


def test_calibration_values_do_not_influence_search_choice_or_fits(result) -> None:
    # Replace the metric values of outer fold 0's calibration part by noise: the search, the
    # classifier choice and the fitted models must stay identical; only the thresholds read off
    # the calibration scores may move.
    table = _table()
    cal = result.folds[0].calibration_rows
    columns = [*metric_columns(table), "baseline__golden_mse__value__raw"]
    table.loc[cal, columns] = np.random.default_rng(3).normal(5.0, 3.0, (len(cal), len(columns)))
    perturbed = run_honest_protocol(table, classifiers=CLASSIFIERS, config=CONFIG, n_outer=3)
    np.testing.assert_array_equal(perturbed.folds[0].calibration_rows, cal)
    learnt = ["method", "selected", "params", "threshold_std", "inner_cv_accuracy"]
    classifiers = "kind != 'baseline'"
    before = result.fold_details.query(f"fold == 0 and {classifiers}")
    after = perturbed.fold_details.query(f"fold == 0 and {classifiers}")
    pd.testing.assert_frame_equal(
        before[learnt].reset_index(drop=True), after[learnt].reset_index(drop=True)
    )
    assert perturbed.folds[0].selected == result.folds[0].selected
    assert not np.allclose(before["threshold_zfn"], after["threshold_zfn"])
