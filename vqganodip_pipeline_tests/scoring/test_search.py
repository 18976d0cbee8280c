"""SMOTE stays inside the training part of every split: a probe classifier records every array
it is fitted on and scored on (n_jobs=1 keeps the calls in this process)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from scipy.stats import uniform
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import cross_val_predict

from vqganodip_pipeline.scoring.calibrate import calibrate_candidates
from vqganodip_pipeline.scoring.classifiers import (
    ClassifierSpec,
    MinorityToRatio,
    build_pipeline,
    classifier_registry,
    plan_smote,
)
from vqganodip_pipeline.scoring.paper import run_paper_protocol
from vqganodip_pipeline.scoring.preprocess import MetricPreprocessor
from vqganodip_pipeline.scoring.search import (
    ClassifierFitError,
    SearchConfig,
    out_of_fold_models,
    out_of_fold_scores,
    search_classifier,
)
from vqganodip_pipeline.scoring.splits import leave_one_out, stratified_folds
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


class ProbeClassifier(ClassifierMixin, BaseEstimator):
    calls: ClassVar[list[tuple[str, np.ndarray, np.ndarray | None]]] = []

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> ProbeClassifier:
        ProbeClassifier.calls.append(("fit", np.array(X), np.array(y)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        ProbeClassifier.calls.append(("score", np.array(X), None))
        p = 1.0 / (1.0 + np.exp(-(X[:, 0] - self.alpha)))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


PROBE = ClassifierSpec(
    "probe", "PROBE", lambda seed: ProbeClassifier(), lambda n: {"alpha": uniform()}
)


def _preprocessed_splits(X: np.ndarray, splits) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) of every split, preprocessed as the pipeline does it."""
    result = []
    for train, test in splits:
        pre = MetricPreprocessor().fit(X[train])
        result.append((pre.transform(X[train]), pre.transform(X[test])))
    return result


def _matches(candidate: np.ndarray, rows: np.ndarray) -> bool:
    return candidate.shape == rows.shape and np.allclose(candidate, rows)


@pytest.mark.parametrize("use_loo", [False, True])
def test_smote_rows_are_fitted_on_but_never_scored(use_loo: bool) -> None:
    table = training_table(make_metric_table(n_normal=30, n_abnormal=12, n_noise=5))
    X, y = table.X, table.y
    splits = leave_one_out(y, None) if use_loo else stratified_folds(y, None, 3, seed=0)
    smote = plan_smote(y, [train for train, _ in splits], below=0.8)
    assert smote is not None  # 12 / 30 < 0.8
    config = SearchConfig(n_iter=2, n_splits=3, n_jobs=1)
    ProbeClassifier.calls.clear()
    if not use_loo:
        search_classifier(PROBE, X, y, splits, config, smote)
    out_of_fold_scores(PROBE, {"alpha": 0.3}, X, y, splits, config, smote)
    expected = _preprocessed_splits(X, splits)
    fits = [call for call in ProbeClassifier.calls if call[0] == "fit"]
    scored = [call for call in ProbeClassifier.calls if call[0] == "score"]
    assert len(fits) == len(scored) == len(splits) * (1 if use_loo else 3)
    for _, X_fit, y_fit in fits:
        # Original training rows first, then SMOTE's synthetic rows.
        n_original = next(len(rows) for rows, _ in expected if _matches(X_fit[: len(rows)], rows))
        synthetic = y_fit[n_original:]
        assert len(synthetic) > 0 and np.all(synthetic == 1)
        assert np.sum(y_fit == 1) == np.sum(y_fit == 0)  # balanced to ratio 1
    for _, X_score, _ in scored:
        # Exactly the original rows of one test part: no synthetic row is ever scored.
        assert any(_matches(X_score, test_rows) for _, test_rows in expected)


def test_plan_smote_only_when_imbalanced_and_k_fits_small_folds() -> None:
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    assert plan_smote(y, [np.arange(40)], below=0.8) is None
    y = np.r_[np.zeros(40, int), np.ones(8, int)]
    folds = stratified_folds(y, None, 4, seed=0)
    settings = plan_smote(y, [train for train, _ in folds], below=0.8, k_neighbors=5)
    assert settings is not None and settings.k_neighbors == 5
    y = np.r_[np.zeros(40, int), np.ones(4, int)]
    folds = stratified_folds(y, None, 4, seed=0)
    settings = plan_smote(y, [train for train, _ in folds], below=0.8, k_neighbors=5)
    assert settings is not None and settings.k_neighbors == 2  # 3 abnormal per training part
    with pytest.raises(ValueError, match="at least 2 minority"):
        plan_smote(np.r_[np.zeros(10, int), np.ones(2, int)], [np.arange(11)], below=0.8)


def test_minority_to_ratio_targets() -> None:
    y = np.r_[np.zeros(10, int), np.ones(4, int)]
    assert MinorityToRatio(1.0)(y) == {1: 10}
    assert MinorityToRatio(0.5)(y) == {1: 5}
    assert MinorityToRatio(0.2)(y) == {1: 4}  # already above: nothing to add


def test_search_is_deterministic_and_reports_classifier_params() -> None:
    table = training_table(make_metric_table(n_noise=5))
    splits = stratified_folds(table.y, None, 3, seed=0)
    config = SearchConfig(n_iter=3, n_splits=3, n_jobs=1)
    spec = classifier_registry(max_estimators=5)["rf"]
    first = search_classifier(spec, table.X, table.y, splits, config, None)
    second = search_classifier(spec, table.X, table.y, splits, config, None)
    assert first.best_params == second.best_params and first.best_score == second.best_score
    assert set(first.best_params) == set(spec.space(10))
    assert first.n_candidates == 3 and len(first.cv_results) == 3
    assert first.best_score == first.cv_results["mean_test_score"].max()


class NaNClassifier(ProbeClassifier):
    """Fits, but predicts NaN probabilities (what QDA does on collinear metrics)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.full((len(X), 2), np.nan)


BROKEN = ClassifierSpec(
    "broken", "BROKEN", lambda seed: NaNClassifier(), lambda n: {"alpha": uniform()}
)


def test_a_classifier_that_cannot_be_fitted_is_skipped_and_none_left_is_an_error() -> None:
    table = training_table(make_metric_table(n_noise=5))
    splits = stratified_folds(table.y, None, 3, seed=0)
    config = SearchConfig(n_iter=2, n_splits=3, n_jobs=1)
    search = search_classifier(BROKEN, table.X, table.y, splits, config, None)
    with pytest.raises(ClassifierFitError, match="BROKEN gave non-finite"):
        out_of_fold_scores(BROKEN, search.best_params, table.X, table.y, splits, config, None)
    candidates = calibrate_candidates(
        {"broken": BROKEN, "probe": PROBE}, table.X, table.y, splits, config
    )
    assert [c.code for c in candidates] == ["probe"]
    with pytest.raises(ClassifierFitError, match="no classifier"):
        calibrate_candidates({"broken": BROKEN}, table.X, table.y, splits, config)
    paper = run_paper_protocol(
        make_metric_table(n_noise=5), classifiers={"broken": BROKEN, "probe": PROBE}, config=config
    )
    assert list(paper.leaderboard["classifier"]) == ["probe"]


class FailingClassifier(ProbeClassifier):
    """Raises in every fit (what QDA does on a rank-deficient class covariance)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> FailingClassifier:
        raise np.linalg.LinAlgError("The covariance matrix of class 0 is not full rank.")


FAILING = ClassifierSpec(
    "failing", "FAILING", lambda seed: FailingClassifier(), lambda n: {"alpha": uniform()}
)


def test_a_classifier_whose_every_search_fit_raises_is_skipped() -> None:
    # scikit-learn raises "All the N fits failed" itself: it must become a skip, not an abort
    table = training_table(make_metric_table(n_noise=5))
    splits = stratified_folds(table.y, None, 3, seed=0)
    config = SearchConfig(n_iter=2, n_splits=3, n_jobs=1)
    with pytest.raises(ClassifierFitError, match="every FAILING search candidate failed"):
        search_classifier(FAILING, table.X, table.y, splits, config, None)
    candidates = calibrate_candidates(
        {"failing": FAILING, "probe": PROBE}, table.X, table.y, splits, config
    )
    assert [c.code for c in candidates] == ["probe"]


def test_release_parallel_workers_leaves_no_worker_process_behind() -> None:
    import os
    import time
    from pathlib import Path

    from joblib import Parallel, delayed

    from vqganodip_pipeline.scoring.search import release_parallel_workers

    def children() -> set[int]:
        # loky worker processes whose parent is this one (Linux /proc); loky's resource
        # tracker is not one: it ends with its parent
        found = set()
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
                command = (status.parent / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if fields.get("PPid", "").strip() == str(os.getpid()) and b"popen_loky" in command:
                found.add(int(status.parent.name))
        return found

    before = children()
    assert Parallel(n_jobs=2, backend="loky")(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    assert children() - before, "loky should have started worker processes"
    release_parallel_workers()
    deadline = time.monotonic() + 10
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not children() - before


def test_preprocessing_is_fitted_once_per_fold_and_changes_no_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = training_table(make_metric_table(n_normal=30, n_abnormal=12, n_noise=5))
    splits = stratified_folds(table.y, None, 3, seed=0)
    specs = {code: classifier_registry(max_estimators=5)[code] for code in ("lr", "rf")}
    fits: list[int] = []
    original = MetricPreprocessor.fit

    def counted(self: MetricPreprocessor, X: object, y: object = None) -> MetricPreprocessor:
        fits.append(len(np.asarray(X)))
        return original(self, X, y)

    monkeypatch.setattr(MetricPreprocessor, "fit", counted)
    results = {}
    for cache in (False, True):
        fits.clear()
        config = SearchConfig(
            n_iter=3, n_splits=3, n_jobs=1, max_features="auto", cache_preprocessing=cache
        )
        results[cache] = (calibrate_candidates(specs, table.X, table.y, splits, config), len(fits))
    (plain, plain_fits), (cached, cached_fits) = results[False], results[True]
    # 2 classifiers x (3 candidates + 1 out-of-fold pass) x 3 folds, against once per fold
    assert plain_fits == 2 * (3 + 1) * 3 and cached_fits == len(splits)
    for a, b in zip(plain, cached, strict=True):
        assert a.code == b.code and a.params == b.params
        np.testing.assert_array_equal(
            a.search.cv_results["mean_test_score"], b.search.cv_results["mean_test_score"]
        )
        np.testing.assert_array_equal(a.oof_scores, b.oof_scores)
        assert a.threshold == b.threshold


@pytest.mark.parametrize("code", ["rf", "lr", "nb"])
def test_out_of_fold_models_match_cross_val_predict_and_score_their_own_test_part(
    code: str,
) -> None:
    table = training_table(make_metric_table(n_normal=30, n_abnormal=12, n_noise=5))
    X, y = table.X, table.y
    splits = stratified_folds(y, None, 3, seed=0)
    smote = plan_smote(y, [train for train, _ in splits], below=0.8)
    config = SearchConfig(n_iter=1, n_splits=3, n_jobs=1)
    spec = classifier_registry(max_estimators=5)[code]
    params = search_classifier(spec, X, y, splits, config, smote).best_params
    scores, models = out_of_fold_models(spec, params, X, y, splits, config, smote)
    reference = cross_val_predict(
        build_pipeline(spec, config.seed, smote, config.correlation_threshold, params),
        X,
        y,
        cv=splits,
        method="predict_proba",
    )[:, 1]
    np.testing.assert_allclose(scores, reference)
    np.testing.assert_array_equal(
        out_of_fold_scores(spec, params, X, y, splits, config, smote), scores
    )
    assert len(models) == len(splits)
    for model, (_, test) in zip(models, splits, strict=True):
        np.testing.assert_allclose(model.predict_proba(X[test])[:, 1], scores[test])
        assert model.memory is None  # no temporary cache folder travels with a shipped model


def test_out_of_fold_models_need_a_partition() -> None:
    table = training_table(make_metric_table(n_noise=2))
    splits = stratified_folds(table.y, None, 3, seed=0)
    overlapping = [splits[0], splits[0], splits[1]]
    config = SearchConfig(n_iter=1, n_splits=3, n_jobs=1)
    with pytest.raises(ValueError, match="partition"):
        out_of_fold_models(PROBE, {"alpha": 0.3}, table.X, table.y, overlapping, config, None)
