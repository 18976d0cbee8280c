from __future__ import annotations

import io

import joblib
import numpy as np
import pandas as pd
import pytest

from vqganodip_pipeline.scoring.ensemble import members_of
from vqganodip_pipeline.scoring.model import CompositeScoreModel, evaluate, fit_composite_model
from vqganodip_pipeline.scoring.report import params_json
from vqganodip_pipeline.scoring.search import SearchConfig
from vqganodip_pipeline.scoring.thresholds import metrics_row
from vqganodip_pipeline_tests.scoring.tables import make_metric_table

CONFIG = SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=0)


@pytest.fixture(scope="module")
def model() -> CompositeScoreModel:
    table = make_metric_table(n_normal=24, n_abnormal=18, n_noise=6)
    holdout = make_metric_table(n_normal=5, n_abnormal=5, n_noise=6, seed=11)
    holdout["role"] = "holdout"
    return fit_composite_model(pd.concat([table, holdout]), classifiers=["lr", "nb"], config=CONFIG)


def test_threshold_is_lowest_unseen_calibration_score(model: CompositeScoreModel) -> None:
    calibration = model.calibration_scores
    # a stratified third of the 42 classifier_set rows (holdout excluded) is the calibration part
    assert len(calibration) == 14 and len(model.fit_image_ids) == 28
    assert set(calibration["image_id"]).isdisjoint(model.fit_image_ids)
    # the gap rule: the lowest abnormal calibration score, or just above the highest normal one
    # when that is lower
    lowest_abnormal = calibration.loc[calibration["y"] == 1, "score"].min()
    highest_normal = calibration.loc[calibration["y"] == 0, "score"].max()
    assert model.risk.rule == "gap"
    assert model.threshold == min(lowest_abnormal, np.nextafter(highest_normal, np.inf))
    assert model.risk.lowered_to_normals == (highest_normal < lowest_abnormal)
    assert (model.n_abnormal_calibration, model.n_normal_calibration) == (6, 8)
    # the scores are the shipped pipeline's own
    table = make_metric_table(n_normal=24, n_abnormal=18, n_noise=6).set_index("image_id")
    rows = table.loc[calibration["image_id"]].reset_index()
    np.testing.assert_allclose(model.score(rows), calibration["score"])
    assert model.risk.expected_miss_rate == pytest.approx(1 / 7)
    assert model.risk.miss_rate_upper_bound == pytest.approx(1 - 0.05 ** (1 / 6))
    assert model.risk.n_below == 0 and "exchangeable" in model.risk.sentence()
    assert model.calibration["fnr_zfn"] == 0.0
    # the default composite: the mean of both candidates' fold models (3 inner folds each)
    assert model.classifier == "mean" and model.params["members"] == ["lr", "nb"]
    assert model.params["fold_models"] == 6 and set(model.selection["classifier"]) == {"lr", "nb"}
    assert "patch__const__sum__raw" in model.feature_names_in
    assert "patch__const__sum__raw" not in model.feature_names_kept
    assert model.dropped_correlated["patch__dup0__sum__raw"] == "patch__fid0__sum__weighted"
    assert set(model.versions) >= {
        "scikit-learn",
        "xgboost",
        "lightgbm",
        "imbalanced-learn",
        "numpy",
    }
    summary = model.summary()
    assert summary["threshold"] == model.threshold and summary["config"]["n_iter"] == 2


def test_mean_is_the_mean_of_every_fold_model_and_best_is_the_out_of_fold_choice(
    model: CompositeScoreModel,
) -> None:
    table = make_metric_table(n_normal=6, n_abnormal=6, n_noise=6, seed=4)
    X = table[model.feature_names_in].astype(np.float64)
    members = model.pipeline.members
    assert [type(m).__name__ for m in members] == ["Pipeline"] * 6
    expected = np.mean([m.predict_proba(X)[:, 1] for m in members], axis=0)
    np.testing.assert_allclose(model.score(table), expected)
    # the fold models differ (each fitted without one inner fold)
    assert not np.allclose(members[0].predict_proba(X), members[1].predict_proba(X))
    training = make_metric_table(n_normal=24, n_abnormal=18, n_noise=6)
    best = fit_composite_model(
        training,
        classifiers=["lr", "nb"],
        config=SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=0, combine="best"),
    )
    assert best.classifier == best.selection.loc[0, "classifier"] in {"lr", "nb"}
    assert len(best.pipeline.members) == 3  # the chosen candidate's fold models
    assert params_json(best.params) == best.selection.loc[0, "best_params"]
    with pytest.raises(ValueError, match="combine must be one of"):
        SearchConfig(combine="vote")


def test_score_decide_and_pickle_round_trip(model: CompositeScoreModel) -> None:
    table = make_metric_table(n_normal=8, n_abnormal=8, n_noise=6, seed=3)
    table["label"] = "unknown"  # scoring needs no labels
    scores = model.score(table)
    assert scores.shape == (16,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(model.decide(table), scores >= model.threshold)
    # Column order and extra columns do not matter.
    shuffled = table[table.columns[::-1]].assign(extra__metric__sum__raw=1.0)
    np.testing.assert_array_equal(model.score(shuffled), scores)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.score(table), scores)
    assert loaded.threshold == model.threshold


def test_scoring_errors_name_missing_columns_and_bad_values(model: CompositeScoreModel) -> None:
    table = make_metric_table(n_normal=3, n_abnormal=3, n_noise=6, seed=5)
    with pytest.raises(ValueError, match=r"lacks 2 of the model's 16 metric columns: .*fid3"):
        model.score(table.drop(columns=["patch__fid3__mean__weighted", "pixel__noise0__sum__raw"]))
    table.loc[2, "patch__fid1__max__weighted"] = np.nan
    with pytest.raises(ValueError, match=r"patch__fid1__max__weighted; image\(s\): img002"):
        model.score(table)


def test_evaluate_on_holdout(model: CompositeScoreModel) -> None:
    holdout = make_metric_table(n_normal=10, n_abnormal=10, n_noise=6, seed=21)
    report = evaluate(model, holdout)
    scores = model.score(holdout)
    y = (holdout["label"] == "abnormal").to_numpy().astype(int)
    expected = metrics_row(scores, y, model.threshold)
    assert {key: report[key] for key in expected} == expected
    missed = holdout["image_id"][(y == 1) & (scores < model.threshold)].tolist()
    assert report["missed_image_ids"] == missed and report["missed_zfn"] == len(missed)
    assert report["n_images"] == 20


def test_fit_errors_one_class_and_too_few_abnormal() -> None:
    table = make_metric_table(n_normal=20, n_abnormal=2, n_noise=2)
    with pytest.raises(ValueError, match="2 abnormal and 20 normal images cannot fill 3"):
        fit_composite_model(table, classifiers=["nb"], config=CONFIG)
    normal_only = table[table["label"] == "normal"]
    with pytest.raises(ValueError, match="20 normal and 0 abnormal"):
        fit_composite_model(normal_only, classifiers=["nb"], config=CONFIG)
    with pytest.raises(ValueError, match="unknown classifier"):
        fit_composite_model(table, classifiers=["svm"], config=CONFIG)


def test_imbalanced_table_uses_smote_inside_the_shipped_pipeline() -> None:
    table = make_metric_table(n_normal=30, n_abnormal=9, n_noise=4)
    model = fit_composite_model(table, classifiers=["nb"], config=CONFIG)
    assert all("smote" in m.named_steps for m in members_of(model.pipeline))
    balanced = fit_composite_model(make_metric_table(n_noise=4), classifiers=["nb"], config=CONFIG)
    assert not any("smote" in m.named_steps for m in members_of(balanced.pipeline))
