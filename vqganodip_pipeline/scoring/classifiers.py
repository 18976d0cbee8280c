"""The paper's twelve candidate classifiers, their search spaces and the fitting pipeline.

Each candidate is a :class:`ClassifierSpec`: a factory for the estimator with its fixed settings
(seeded, single-threaded so that parallelism is over search candidates, silent) and a
randomized-search space of scipy.stats distributions / lists. Every estimator runs inside an
imbalanced-learn pipeline ``preprocess -> [smote] -> classifier``, so the preprocessing is
fitted and SMOTE samples are drawn on training rows only, also inside cross-validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from joblib import Memory
from lightgbm import LGBMClassifier
from scipy.stats import loguniform, randint, uniform
from sklearn.base import BaseEstimator
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from vqganodip_pipeline.scoring.preprocess import MetricPreprocessor

ParamSpace = dict[str, Any]
CLASSIFIER_STEP = "classifier"
PREPROCESS_STEP = "preprocess"
SMOTE_STEP = "smote"


@dataclass(frozen=True)
class ClassifierSpec:
    """One candidate classifier.

    ``make(seed)`` returns the estimator with its fixed settings; ``space(n_train)`` returns the
    randomized-search space (parameter name -> scipy.stats distribution or list) for training
    sets of at least ``n_train`` rows (k-NN caps its neighbour count with it).
    """

    code: str
    name: str
    make: Callable[[int], BaseEstimator]
    space: Callable[[int], ParamSpace]


def _n_estimators(max_estimators: int) -> Any:
    return randint(min(10, max_estimators), max_estimators + 1)


def _dt(seed: int) -> BaseEstimator:
    return DecisionTreeClassifier(random_state=seed)


def _dt_space(n_train: int) -> ParamSpace:
    return {
        "criterion": ["gini", "entropy", "log_loss"],
        "max_depth": [None, *range(1, 21)],
        "min_samples_split": randint(2, 21),
        "min_samples_leaf": randint(1, 11),
        "max_features": [None, "sqrt", "log2"],
        "class_weight": [None, "balanced"],
    }


def _rf(seed: int) -> BaseEstimator:
    return RandomForestClassifier(random_state=seed, n_jobs=1)


def _et(seed: int) -> BaseEstimator:
    return ExtraTreesClassifier(random_state=seed, n_jobs=1)


def _forest_space(n_train: int, max_estimators: int) -> ParamSpace:
    return {
        "n_estimators": _n_estimators(max_estimators),
        "criterion": ["gini", "entropy"],
        "max_depth": [None, *range(2, 31)],
        "min_samples_split": randint(2, 11),
        "min_samples_leaf": randint(1, 6),
        "max_features": ["sqrt", "log2", 0.1, 0.25, 0.5],
        "bootstrap": [True, False],
        "class_weight": [None, "balanced", "balanced_subsample"],
    }


def _ada(seed: int) -> BaseEstimator:
    return AdaBoostClassifier(random_state=seed)


def _ada_space(n_train: int, max_estimators: int) -> ParamSpace:
    return {
        "n_estimators": _n_estimators(max_estimators),
        "learning_rate": loguniform(1e-2, 2.0),
    }


def _lgbm(seed: int) -> BaseEstimator:
    return LGBMClassifier(random_state=seed, n_jobs=1, verbosity=-1)


def _lgbm_space(n_train: int, max_estimators: int) -> ParamSpace:
    return {
        "n_estimators": _n_estimators(max_estimators),
        "learning_rate": loguniform(1e-3, 0.5),
        "num_leaves": randint(2, 64),
        "max_depth": [-1, *range(2, 11)],
        "min_child_samples": randint(2, 31),
        "subsample": uniform(0.5, 0.5),
        "subsample_freq": [0, 1],
        "colsample_bytree": uniform(0.3, 0.7),
        "reg_alpha": loguniform(1e-4, 10.0),
        "reg_lambda": loguniform(1e-4, 10.0),
    }


def _gbc(seed: int) -> BaseEstimator:
    return GradientBoostingClassifier(random_state=seed)


def _gbc_space(n_train: int, max_estimators: int) -> ParamSpace:
    return {
        "n_estimators": _n_estimators(max_estimators),
        "learning_rate": loguniform(1e-3, 1.0),
        "max_depth": randint(1, 9),
        "min_samples_leaf": randint(1, 11),
        "subsample": uniform(0.5, 0.5),
        "max_features": ["sqrt", "log2", None],
    }


def _xgb(seed: int) -> BaseEstimator:
    return XGBClassifier(
        random_state=seed, n_jobs=1, tree_method="hist", verbosity=0, eval_metric="logloss"
    )


def _xgb_space(n_train: int, max_estimators: int) -> ParamSpace:
    return {
        "n_estimators": _n_estimators(max_estimators),
        "learning_rate": loguniform(1e-3, 0.5),
        "max_depth": randint(1, 11),
        "min_child_weight": loguniform(0.1, 10.0),
        "subsample": uniform(0.5, 0.5),
        "colsample_bytree": uniform(0.3, 0.7),
        "gamma": uniform(0.0, 5.0),
        "reg_lambda": loguniform(1e-3, 10.0),
        "reg_alpha": loguniform(1e-4, 10.0),
    }


def _lr(seed: int) -> BaseEstimator:
    return LogisticRegression(solver="liblinear", max_iter=2000, random_state=seed)


def _lr_space(n_train: int) -> ParamSpace:
    return {
        "C": loguniform(1e-3, 1e3),
        "l1_ratio": [0.0, 1.0],  # L2 or L1 penalty
        "class_weight": [None, "balanced"],
    }


def _knn(seed: int) -> BaseEstimator:
    return KNeighborsClassifier()


def _knn_space(n_train: int) -> ParamSpace:
    return {
        "n_neighbors": randint(1, max(2, min(31, n_train))),
        "weights": ["uniform", "distance"],
        "p": [1, 2],
    }


def _nb(seed: int) -> BaseEstimator:
    return GaussianNB()


def _nb_space(n_train: int) -> ParamSpace:
    return {"var_smoothing": loguniform(1e-12, 1.0)}


def _lda(seed: int) -> BaseEstimator:
    return LinearDiscriminantAnalysis(solver="lsqr")


def _lda_space(n_train: int) -> ParamSpace:
    # Shrinkage keeps the pooled covariance invertible with more metrics than images.
    return {"shrinkage": uniform(0.0, 1.0)}


def _qda(seed: int) -> BaseEstimator:
    return QuadraticDiscriminantAnalysis(solver="eigen", shrinkage=0.1)


def _qda_space(n_train: int) -> ParamSpace:
    # Per-class covariances are singular with ~150 images and ~100+ kept metrics. Since
    # scikit-learn 1.9, reg_param alone no longer makes them invertible (the fit raises), so the
    # eigen solver's shrinkage does that; reg_param stays in the space as the paper-era knob.
    return {"shrinkage": loguniform(0.02, 1.0), "reg_param": uniform(0.0, 0.5)}


def classifier_registry(max_estimators: int = 300) -> dict[str, ClassifierSpec]:
    """The twelve candidates keyed by short code, in the paper's Table-1 order of mention.

    ``max_estimators`` bounds ``n_estimators`` of the ensembles (RF, ET, ADA, LGBM, GBC, XGBoost);
    a small value gives the same zoo for quick runs and tests.
    """
    if max_estimators < 1:
        raise ValueError(f"max_estimators must be >= 1, got {max_estimators}")
    forest = partial(_forest_space, max_estimators=max_estimators)
    specs = [
        ClassifierSpec("dt", "DT", _dt, _dt_space),
        ClassifierSpec("rf", "RF", _rf, forest),
        ClassifierSpec("et", "ET", _et, forest),
        ClassifierSpec("ada", "ADA", _ada, partial(_ada_space, max_estimators=max_estimators)),
        ClassifierSpec("lgbm", "LGBM", _lgbm, partial(_lgbm_space, max_estimators=max_estimators)),
        ClassifierSpec("gbc", "GBC", _gbc, partial(_gbc_space, max_estimators=max_estimators)),
        ClassifierSpec("xgb", "XGBoost", _xgb, partial(_xgb_space, max_estimators=max_estimators)),
        ClassifierSpec("lr", "LR", _lr, _lr_space),
        ClassifierSpec("knn", "KNN", _knn, _knn_space),
        ClassifierSpec("nb", "NB", _nb, _nb_space),
        ClassifierSpec("lda", "LDA", _lda, _lda_space),
        ClassifierSpec("qda", "QDA", _qda, _qda_space),
    ]
    return {spec.code: spec for spec in specs}


CLASSIFIERS: dict[str, ClassifierSpec] = classifier_registry()

# Every type a fitted pipeline of the twelve candidates is made of, beyond skops' own safe
# defaults: the only types a stored model may name (serialization.bytes_to_bundle refuses any
# other). A test fits all twelve and checks this list is complete.
PERSISTED_TYPES: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "imblearn.over_sampling._smote.base.SMOTE",
        "imblearn.pipeline.Pipeline",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",  # KNN with p = 1
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.tree._tree.Tree",
        "vqganodip_pipeline.scoring.classifiers.MinorityToRatio",
        "vqganodip_pipeline.scoring.preprocess.MetricPreprocessor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
    }
)


def resolve_classifiers(
    classifiers: Mapping[str, ClassifierSpec] | Sequence[str] | None,
) -> dict[str, ClassifierSpec]:
    """None -> all of :data:`CLASSIFIERS`; a sequence of codes -> those; a mapping -> itself."""
    if classifiers is None:
        return dict(CLASSIFIERS)
    if isinstance(classifiers, Mapping):
        resolved = dict(classifiers)
    else:
        if isinstance(classifiers, str):
            classifiers = [classifiers]
        unknown = [code for code in classifiers if code not in CLASSIFIERS]
        if unknown:
            raise ValueError(f"unknown classifier code(s) {unknown}; known: {sorted(CLASSIFIERS)}")
        resolved = {code: CLASSIFIERS[code] for code in classifiers}
    if not resolved:
        raise ValueError("no classifier to evaluate")
    return resolved


class MinorityToRatio:
    """SMOTE sampling strategy: oversample each minority class up to ``ratio`` x the majority.

    A callable (rather than a float) so that a training fold already at or above the ratio gets
    no synthetic samples instead of an error.
    """

    def __init__(self, ratio: float) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"SMOTE ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def __call__(self, y: np.ndarray) -> dict[Any, int]:
        classes, counts = np.unique(y, return_counts=True)
        n_majority = int(counts.max())
        target = int(np.ceil(self.ratio * n_majority))
        return {
            cls: max(int(n), target)
            for cls, n in zip(classes.tolist(), counts, strict=True)
            if n < n_majority
        }

    def __repr__(self) -> str:
        return f"MinorityToRatio({self.ratio})"


@dataclass(frozen=True)
class SmoteSettings:
    """SMOTE inside the pipeline: target minority/majority ``ratio``, ``k_neighbors``."""

    ratio: float = 1.0
    k_neighbors: int = 5


def plan_smote(
    y: np.ndarray,
    train_sets: Sequence[np.ndarray],
    below: float,
    ratio: float = 1.0,
    k_neighbors: int = 5,
) -> SmoteSettings | None:
    """SMOTE settings for fits on ``y[train]`` for every ``train`` in ``train_sets``, or None.

    SMOTE is used only when the classes of ``y`` are imbalanced: minority/majority < ``below``.
    ``k_neighbors`` is lowered to what the smallest oversampled class of any training set allows.
    """
    if not 0.0 < below <= 1.0:
        raise ValueError(f"SMOTE imbalance trigger 'below' must be in (0, 1], got {below}")
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    if counts.min() / counts.max() >= below:
        return None
    strategy = MinorityToRatio(ratio)
    smallest: int | None = None
    for train in train_sets:
        train_counts = np.bincount(np.asarray(y)[train].astype(np.int64), minlength=2)
        targets = strategy(np.repeat([0, 1], train_counts))
        for cls, target in targets.items():
            if target > train_counts[cls]:
                n = int(train_counts[cls])
                smallest = n if smallest is None else min(smallest, n)
    if smallest is None:
        return SmoteSettings(ratio=ratio, k_neighbors=k_neighbors)
    if smallest < 2:
        raise ValueError(
            f"SMOTE needs at least 2 minority images per training fold, a fold has {smallest}"
        )
    return SmoteSettings(ratio=ratio, k_neighbors=min(k_neighbors, smallest - 1))


def build_pipeline(
    spec: ClassifierSpec,
    seed: int,
    smote: SmoteSettings | None = None,
    correlation_threshold: float | None = 0.95,
    params: Mapping[str, Any] | None = None,
    max_features: int | str | None = None,
    memory: Memory | None = None,
) -> Pipeline:
    """``MetricPreprocessor -> [SMOTE] -> classifier`` with classifier ``params`` applied;
    ``memory`` caches the fitted preprocessing and SMOTE steps (imblearn's ``Pipeline``)."""
    preprocess = MetricPreprocessor(
        correlation_threshold=correlation_threshold, max_features=max_features
    )
    steps: list[tuple[str, Any]] = [(PREPROCESS_STEP, preprocess)]
    if smote is not None:
        steps.append(
            (
                SMOTE_STEP,
                SMOTE(
                    sampling_strategy=MinorityToRatio(smote.ratio),
                    k_neighbors=smote.k_neighbors,
                    random_state=seed,
                ),
            )
        )
    classifier = spec.make(seed)
    if params:
        classifier.set_params(**dict(params))
    steps.append((CLASSIFIER_STEP, classifier))
    return Pipeline(steps, memory=memory)
