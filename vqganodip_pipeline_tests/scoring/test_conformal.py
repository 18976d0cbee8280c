"""Split-conformal ZFN thresholds: the bound's formulas, its coverage in simulation, the recipe's
calibration rows never reaching a fit (probe classifier), and the wording of the statement."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from scipy.stats import beta, binom, uniform
from sklearn.base import BaseEstimator, ClassifierMixin

from vqganodip_pipeline.scoring.calibrate import CalibrationConfig, fit_and_calibrate
from vqganodip_pipeline.scoring.classifiers import ClassifierSpec, classifier_registry
from vqganodip_pipeline.scoring.conformal import (
    conformal_threshold,
    expected_miss_rate,
    miss_rate_upper_bound,
    order_for_target,
)
from vqganodip_pipeline.scoring.search import SearchConfig
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def test_bound_formulas_match_scipy_and_closed_forms() -> None:
    # k = 1: the minimum of n; P(miss rate > b) = (1 - b)^n = 1 - confidence.
    for n in (1, 5, 18, 60, 174):
        assert miss_rate_upper_bound(1, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n))
        assert expected_miss_rate(1, n) == pytest.approx(1 / (n + 1))
    # Clopper-Pearson upper bound for x = k - 1 misses of n, from the binomial tail.
    for k, n in ((2, 20), (3, 40), (5, 60)):
        bound = miss_rate_upper_bound(k, n, 0.9)
        assert bound == pytest.approx(beta.ppf(0.9, k, n - k + 1))
        # at the bound, seeing <= k - 1 misses among n has probability 1 - confidence
        assert binom.cdf(k - 1, n, bound) == pytest.approx(0.1, abs=1e-9)
    assert miss_rate_upper_bound(1, 0) == 1.0 and expected_miss_rate(1, 0) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        miss_rate_upper_bound(0, 10)
    with pytest.raises(ValueError, match="confidence"):
        miss_rate_upper_bound(1, 10, 1.0)


def test_bound_holds_in_simulation_with_exchangeable_scores() -> None:
    # Calibration and new defect scores drawn from one distribution (exchangeable). The miss
    # rate at the threshold is known exactly (the CDF at the threshold), so each repetition gives
    # the realised miss rate of the infinite stream of new defects.
    rng = np.random.default_rng(2026)
    repetitions, n, confidence = 4000, 20, 0.95
    for k in (1, 3):
        scores = rng.beta(5.0, 2.0, size=(repetitions, n))
        thresholds = np.sort(scores, axis=1)[:, k - 1]
        realised = beta.cdf(thresholds, 5.0, 2.0)
        bound = miss_rate_upper_bound(k, n, confidence)
        exceed = float(np.mean(realised > bound))
        # at most 5 % of repetitions exceed the 95 % bound (binomial tolerance of 4000 draws)
        assert exceed <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / repetitions)
        assert exceed >= 0.05 - 3 * np.sqrt(0.05 * 0.95 / repetitions)  # and it is not loose
        # the expected-miss form holds on average
        assert realised.mean() == pytest.approx(expected_miss_rate(k, n), abs=0.005)
    # and with ties (a discrete score) the rule "score >= threshold is flagged" only helps
    discrete = rng.integers(0, 10, size=(repetitions, n)) / 10.0
    thresholds = discrete.min(axis=1)
    realised = thresholds  # P(new < t) for a uniform on {0, 0.1, ..., 0.9} is t exactly
    assert np.mean(realised > miss_rate_upper_bound(1, n)) <= 0.05


def test_lowest_abnormal_rule_uses_only_abnormal_calibration_scores() -> None:
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.95, 0.1])
    y = np.array([1, 0, 1, 1, 1, 0])
    risk = conformal_threshold(scores, y, rule="lowest_abnormal")
    assert risk.threshold == 0.7 and risk.n_calibration == 4 and risk.k == 1
    assert risk.n_below == 0 and not risk.lowered_to_normals
    assert risk.false_alarm_increase_bound is None
    assert risk.miss_rate_upper_bound == pytest.approx(1 - 0.05**0.25)
    wide = conformal_threshold(scores, y, margin=0.05, rule="lowest_abnormal")
    assert wide.threshold == pytest.approx(0.65) and wide.n_below == 0
    second = conformal_threshold(scores, y, k=2, rule="lowest_abnormal")
    assert second.threshold == 0.8 and second.n_below == 1
    # moving the normal scores does not move this rule's threshold
    moved = conformal_threshold(np.where(y == 0, 0.5, scores), y, rule="lowest_abnormal")
    assert moved.threshold == 0.7
    with pytest.raises(ValueError, match="abnormal calibration"):
        conformal_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="rule must be one of"):
        conformal_threshold(scores, y, rule="midpoint")


def test_gap_rule_lowers_the_threshold_to_just_above_the_normals() -> None:
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.95, 0.1])
    y = np.array([1, 0, 1, 1, 1, 0])
    risk = conformal_threshold(scores, y)  # the default rule
    assert risk.rule == "gap" and risk.lowered_to_normals
    # the lowest threshold that flags no normal calibration image: just above 0.2
    assert risk.threshold == np.nextafter(0.2, 1.0)
    assert not np.any(scores[y == 0] >= risk.threshold)
    assert np.all(scores[y == 1] >= risk.threshold) and risk.n_below == 0
    assert risk.n_normal_calibration == 2
    assert risk.false_alarm_increase_bound == pytest.approx(1 / 3)
    # the miss-rate statement is the k-th lowest abnormal score's (the threshold is lower)
    assert risk.miss_rate_upper_bound == pytest.approx(miss_rate_upper_bound(1, 4))
    second = conformal_threshold(scores, y, k=2)
    assert second.threshold == np.nextafter(0.2, 1.0) and second.n_below == 0
    # classes that overlap on the calibration part: the abnormal rule's threshold stands
    overlap = np.array([0.9, 0.75, 0.8, 0.7, 0.95, 0.1])
    kept = conformal_threshold(overlap, y)
    assert kept.threshold == 0.7 and not kept.lowered_to_normals
    # the false-alarm statement is unconditional: stated whether or not the threshold moved
    assert kept.false_alarm_increase_bound == pytest.approx(1 / 3)
    assert "1/(m+1)" in kept.sentence() and "just above" not in kept.sentence()
    # a margin is subtracted last, and the false-alarm statement no longer applies
    wide = conformal_threshold(scores, y, margin=0.05)
    assert wide.threshold == pytest.approx(0.15) and wide.false_alarm_increase_bound is None
    # no normal calibration image: nothing to lower to
    alone = conformal_threshold(np.array([0.6, 0.7]), np.array([1, 1]))
    assert alone.threshold == 0.6 and not alone.lowered_to_normals
    assert alone.false_alarm_increase_bound is None
    text = risk.sentence()
    for phrase in ("just above the highest score of 2 normal", "1/(m+1)", "33.3%"):
        assert phrase in text, phrase


def _gap_simulation(normal_ab: tuple[float, float], abnormal_ab: tuple[float, float], seed: int):
    """4000 calibration sets of m = n = 16 beta-distributed scores; per set the thresholds of
    both rules, whether the gap rule lowered it, and the exact chance (the normal class's CDF)
    that a new normal image is flagged at each."""
    rng = np.random.default_rng(seed)
    repetitions, m, n = 4000, 16, 16
    normal = rng.beta(*normal_ab, size=(repetitions, m))
    abnormal = rng.beta(*abnormal_ab, size=(repetitions, n))
    y = np.r_[np.zeros(m, dtype=int), np.ones(n, dtype=int)]
    gap, lowest, lowered = [], [], []
    for row in range(repetitions):
        s = np.r_[normal[row], abnormal[row]]
        risk = conformal_threshold(s, y)
        gap.append(risk.threshold)
        lowered.append(risk.lowered_to_normals)
        lowest.append(conformal_threshold(s, y, rule="lowest_abnormal").threshold)
    gap, lowest = np.array(gap), np.array(lowest)
    alarm_gap = 1.0 - beta.cdf(gap, *normal_ab)
    alarm_lowest = 1.0 - beta.cdf(lowest, *normal_ab)
    return gap, lowest, np.array(lowered), alarm_gap, alarm_lowest, m, n


def test_gap_rule_false_alarm_and_miss_rates_in_simulation() -> None:
    # Separated classes (normal below 0.5, abnormal above): the gap rule's threshold is never
    # above the lowest-abnormal one, it misses nothing, and it adds ~1/(m+1) false alarms.
    gap, lowest, lowered, alarm_gap, alarm_lowest, m, n = _gap_simulation(
        (2.0, 20.0), (60.0, 6.0), 7
    )
    assert lowered.all() and np.all(gap <= lowest)
    # tolerance: three standard errors of a mean of 4000 draws (sd of the alarm chance ~0.055)
    increase = alarm_gap - alarm_lowest
    assert increase.mean() == pytest.approx(1 / (m + 1), abs=0.003)
    missed_lowest = beta.cdf(lowest, 60.0, 6.0)
    assert missed_lowest.mean() == pytest.approx(1 / (n + 1), abs=0.005)
    assert beta.cdf(gap, 60.0, 6.0).max() < 1e-6  # below every defect but the rarest


def test_gap_rule_false_alarm_bound_is_unconditional() -> None:
    # Overlapping classes: the gap rule rarely lowers the threshold. Averaged over all
    # calibration sets the rise in false alarms stays below 1/(m+1), as the statement says; but
    # given that it did lower it (the normal scores came out low), the chance of an alarm is
    # well above 1/(m+1), which is why the statement is not worded for that case.
    gap, lowest, lowered, alarm_gap, alarm_lowest, m, _ = _gap_simulation(
        (2.0, 5.0), (5.0, 2.0), 11
    )
    assert np.all(gap <= lowest) and 0.02 < lowered.mean() < 0.3
    assert (alarm_gap - alarm_lowest).mean() <= 1 / (m + 1)
    assert alarm_gap[lowered].mean() > 2 / (m + 1)


def test_target_miss_rate_picks_the_highest_certified_order() -> None:
    n = 100
    k = order_for_target(n, 0.05, 0.95)
    assert k is not None
    assert miss_rate_upper_bound(k, n) <= 0.05 < miss_rate_upper_bound(k + 1, n)
    assert order_for_target(10, 0.05) is None  # 10 defects cannot certify 5 %
    scores = np.linspace(0.0, 1.0, n)
    risk = conformal_threshold(scores, np.ones(n, dtype=int), target_miss_rate=0.05)
    assert risk.k == k and risk.target_met and risk.n_below == k - 1
    small = conformal_threshold(scores[:10], np.ones(10, dtype=int), target_miss_rate=0.05)
    assert small.k == 1 and small.target_met is False
    assert "cannot be certified" in small.sentence()


def test_statement_names_assumption_confidence_and_counts() -> None:
    risk = conformal_threshold(np.array([0.6, 0.7, 0.8]), np.array([1, 1, 1]), confidence=0.9)
    text = risk.sentence()
    for phrase in (
        "3 abnormal calibration images",
        "0 of the abnormal ones fall below",
        "exchangeable",
        "90% confidence",
        "Clopper-Pearson",
        "k/(n+1)",
        "not covered",
    ):
        assert phrase in text, phrase
    assert risk.to_dict()["statement"] == text


class Probe(ClassifierMixin, BaseEstimator):
    """Records how many rows every fit gets and every scoring call scores."""

    fits: ClassVar[list[int]] = []
    scored: ClassVar[list[int]] = []

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:
        Probe.fits.append(len(X))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        Probe.scored.append(len(X))
        p = 1.0 / (1.0 + np.exp(-self.alpha * X[:, 0]))
        return np.c_[1.0 - p, p]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


PROBE = ClassifierSpec("probe", "PROBE", lambda seed: Probe(), lambda n: {"alpha": uniform(1, 2)})
CONFIG = SearchConfig(n_iter=3, n_splits=3, n_jobs=1, seed=0)


def _recipe(X: np.ndarray, y: np.ndarray):
    specs = {"probe": PROBE, "lr": classifier_registry()["lr"]}
    return fit_and_calibrate(specs, X, y, None, CONFIG, CalibrationConfig(fraction=1 / 3))


def test_calibration_rows_never_reach_a_fit() -> None:
    table = training_table(make_metric_table(n_normal=18, n_abnormal=18, n_noise=4), role=None)
    X, y = table.X.copy(), table.y
    Probe.fits.clear()
    recipe = _recipe(X, y)
    fit, cal = recipe.fit_rows, recipe.calibration_rows
    assert set(fit).isdisjoint(cal) and len(fit) + len(cal) == len(y)
    assert y[cal].sum() == 6  # a stratified third of the 18 defects
    # every fit (search folds, out-of-fold folds, whose models are shipped) got one inner
    # training part of the fit part (balanced classes: no SMOTE rows are added)
    inner_train = {len(train) for train, _ in recipe.inner_splits}
    assert Probe.fits and set(Probe.fits) <= inner_train and max(inner_train) < len(fit)
    for train, test in recipe.inner_splits:
        assert set(train) | set(test) <= set(fit)
    # Replace the calibration rows by noise: everything learnt must stay identical; only the
    # calibration scores (and so the thresholds) may change.
    noisy = X.copy()
    noisy[cal] = np.random.default_rng(5).normal(4.0, 3.0, size=(len(cal), X.shape[1]))
    perturbed = _recipe(noisy, y)
    np.testing.assert_array_equal(perturbed.calibration_rows, cal)
    assert perturbed.chosen.code == recipe.chosen.code
    for before, after in zip(recipe.calibrated, perturbed.calibrated, strict=True):
        assert before.candidate.params == after.candidate.params
        np.testing.assert_array_equal(before.candidate.oof_scores, after.candidate.oof_scores)
        np.testing.assert_allclose(
            before.pipeline.predict_proba(X[fit]), after.pipeline.predict_proba(X[fit])
        )
    assert not np.allclose(recipe.chosen.calibration_scores, perturbed.chosen.calibration_scores)
    # the threshold is the minimum of the chosen model's own abnormal calibration scores
    own = recipe.chosen.pipeline.predict_proba(X[cal])[:, 1]
    np.testing.assert_allclose(own, recipe.chosen.calibration_scores)
    assert recipe.chosen.threshold == own[y[cal] == 1].min()


def test_holdout_p_value_is_the_one_sided_binomial_tail() -> None:
    from math import comb

    from vqganodip_pipeline.scoring.conformal import holdout_p_value

    n, p = 20, 0.139
    for missed in range(0, 8):
        direct = sum(comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(missed, n + 1))
        assert holdout_p_value(missed, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-12)
    # the demo's 2 misses of 20 under a 13.9 % bound are unremarkable; 7 are not
    assert holdout_p_value(2, 20, 0.139) > 0.5
    assert holdout_p_value(7, 20, 0.139) < 0.05
    with pytest.raises(ValueError):
        holdout_p_value(3, 2, 0.1)
