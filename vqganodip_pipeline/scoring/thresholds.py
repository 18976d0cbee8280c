"""Zero-false-negative (ZFN) thresholds and the confusion metrics of a thresholded score.

Decision rule everywhere: ``score >= threshold`` -> abnormal ("send to operator"); a score equal
to the threshold counts as abnormal. Labels ``y`` are 1 = abnormal, 0 = normal.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

STD_THRESHOLD = 0.5  # the "standard" threshold on a predicted abnormal probability


def check_scores(scores: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(y)
    if s.ndim != 1 or labels.ndim != 1 or len(s) != len(labels):
        raise ValueError(
            f"scores and y must be 1-D arrays of equal length, got shapes {s.shape} and "
            f"{labels.shape}"
        )
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/inf value(s)")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"y must contain only 0 (normal) and 1 (abnormal), got {np.unique(labels)}"
        )
    return s, labels.astype(np.int64)


def zfn_threshold(scores: object, y: object, margin: float = 0.0) -> float:
    """The lowest score among the abnormal images, minus ``margin`` (>= 0, in score units).

    With the rule ``score >= threshold`` every abnormal image of ``(scores, y)`` is flagged
    (recall 1 on these images). A positive margin widens the net for unseen abnormal images at
    the cost of more false alarms.
    """
    s, labels = check_scores(scores, y)
    if margin < 0 or not np.isfinite(margin):
        raise ValueError(f"margin must be a finite value >= 0, got {margin}")
    if not labels.any():
        raise ValueError("zfn_threshold needs at least one abnormal image (y == 1), got none")
    return float(s[labels == 1].min() - margin)


def confusion_from_decisions(decisions: object, y: object) -> dict[str, float | int]:
    """Metrics of boolean decisions (True = abnormal) against labels; see
    :func:`confusion_at_threshold` for the definitions."""
    d = np.asarray(decisions, dtype=bool)
    labels = np.asarray(y).astype(np.int64)
    if d.shape != labels.shape or d.ndim != 1:
        raise ValueError(
            f"decisions and y must be 1-D of equal length, got {d.shape}, {labels.shape}"
        )
    tp = int(np.sum(d & (labels == 1)))
    fp = int(np.sum(d & (labels == 0)))
    tn = int(np.sum(~d & (labels == 0)))
    fn = int(np.sum(~d & (labels == 1)))
    n = tp + fp + tn + fn
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "fnr": fn / (fn + tp) if fn + tp else 0.0,
        "missed": fn,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def confusion_at_threshold(scores: object, y: object, threshold: float) -> dict[str, float | int]:
    """accuracy, precision, fpr, fnr, missed, tp, fp, tn, fn of ``score >= threshold``.

    Conventions for empty denominators (all reported as 0.0 so tables stay finite; the counts
    tell whether a rate is meaningful): precision with no predicted abnormal image, FPR with no
    normal image, FNR with no abnormal image, accuracy of an empty set. ``missed`` equals ``fn``:
    the abnormal images the threshold lets pass.
    """
    s, labels = check_scores(scores, y)
    return confusion_from_decisions(s >= threshold, labels)


def accuracy_threshold(scores: object, y: object) -> float:
    """The threshold maximising accuracy of ``score >= threshold`` on ``(scores, y)``.

    Candidates are the distinct scores and +inf (everything normal); ties go to the highest
    candidate (fewest alarms). Used as the "STD" threshold of raw-score baselines, whose scores
    are not probabilities and so have no natural 0.5.
    """
    s, labels = check_scores(scores, y)
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    sorted_labels = labels[order]
    # Threshold at the k-th highest distinct score flags all images scoring >= it.
    positives_flagged = np.cumsum(sorted_labels)
    negatives_flagged = np.cumsum(1 - sorted_labels)
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    n_negative = int((labels == 0).sum())
    correct = positives_flagged + (n_negative - negatives_flagged)
    candidates = sorted_scores[last_of_value]
    candidate_correct = correct[last_of_value]
    best = int(np.argmax(candidate_correct))  # first maximum = highest such candidate
    if candidate_correct[best] > n_negative:  # +inf flags nothing and gets n_negative right
        return float(candidates[best])
    return float("inf")


def auroc(scores: object, y: object) -> float:
    """Area under the ROC curve of ``scores`` for ``y`` (NaN when only one class is present)."""
    s, labels = check_scores(scores, y)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, s))


def metrics_row(
    scores: object,
    y: object,
    threshold_zfn: float,
    threshold_std: float = STD_THRESHOLD,
) -> dict[str, float | int]:
    """Flat dict of the paper's Table-1 metrics under both thresholds.

    Keys: ``{accuracy, precision, fpr, fnr, missed, tp, fp, tn, fn}_{std, zfn}``,
    ``threshold_std``, ``threshold_zfn``, ``auroc``, ``n_abnormal``, ``n_normal``.
    """
    s, labels = check_scores(scores, y)
    row: dict[str, float | int] = {}
    for suffix, threshold in (("std", threshold_std), ("zfn", threshold_zfn)):
        for key, value in confusion_at_threshold(s, labels, threshold).items():
            row[f"{key}_{suffix}"] = value
    row["threshold_std"] = float(threshold_std)
    row["threshold_zfn"] = float(threshold_zfn)
    row["auroc"] = auroc(s, labels)
    row["n_abnormal"] = int(labels.sum())
    row["n_normal"] = int(len(labels) - labels.sum())
    return row
