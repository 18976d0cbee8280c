"""The composite's mean of fitted models: exact means, checked inputs, what it keeps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from vqganodip_pipeline.scoring.classifiers import build_pipeline, classifier_registry
from vqganodip_pipeline.scoring.ensemble import (
    MeanProbability,
    dropped_in_every_member,
    kept_metrics,
    members_of,
)
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def _pipelines() -> tuple[np.ndarray, list]:
    table = training_table(make_metric_table(n_normal=20, n_abnormal=20, n_noise=4))
    specs = classifier_registry(max_estimators=5)
    fitted = []
    for code, rows in (("lr", slice(0, 30)), ("rf", slice(10, 40)), ("nb", slice(0, 40))):
        X, y = table.X[rows], table.y[rows]
        fitted.append((code, build_pipeline(specs[code], seed=0).fit(X, y)))
    return table.X, fitted


def test_mean_probability_is_the_mean_of_its_members() -> None:
    X, fitted = _pipelines()
    mean = MeanProbability([p for _, p in fitted], [code for code, _ in fitted])
    expected = np.mean([p.predict_proba(X) for _, p in fitted], axis=0)
    np.testing.assert_allclose(mean.predict_proba(X), expected)
    np.testing.assert_array_equal(mean.predict(X), np.argmax(expected, axis=1))
    np.testing.assert_array_equal(mean.classes_, [0, 1])
    assert repr(mean) == "MeanProbability(lr x1, rf x1, nb x1)"
    nested = MeanProbability([mean, fitted[0][1]], ["mean", "lr"])
    assert [id(m) for m in members_of(nested)] == [id(p) for _, p in fitted] + [id(fitted[0][1])]
    # kept metrics: every metric that reaches some member, none twice
    kept = kept_metrics(mean)
    assert len(kept) == len(set(kept))
    for _, pipeline in fitted:
        assert set(pipeline.named_steps["preprocess"].get_feature_names_out()) <= set(kept)
    dropped = dropped_in_every_member(mean)
    for _, pipeline in fitted:
        assert set(dropped) <= set(pipeline.named_steps["preprocess"].dropped_correlated())


def test_mean_probability_refuses_bad_members() -> None:
    X, fitted = _pipelines()
    with pytest.raises(ValueError, match="at least one"):
        MeanProbability([], [])
    with pytest.raises(ValueError, match="2 labels for 1 members"):
        MeanProbability([fitted[0][1]], ["a", "b"])
    other = LogisticRegression().fit(X[:20], np.r_[np.zeros(10), np.full(10, 2)].astype(int))
    with pytest.raises(ValueError, match="disagree on their classes"):
        MeanProbability([fitted[0][1], other], ["lr", "other"])
