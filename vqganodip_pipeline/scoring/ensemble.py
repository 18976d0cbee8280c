"""The mean abnormal probability of already-fitted models (soft voting without refitting).

The composite ships, for every candidate classifier, the models fitted on the inner folds of its
out-of-fold pass (each on ``(k - 1) / k`` of the fit part) instead of one refit on the whole fit
part, and by default the mean over every candidate's fold models. Both are one fixed function of
the fit part, so the split-conformal threshold read off the calibration part stays exact.
Measured on the development tables (``bench/bench_choice.py``): choosing one refitted candidate
on out-of-fold evidence let one hard calibration defect drag a saturated candidate's threshold
to the bottom; the mean does not have that failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vqganodip_pipeline.scoring.classifiers import PREPROCESS_STEP


@dataclass
class MeanProbability:
    """``predict_proba`` = the mean of ``members``' ``predict_proba`` (fitted binary classifiers
    or pipelines with the same classes). Nothing is fitted here: ``members`` are used as given.

    ``labels``: one name per member (e.g. its classifier code), for reports. A dataclass, so a
    stored model bundle keeps it as plain structure around its members' estimator files.
    """

    members: list[Any]
    labels: list[str]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("MeanProbability needs at least one fitted member")
        if len(self.labels) != len(self.members):
            raise ValueError(f"{len(self.labels)} labels for {len(self.members)} members")
        classes = [np.asarray(member.classes_).tolist() for member in self.members]
        if any(c != classes[0] for c in classes):
            raise ValueError(f"members disagree on their classes: {sorted(map(str, classes))}")
        self.members = list(self.members)
        self.labels = [str(label) for label in self.labels]

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.members[0].classes_)

    def predict_proba(self, X: Any) -> np.ndarray:
        total = np.zeros((len(X), len(self.classes_)), dtype=np.float64)
        for member in self.members:
            total += member.predict_proba(X)
        return total / len(self.members)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        shown = ", ".join(f"{label} x{count}" for label, count in counts.items())
        return f"MeanProbability({shown})"


def members_of(model: Any) -> list[Any]:
    """The fitted pipelines behind ``model``: its members for a :class:`MeanProbability`
    (nested ones flattened), else ``[model]``."""
    if isinstance(model, MeanProbability):
        return [leaf for member in model.members for leaf in members_of(member)]
    return [model]


def kept_metrics(model: Any) -> list[str]:
    """Metric columns that reach a classifier in at least one member, in first-seen order."""
    names: dict[str, None] = {}
    for member in members_of(model):
        for name in member.named_steps[PREPROCESS_STEP].get_feature_names_out():
            names.setdefault(str(name), None)
    return list(names)


def dropped_in_every_member(model: Any) -> dict[str, str]:
    """The correlation filter's drops that every member made (name -> the first member's
    reason): a metric listed here reaches no classifier through that filter."""
    drops = [
        member.named_steps[PREPROCESS_STEP].dropped_correlated() for member in members_of(model)
    ]
    common = set(drops[0]).intersection(*map(set, drops[1:]))
    return {name: reason for name, reason in drops[0].items() if name in common}
