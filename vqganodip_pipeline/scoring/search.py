"""Randomized hyper-parameter search and out-of-fold scores for one candidate classifier.

The preprocessing and SMOTE of a pipeline do not depend on the classifier's parameters, so a
search fits them once per training fold and reuses them for every candidate, every classifier
and the out-of-fold pass on the same rows (a :class:`joblib.Memory` cache of the pipeline's
transformers, :func:`preprocessing_cache`): this changes no result, only the time
(``bench/bench_scoring.py --protocol composite`` measures it).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline
from joblib import Memory, Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import RandomizedSearchCV

from vqganodip_pipeline.scoring.classifiers import (
    CLASSIFIER_STEP,
    ClassifierSpec,
    SmoteSettings,
    build_pipeline,
)
from vqganodip_pipeline.scoring.splits import Split


class ClassifierFitError(RuntimeError):
    """A classifier could not be fitted on this data: every search candidate failed, or its
    out-of-fold scores are not finite (e.g. QDA on collinear metrics). Callers skip it."""


COMBINE_RULES = ("mean", "best")


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by every protocol.

    n_iter: randomized-search candidates per classifier (paper: 500).
    n_splits: stratified (group) folds of the search CV (paper: 5); also the inner folds of the
        honest protocol and the calibration folds of the shipped model.
    scoring: scikit-learn scorer the search maximises (paper: "accuracy").
    seed: seeds the folds, the candidate sampling, SMOTE and every classifier.
    n_jobs: parallel workers over search candidates x folds (None/1: in-process, -1: all cores).
    smote_below: SMOTE is used when minority/majority < smote_below.
    smote_ratio: SMOTE oversamples the minority class up to smote_ratio x the majority.
    smote_k_neighbors: SMOTE's k (lowered automatically for tiny folds).
    correlation_threshold: the preprocessing correlation filter (paper: 0.95).
    max_features: keep the metrics with the strongest training AUROC, refitted in every fold:
        a number, "auto" (one per ten minority images) or None (all, the paper; see
        MetricPreprocessor).
    cache_preprocessing: fit the preprocessing and SMOTE once per training fold and reuse them
        for every candidate and classifier (see the module docstring); False refits them in
        every fit (the reference of the scoring benchmark).
    combine: how the composite is made of the candidates (see
        :mod:`~vqganodip_pipeline.scoring.calibrate`): "mean" (the mean probability of every
        candidate's fold models) or "best" (the paper: the one candidate with the best
        out-of-fold ZFN accuracy).
    """

    n_iter: int = 500
    n_splits: int = 5
    scoring: str = "accuracy"
    seed: int = 0
    n_jobs: int | None = 1
    smote_below: float = 0.8
    smote_ratio: float = 1.0
    smote_k_neighbors: int = 5
    correlation_threshold: float | None = 0.95
    max_features: int | str | None = None
    cache_preprocessing: bool = True
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_RULES:
            raise ValueError(
                f"SearchConfig.combine must be one of {COMBINE_RULES}, got {self.combine!r}"
            )
        if self.n_iter < 1:
            raise ValueError(f"SearchConfig.n_iter must be >= 1, got {self.n_iter}")
        if self.n_splits < 2:
            raise ValueError(f"SearchConfig.n_splits must be >= 2, got {self.n_splits}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchProgress:
    """Reported after each classifier: which one, how far, its best CV score, elapsed seconds."""

    stage: str
    classifier: str
    done: int
    total: int
    best_score: float
    elapsed_s: float

    def __str__(self) -> str:
        return (
            f"{self.stage}: {self.classifier} done ({self.done}/{self.total}), best CV score "
            f"{self.best_score:.4f}, {self.elapsed_s:.0f} s so far"
        )


ProgressCallback = Callable[[SearchProgress], None]


@dataclass
class SearchResult:
    """Outcome of :func:`search_classifier`.

    best_params: classifier parameters (without the pipeline prefix) of the best candidate.
    best_score: its mean CV score. n_failed: candidates whose fit raised on some fold (NaN
    score, never chosen). cv_results: one row per candidate (params, mean/std score).
    """

    classifier: str
    best_params: dict[str, Any]
    best_score: float
    n_candidates: int
    n_failed: int
    elapsed_s: float
    cv_results: pd.DataFrame


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """In a joblib worker: exit as soon as ``parent`` (the pid of the process that asked for
    the worker) is no longer its parent. A parent killed with SIGKILL runs no cleanup, and its
    workers otherwise lived on for the pool's 300 s idle timeout, busy ones at 100 % CPU until
    their task ended. ``parent`` is passed in, not read here: a worker that starts after its
    parent died would otherwise take its new parent for the real one."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextmanager
def fitting_environment() -> Iterator[None]:
    """How the search's fits run: joblib's loky workers exit with their parent
    (:func:`_exit_with_parent`), and warnings that candidates trigger by design (collinear
    metrics in LDA/QDA, iteration limits of a badly regularised candidate) are silenced;
    scikit-learn forwards these filters to its workers. Failed fits still surface as NaN
    scores."""
    from joblib import parallel_config

    workers = {"initializer": _exit_with_parent, "initargs": (os.getpid(),)}
    with parallel_config(backend="loky", **workers), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Variables are collinear")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", category=FitFailedWarning)
        warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
        yield


def _to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def release_parallel_workers() -> None:
    """Stop joblib's idle worker processes (``n_jobs`` != 1 keeps a pool alive for 300 s).

    A Dagster step runs in its own process, and idle workers that outlive it hold its output
    pipes open: the next step of the run waited the pool's idle timeout (a 310 s gap after
    ``composite_score_model`` was seen). Call it when the parallel part of a step is done."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)


@contextmanager
def preprocessing_cache(config: SearchConfig) -> Iterator[Memory | None]:
    """A :class:`joblib.Memory` in a temporary folder, removed afterwards, for the ``memory``
    of :func:`search_classifier` and :func:`out_of_fold_scores` (None when
    ``config.cache_preprocessing`` is off): a pipeline built with it fits its preprocessing and
    SMOTE once per (training rows, settings) and loads the fitted steps for every later
    candidate, classifier and out-of-fold pass on those rows."""
    if not config.cache_preprocessing:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vqganodip-preprocessing-") as folder:
        yield Memory(folder, verbose=0)


def search_classifier(
    spec: ClassifierSpec,
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    config: SearchConfig,
    smote: SmoteSettings | None,
    memory: Memory | None = None,
) -> SearchResult:
    """Randomized search of ``spec``'s space over the pipeline on ``(X, y)`` with ``splits``
    (``memory``: see :func:`preprocessing_cache`).

    ``splits`` index rows of ``X``; the pipeline (preprocessing, SMOTE, classifier) is refitted
    on each training part, so test parts only ever see a model fitted without them and SMOTE
    samples never reach a test part.
    """
    n_train = min(len(train) for train, _ in splits)
    space = {f"{CLASSIFIER_STEP}__{name}": dist for name, dist in spec.space(n_train).items()}
    pipeline = build_pipeline(
        spec,
        config.seed,
        smote,
        config.correlation_threshold,
        max_features=config.max_features,
        memory=memory,
    )
    search = RandomizedSearchCV(
        pipeline,
        space,
        n_iter=config.n_iter,
        scoring=config.scoring,
        cv=list(splits),
        n_jobs=config.n_jobs,
        random_state=config.seed,
        refit=False,
        error_score=np.nan,
    )
    start = time.perf_counter()
    try:
        with fitting_environment():
            search.fit(X, y)
    except ValueError as error:
        # scikit-learn raises (rather than scoring NaN) when every candidate failed on every
        # fold; any other ValueError is a real error and propagates
        if "fits failed" not in str(error):
            raise
        raise ClassifierFitError(
            f"every {spec.name} search candidate failed to fit on {len(y)} rows: "
            f"{str(error).strip().splitlines()[0]}"
        ) from error
    elapsed = time.perf_counter() - start
    scores = np.asarray(search.cv_results_["mean_test_score"], dtype=np.float64)
    if not np.isfinite(scores).any():
        raise ClassifierFitError(
            f"every {spec.name} search candidate failed to fit on {len(y)} rows; run one "
            f"fit directly to see the error"
        )
    prefix = f"{CLASSIFIER_STEP}__"
    best = int(np.nanargmax(scores))  # first best candidate: deterministic tie-break
    best_params = {
        name[len(prefix) :]: _to_python(value)
        for name, value in search.cv_results_["params"][best].items()
    }
    cv_results = pd.DataFrame(
        {
            "params": [
                {k[len(prefix) :]: _to_python(v) for k, v in params.items()}
                for params in search.cv_results_["params"]
            ],
            "mean_test_score": scores,
            "std_test_score": np.asarray(search.cv_results_["std_test_score"], dtype=np.float64),
        }
    )
    return SearchResult(
        classifier=spec.code,
        best_params=best_params,
        best_score=float(scores[best]),
        n_candidates=len(scores),
        n_failed=int(np.sum(~np.isfinite(scores))),
        elapsed_s=elapsed,
        cv_results=cv_results,
    )


def _fit_fold(
    pipeline: Pipeline,
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    columns: Sequence[str] | None,
    keep: bool,
) -> tuple[np.ndarray, Pipeline | None]:
    """Fit a clone of ``pipeline`` on the ``train`` rows; its abnormal probability of the
    ``test`` rows, and the fitted model when ``keep`` (without its preprocessing cache, which
    only serves fitting and lives in a temporary folder)."""

    def frame(rows: np.ndarray) -> np.ndarray | pd.DataFrame:
        return X[rows] if columns is None else pd.DataFrame(X[rows], columns=list(columns))

    model = clone(pipeline)
    with fitting_environment():
        model.fit(frame(train), y[train])
    scores = np.asarray(model.predict_proba(frame(test))[:, 1], dtype=np.float64)
    if not keep:
        return scores, None
    model.set_params(memory=None)
    return scores, model


def out_of_fold_models(
    spec: ClassifierSpec,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    config: SearchConfig,
    smote: SmoteSettings | None,
    memory: Memory | None = None,
    keep_models: bool = True,
    columns: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[Pipeline]]:
    """Predicted abnormal probability of every row by the pipeline fitted without its test part,
    and the fitted fold models (one per split, in split order; empty when ``keep_models`` is
    off).

    ``splits`` must be a partition (each row in exactly one test part): k-fold or leave-one-out.
    ``memory``: see :func:`preprocessing_cache`; ``columns`` (metric names of ``X``) makes the
    kept models name their features. The scores equal scikit-learn's ``cross_val_predict``.
    """
    pipeline = build_pipeline(
        spec,
        config.seed,
        smote,
        config.correlation_threshold,
        params,
        config.max_features,
        memory=memory,
    )
    tested = np.concatenate([test for _, test in splits])
    if len(tested) != len(y) or len(np.unique(tested)) != len(y):
        raise ValueError("out-of-fold scores need splits whose test parts partition the rows")
    try:
        with fitting_environment():
            fitted = Parallel(n_jobs=config.n_jobs)(
                delayed(_fit_fold)(pipeline, X, y, train, test, columns, keep_models)
                for train, test in splits
            )
    except (ValueError, np.linalg.LinAlgError) as error:
        raise ClassifierFitError(f"{spec.name} failed an out-of-fold fit: {error}") from error
    scores = np.empty(len(y), dtype=np.float64)
    for (_, test), (fold_scores, _) in zip(splits, fitted, strict=True):
        scores[test] = fold_scores
    if not np.isfinite(scores).all():
        raise ClassifierFitError(f"{spec.name} gave non-finite out-of-fold scores on {len(y)} rows")
    models = [model for _, model in fitted if model is not None]
    return scores, models


def out_of_fold_scores(
    spec: ClassifierSpec,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    config: SearchConfig,
    smote: SmoteSettings | None,
    memory: Memory | None = None,
) -> np.ndarray:
    """The scores of :func:`out_of_fold_models` without keeping the fold models (e.g. the
    paper's leave-one-out, one model per row)."""
    scores, _ = out_of_fold_models(
        spec, params, X, y, splits, config, smote, memory, keep_models=False
    )
    return scores
