"""Figures of the composite score as PNG bytes (matplotlib's Agg canvas, no global pyplot state).

Score distributions with the threshold (paper Fig. 12), the most important metrics (Fig. 14)
and the ROC curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline
from matplotlib.figure import Figure
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_curve

from vqganodip_pipeline.scoring.classifiers import CLASSIFIER_STEP, PREPROCESS_STEP
from vqganodip_pipeline.scoring.ensemble import members_of
from vqganodip_pipeline.scoring.model import CompositeScoreModel
from vqganodip_pipeline.scoring.table import labels_to_y
from vqganodip_pipeline.scoring.thresholds import auroc, check_scores, confusion_at_threshold
from vqganodip_pipeline.viz import figure_png


def _png(figure: Figure) -> bytes:
    return figure_png(figure)


def plot_score_distributions(
    scores: object,
    y: object,
    threshold: float | None = None,
    title: str = "Composite anomaly score",
    bins: int = 30,
) -> bytes:
    """Histograms of the normal and abnormal scores, with the threshold as a vertical line."""
    s, labels = check_scores(scores, y)
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    low, high = float(s.min()), float(s.max())
    if threshold is not None and np.isfinite(threshold):
        low, high = min(low, threshold), max(high, threshold)
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    for label, name, color in ((0, "normal", "tab:blue"), (1, "abnormal", "tab:red")):
        values = s[labels == label]
        axes.hist(values, bins=edges, alpha=0.6, color=color, label=f"{name} (n={len(values)})")
    if threshold is not None:
        metrics = confusion_at_threshold(s, labels, threshold)
        axes.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {threshold:.4g} (FPR {metrics['fpr']:.1%}, "
            f"missed {metrics['missed']})",
        )
    axes.set_xlabel("score (score >= threshold: abnormal)")
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend()
    return _png(figure)


def plot_roc(
    scores: object, y: object, threshold: float | None = None, title: str = "ROC"
) -> bytes:
    """ROC curve with its AUROC; the operating point of ``threshold`` is marked."""
    s, labels = check_scores(scores, y)
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    area = auroc(s, labels)
    if np.isfinite(area):
        fpr, tpr, _ = roc_curve(labels, s)
        axes.plot(fpr, tpr, color="tab:red", label=f"AUROC {area:.4f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    if threshold is not None:
        metrics = confusion_at_threshold(s, labels, threshold)
        axes.plot(
            [metrics["fpr"]], [1.0 - metrics["fnr"]], "ko", label=f"threshold {threshold:.4g}"
        )
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.legend(loc="lower right")
    return _png(figure)


def _member_importances(
    member: Pipeline,
    df: pd.DataFrame | None,
    feature_names_in: list[str],
    n_repeats: int,
    seed: int,
) -> tuple[pd.Series, str] | None:
    """One fitted pipeline's importances over the metrics it keeps and how they were read."""
    classifier = member.named_steps[CLASSIFIER_STEP]
    names = [str(name) for name in member.named_steps[PREPROCESS_STEP].get_feature_names_out()]
    if hasattr(classifier, "feature_importances_"):
        values, method = np.asarray(classifier.feature_importances_, dtype=np.float64), "impurity"
    elif hasattr(classifier, "coef_"):
        values, method = np.abs(np.asarray(classifier.coef_, dtype=np.float64)).ravel(), "|coef|"
    elif df is None:
        return None
    else:
        transformed = member.named_steps[PREPROCESS_STEP].transform(
            df[feature_names_in].astype(np.float64)
        )
        result = permutation_importance(
            classifier,
            transformed,
            labels_to_y(df),
            scoring="roc_auc",
            n_repeats=n_repeats,
            random_state=seed,
        )
        values, method = np.asarray(result.importances_mean, dtype=np.float64), "permutation"
    if len(values) != len(names):
        raise RuntimeError(f"{len(values)} importances for {len(names)} kept metrics")
    return pd.Series(values, index=names), method


def metric_importances(
    model: CompositeScoreModel,
    df: pd.DataFrame | None = None,
    n_repeats: int = 10,
    seed: int = 0,
) -> pd.Series:
    """Importance of each kept metric for ``model``, highest first.

    Per fitted pipeline of the model: ``feature_importances_`` when its classifier has it (tree
    ensembles), else ``|coef_|`` (linear models; metrics are min-max scaled, so magnitudes
    compare), else permutation importance (drop in AUROC) on the labelled table ``df``. Each
    pipeline's importances are normalised to sum 1 (negative permutation drops count as 0)
    and averaged over the pipelines (a metric a pipeline does not keep counts 0 there). The
    series name says which readings were averaged. Raises when no pipeline has importances
    and ``df`` is missing.
    """
    readings = [
        _member_importances(member, df, model.feature_names_in, n_repeats, seed)
        for member in members_of(model.pipeline)
    ]
    found = [reading for reading in readings if reading is not None]
    if not found:
        raise ValueError(
            f"{model.classifier_name} has neither feature_importances_ nor coef_; pass a "
            f"labelled metric table (df) for permutation importance"
        )
    total = pd.Series(0.0, index=pd.Index(model.feature_names_kept, name="metric"))
    for values, _ in found:
        clipped = values.clip(lower=0.0)
        if clipped.sum() > 0:
            total = total.add(clipped / clipped.sum(), fill_value=0.0)
    methods = sorted({method for _, method in found})
    name = "/".join(methods) if len(found) == 1 else f"mean of {len(found)} ({'/'.join(methods)})"
    series = (total / len(found)).rename(name)
    return series.sort_values(ascending=False, kind="mergesort")


def plot_metric_importances(
    importances: pd.Series, top: int = 10, title: str = "Most important metrics"
) -> bytes:
    """Horizontal bars of the ``top`` most important metrics (highest at the top)."""
    head = importances.sort_values(ascending=False, kind="mergesort").head(top)
    figure = Figure(figsize=(8, 0.45 * len(head) + 1.2))
    axes = figure.add_subplot()
    positions = np.arange(len(head))[::-1]
    axes.barh(positions, head.to_numpy(), color="tab:green")
    axes.set_yticks(positions, [str(name) for name in head.index])
    axes.set_xlabel(f"importance ({importances.name})")
    axes.set_title(title)
    return _png(figure)


def plot_shift_scores(
    scores: object, threshold: float, title: str = "Scores of the shift", bins: int = 30
) -> bytes:
    """Histogram of an (unlabelled) shift's scores with the threshold: how many units pass and
    how many go to the operator, and how close the passing ones came."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("plot_shift_scores needs at least one finite score")
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    low, high = min(float(s.min()), threshold), max(float(s.max()), threshold)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    flagged = s >= threshold
    axes.hist(
        s[~flagged], bins=edges, color="tab:blue", alpha=0.7, label=f"pass (n={(~flagged).sum()})"
    )
    axes.hist(
        s[flagged], bins=edges, color="tab:red", alpha=0.7, label=f"to operator (n={flagged.sum()})"
    )
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    axes.set_xlabel("composite anomaly score")
    axes.set_ylabel("units")
    axes.set_title(title)
    axes.legend()
    return _png(figure)
