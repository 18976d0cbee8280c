"""The paper's preprocessing of the metric table, as one scikit-learn transformer.

Fitted on training rows only (it sits first in every pipeline, so cross-validation refits it on
each training fold): drop constant columns, drop one column of every pair whose absolute Pearson
correlation exceeds ``correlation_threshold`` (0.95 in the paper), min-max scale the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from vqganodip_pipeline.scoring.baselines import auroc_columns


class MetricPreprocessor(TransformerMixin, BaseEstimator):
    """Constant-column removal, correlation filter and min-max scaling.

    Parameters
    ----------
    correlation_threshold:
        A column is dropped when its absolute Pearson correlation with an earlier *kept* column
        is strictly greater than this value (paper: 0.95). Columns are visited in input order
        (the paper), or, with ``max_features``, from the strongest training AUROC down (ties:
        input order), so of a correlated pair the earlier, or the stronger, one is kept; a
        column is only dropped for a partner that stays (A~B and B~C but not A~C keeps A and
        C). ``None`` disables the filter.
    drop_constant:
        Drop columns whose training values are all equal.
    scale:
        Min-max scale kept columns to [0, 1] with the training minimum and maximum. Values of
        unseen rows may fall outside [0, 1]; they are not clipped, so an extreme anomaly stays
        extreme.
    max_features:
        After the two filters, keep only this many columns: those whose training AUROC is
        farthest from 0.5 (ties: input order). Needs ``y``. The correlation filter then keeps
        the stronger column of a correlated pair: visited in input order it could drop the best
        metric for a weaker near-copy listed before it (e.g. ``sum`` kept over ``max``), and
        the ranking would never see it. A few hundred metrics against a
        hundred-odd labelled images overfit most classifiers; inside a pipeline the ranking is
        refitted on every training fold, so it never sees a test fold. ``"auto"``: one metric
        per ten training images of the smaller class (the events-per-variable rule of thumb
        of logistic regression), at least 2. ``None``: keep all (the paper).

    Attributes
    ----------
    support_ : bool array (n_features_in_,), the kept input columns.
    auroc_ : float array (n_features_in_,), training AUROC of every column (NaN when
        ``max_features`` is None or the column is constant).
    constant_ : bool array (n_features_in_,), the columns dropped as constant.
    correlated_with_ : int array (n_features_in_,), for a column dropped by the correlation
        filter the index of the kept column it duplicates, else -1.
    data_min_, data_range_ : float arrays (n_kept,), the scaling of the kept columns.
    """

    def __init__(
        self,
        correlation_threshold: float | None = 0.95,
        drop_constant: bool = True,
        scale: bool = True,
        max_features: int | str | None = None,
    ) -> None:
        self.correlation_threshold = correlation_threshold
        self.drop_constant = drop_constant
        self.scale = scale
        self.max_features = max_features

    def fit(self, X: object, y: object = None) -> MetricPreprocessor:
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite=True, ensure_min_samples=2)
        threshold = self.correlation_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"correlation_threshold must be in [0, 1], got {threshold}")
        n_features = X.shape[1]
        constant = (
            (X.max(axis=0) == X.min(axis=0)) if self.drop_constant else np.zeros(n_features, bool)
        )
        correlated_with = np.full(n_features, -1, dtype=np.int64)
        candidates = np.flatnonzero(~constant)
        auroc = np.full(n_features, np.nan)
        limit: int | None = None
        if self.max_features is not None:
            if y is None:
                raise ValueError("max_features ranks columns by AUROC and needs labels y")
            labels = np.asarray(y)
            if len(np.unique(labels)) != 2:
                raise ValueError("max_features needs both classes among the training rows")
            positive = labels == np.unique(labels)[1]
            limit = self._feature_limit(positive)
            # one rank pass over all columns: this runs in every fit of every search candidate
            auroc[candidates] = auroc_columns(X[:, candidates], positive)
            strength = np.abs(auroc[candidates] - 0.5)
            candidates = candidates[np.argsort(-strength, kind="stable")]
        if threshold is not None and len(candidates) > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.abs(np.corrcoef(X[:, candidates], rowvar=False))
            kept_local: list[int] = []
            for j in range(len(candidates)):
                if kept_local:
                    # NaN (a constant column kept on purpose) compares False: never "correlated".
                    above = corr[j, kept_local] > threshold
                    if above.any():
                        correlated_with[candidates[j]] = candidates[
                            kept_local[int(np.argmax(above))]
                        ]
                        continue
                kept_local.append(j)
        support = ~constant & (correlated_with < 0)
        if not support.any():
            raise ValueError(
                f"MetricPreprocessor: all {n_features} metric columns are constant on the "
                f"{X.shape[0]} training rows; nothing to learn from"
            )
        self.n_features_kept_ = int(support.sum())
        if limit is not None:
            # candidates are in ranking order: the first `limit` survivors of the filter
            ranked = candidates[support[candidates]]
            self.n_features_kept_ = min(limit, len(ranked))
            support = np.zeros(n_features, bool)
            support[ranked[:limit]] = True
        kept = X[:, support]
        self.auroc_ = auroc
        self.constant_ = constant
        self.correlated_with_ = correlated_with
        self.support_ = support
        self.data_min_ = kept.min(axis=0)
        data_range = kept.max(axis=0) - self.data_min_
        # A constant column kept on purpose (drop_constant=False) maps to 0, as in MinMaxScaler.
        self.data_range_ = np.where(data_range > 0, data_range, 1.0)
        return self

    def _feature_limit(self, positive: np.ndarray) -> int:
        if self.max_features == "auto":
            minority = int(min(positive.sum(), (~positive).sum()))
            return max(2, minority // 10)
        if isinstance(self.max_features, str) or int(self.max_features) < 1:
            raise ValueError(f"max_features must be >= 1 or 'auto', got {self.max_features!r}")
        return int(self.max_features)

    def transform(self, X: object) -> np.ndarray:
        check_is_fitted(self, "support_")
        names = getattr(self, "feature_names_in_", None)
        if isinstance(X, pd.DataFrame) and names is not None and X.columns.equals(pd.Index(names)):
            # the columns it was fitted on, in order: scikit-learn's validation checks the dtype
            # of every one of ~400 columns (3 ms a call), and the composite calls this once per
            # fold model, 60 times per scored table
            X = X.to_numpy(dtype=np.float64)
            if not np.isfinite(X).all():
                raise ValueError("Input X contains NaN or infinity.")
        else:
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite=True, reset=False)
        kept = X[:, self.support_]
        if not self.scale:
            return kept
        return (kept - self.data_min_) / self.data_range_

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "support_")
        names = _check_feature_names_in(self, input_features)
        return np.asarray(names, dtype=object)[self.support_]

    def dropped_correlated(self, input_features: object = None) -> dict[str, str]:
        """``{dropped column: kept column it correlates with}`` for the correlation filter."""
        check_is_fitted(self, "support_")
        names = _check_feature_names_in(self, input_features)
        return {str(names[j]): str(names[k]) for j, k in enumerate(self.correlated_with_) if k >= 0}
