from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from vqganodip_pipeline.scoring.baselines import BestSingleMetric
from vqganodip_pipeline.scoring.preprocess import MetricPreprocessor
from vqganodip_pipeline.scoring.table import labels_to_y, metric_columns
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def _constructed(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    c = rng.normal(size=n)
    b_strong = 0.999 * a + 0.045 * rng.normal(size=n)
    return pd.DataFrame(
        {
            "m__a__sum__raw": a,
            "m__const__sum__raw": np.full(n, 7.0),
            "m__neg__sum__raw": -3.0 * a + 2.0,  # |r| = 1 with a: dropped for a
            "m__strong__sum__raw": b_strong,  # r ~ 0.999 with a: dropped for a
            "m__mid__sum__raw": 0.9 * a + np.sqrt(1 - 0.81) * c,  # r ~ 0.9 with a: kept
            "m__c__sum__raw": c,
            "m__noise__sum__raw": rng.normal(size=n),
            "m__const2__sum__raw": np.zeros(n),
        }
    )


def test_constant_and_correlated_columns_removed_keeping_the_earlier_column() -> None:
    frame = _constructed()
    corr = frame.drop(columns=["m__const__sum__raw", "m__const2__sum__raw"]).corr().abs()
    assert corr.loc["m__strong__sum__raw", "m__a__sum__raw"] > 0.95
    assert corr.loc["m__mid__sum__raw", "m__a__sum__raw"] < 0.95
    assert corr.loc["m__mid__sum__raw", "m__c__sum__raw"] < 0.95
    pre = MetricPreprocessor().fit(frame)
    assert list(pre.get_feature_names_out()) == [
        "m__a__sum__raw",
        "m__mid__sum__raw",
        "m__c__sum__raw",
        "m__noise__sum__raw",
    ]
    assert pre.dropped_correlated() == {
        "m__neg__sum__raw": "m__a__sum__raw",
        "m__strong__sum__raw": "m__a__sum__raw",
    }
    np.testing.assert_array_equal(
        pre.constant_, [False, True, False, False, False, False, False, True]
    )
    # Kept columns are pairwise below the threshold.
    kept = frame[list(pre.get_feature_names_out())].to_numpy()
    for i in range(kept.shape[1]):
        for j in range(i + 1, kept.shape[1]):
            assert abs(pearsonr(kept[:, i], kept[:, j]).statistic) <= 0.95


def test_correlation_chain_keeps_a_column_whose_partner_was_dropped() -> None:
    rng = np.random.default_rng(3)
    a, e = rng.normal(size=2000), rng.normal(size=2000)
    frame = pd.DataFrame({"x__a": a, "x__b": a + 0.25 * e, "x__c": a + 0.5 * e})
    corr = frame.corr().abs()
    assert corr.loc["x__a", "x__b"] > 0.95 and corr.loc["x__b", "x__c"] > 0.95
    assert corr.loc["x__a", "x__c"] < 0.95
    # b goes for a; c only duplicates the dropped b, so it stays.
    pre = MetricPreprocessor().fit(frame)
    assert list(pre.get_feature_names_out()) == ["x__a", "x__c"]
    assert pre.dropped_correlated() == {"x__b": "x__a"}
    no_filter = MetricPreprocessor(correlation_threshold=None).fit(frame)
    assert list(no_filter.get_feature_names_out()) == ["x__a", "x__b", "x__c"]


def test_scaling_uses_training_min_max_only() -> None:
    frame = _constructed()
    train, test = frame.iloc[:25], frame.iloc[25:]
    pre = MetricPreprocessor().fit(train)
    kept = list(pre.get_feature_names_out())
    np.testing.assert_allclose(pre.data_min_, train[kept].min().to_numpy())
    np.testing.assert_allclose(pre.data_range_, (train[kept].max() - train[kept].min()).to_numpy())
    train_t = pre.transform(train)
    assert train_t.min(axis=0) == pytest.approx(0.0) and train_t.max(axis=0) == pytest.approx(1.0)
    expected = (test[kept] - train[kept].min()) / (train[kept].max() - train[kept].min())
    np.testing.assert_allclose(pre.transform(test), expected.to_numpy())
    # Stats from the training rows differ from those of the full table.
    full = MetricPreprocessor().fit(frame)
    assert not np.allclose(full.data_min_, pre.data_min_)


def test_arrays_get_generic_names_and_bad_input_is_rejected() -> None:
    X = np.column_stack([np.arange(5.0), np.ones(5), np.arange(5.0) ** 2, [0, 3, 1, 4, 2]])
    assert np.corrcoef(X[:, 0], X[:, 2])[0, 1] == pytest.approx(0.9589, abs=1e-4)
    pre = MetricPreprocessor().fit(X)
    assert list(pre.get_feature_names_out()) == ["x0", "x3"]
    assert list(pre.get_feature_names_out(["a", "b", "c", "d"])) == ["a", "d"]
    with pytest.raises(ValueError, match="all 2 metric columns are constant"):
        MetricPreprocessor().fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match="correlation_threshold"):
        MetricPreprocessor(correlation_threshold=1.5).fit(X)
    with pytest.raises(ValueError):
        MetricPreprocessor().fit(np.array([[np.nan, 1.0], [2.0, 3.0]]))


def test_max_features_keeps_the_columns_with_the_strongest_training_auroc() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30)
    X = pd.DataFrame(
        {
            "noise": rng.normal(size=60),
            "weak": y * 0.3 + rng.normal(size=60),
            "strong_low": -3.0 * y + rng.normal(size=60),  # separates by being lower
            "strong": 3.0 * y + rng.normal(size=60),
            "constant": np.ones(60),
        }
    )
    pre = MetricPreprocessor(max_features=2).fit(X, y)
    assert list(pre.get_feature_names_out()) == ["strong_low", "strong"]
    for name in ("noise", "weak", "strong_low", "strong"):
        j = list(X.columns).index(name)
        assert pre.auroc_[j] == pytest.approx(roc_auc_score(y, X[name]))
    assert np.isnan(pre.auroc_[4])  # filtered as constant before the ranking
    assert pre.transform(X).shape == (60, 2)
    assert len(MetricPreprocessor(max_features=10).fit(X, y).get_feature_names_out()) == 4
    with pytest.raises(ValueError, match="needs labels y"):
        MetricPreprocessor(max_features=2).fit(X)
    with pytest.raises(ValueError, match="both classes"):
        MetricPreprocessor(max_features=2).fit(X, np.zeros(60))
    with pytest.raises(ValueError, match=">= 1"):
        MetricPreprocessor(max_features=0).fit(X, y)


def test_max_features_inside_a_pipeline_ranks_on_the_training_fold_only() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 20)
    X = rng.normal(size=(40, 6))
    train, test = np.arange(30), np.arange(30, 40)
    # column 5 separates only the test rows: a ranking that saw them would pick it
    X[test, 5] = y[test] * 10.0
    X[train, 2] += 2.0 * y[train]
    pipeline = make_pipeline(MetricPreprocessor(max_features=1), LogisticRegression())
    pipeline.fit(X[train], y[train])
    assert pipeline[0].support_.tolist() == [False, False, True, False, False, False]


def test_max_features_auto_keeps_one_metric_per_ten_minority_images() -> None:
    rng = np.random.default_rng(2)
    y = np.array([0] * 70 + [1] * 35)
    X = rng.normal(size=(105, 12)) + np.outer(y, np.linspace(0.1, 2.0, 12))
    pre = MetricPreprocessor(max_features="auto", correlation_threshold=None).fit(X, y)
    assert pre.n_features_kept_ == 3 and pre.support_.sum() == 3
    assert pre.support_[-3:].all()  # the three columns shifted most by the label
    few = MetricPreprocessor(max_features="auto", correlation_threshold=None).fit(X[60:], y[60:])
    assert few.support_.sum() == 2  # 10 minority images: the floor of two metrics
    with pytest.raises(ValueError, match="'auto'"):
        MetricPreprocessor(max_features="many").fit(X, y)


def test_transform_of_the_fitted_columns_equals_the_validated_path_and_checks_values() -> None:
    table = make_metric_table(n_normal=20, n_abnormal=20, n_noise=4)
    frame = table[metric_columns(table)].astype(np.float64)
    y = labels_to_y(table)
    pre = MetricPreprocessor(max_features=5).fit(frame, y)
    fast = pre.transform(frame)  # same columns, same order: no per-column validation
    # scikit-learn's validation path: the same fit on the bare array
    reference = MetricPreprocessor(max_features=5).fit(frame.to_numpy(), y)
    reference = reference.transform(frame.to_numpy())
    np.testing.assert_array_equal(fast, reference)
    broken = frame.copy()
    broken.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pre.transform(broken)
    with pytest.raises(ValueError, match="feature names"):
        pre.transform(frame[frame.columns[::-1]])  # reordered: validated, refused by name


def test_max_features_keeps_the_stronger_column_of_a_correlated_pair() -> None:
    rng = np.random.default_rng(4)
    y = np.array([0] * 40 + [1] * 40)
    signal = 2.0 * y + rng.normal(size=80)
    # "copy" is the signal seen through extra noise: r > 0.95 with it, but a weaker AUROC, and
    # listed first, as a sum aggregate before its max
    frame = pd.DataFrame(
        {
            "m__copy__sum__raw": signal + 0.2 * rng.normal(size=80),
            "m__signal__max__raw": signal,
            "m__other__sum__raw": 0.8 * y + rng.normal(size=80),
            "m__noise__sum__raw": rng.normal(size=80),
        }
    )
    aurocs = {name: roc_auc_score(y, frame[name]) for name in frame.columns}
    assert aurocs["m__signal__max__raw"] > aurocs["m__copy__sum__raw"] > 0.5
    assert frame.corr().loc["m__copy__sum__raw", "m__signal__max__raw"] > 0.95
    ranked = MetricPreprocessor(max_features=2).fit(frame, y)
    assert list(ranked.get_feature_names_out()) == ["m__signal__max__raw", "m__other__sum__raw"]
    assert ranked.dropped_correlated() == {"m__copy__sum__raw": "m__signal__max__raw"}
    # every non-constant column is ranked, the dropped copy included
    for j, name in enumerate(frame.columns):
        assert ranked.auroc_[j] == pytest.approx(aurocs[name])
    # without the ranking the paper's order decides: the earlier column stays
    paper = MetricPreprocessor().fit(frame, y)
    assert paper.dropped_correlated() == {"m__signal__max__raw": "m__copy__sum__raw"}
    # one column kept is the best single metric baseline's column
    best = MetricPreprocessor(max_features=1).fit(frame, y)
    baseline = BestSingleMetric(columns=list(frame.columns)).fit(frame, y)
    assert list(best.get_feature_names_out()) == [baseline.column_] == ["m__signal__max__raw"]
