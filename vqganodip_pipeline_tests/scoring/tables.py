"""Synthetic metric tables for the scoring tests (two Gaussian classes in a few informative
columns, plus constant, duplicated, correlated and pure-noise columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

AGGREGATES = ("sum", "max", "min", "mean", "q1", "median", "q3")


def make_metric_table(
    n_normal: int = 30,
    n_abnormal: int = 30,
    n_informative: int = 6,
    n_noise: int = 20,
    shift: float = 1.5,
    seed: int = 0,
    pair_groups: bool = False,
) -> pd.DataFrame:
    """One row per image, identity columns + metric columns named ``level__metric__agg__w``.

    Informative columns: N(0, 1) for normal images, N(shift * w_j, 1) for abnormal ones.
    ``image__mse__value__raw`` is informative with half the shift; ``patch__const__sum__raw``
    is constant; ``patch__dup0__sum__raw`` = 2 * informative 0 + 1 (correlation 1);
    ``patch__near1__sum__raw`` = informative 1 + 0.05 noise (correlation > 0.95).
    ``pair_groups`` puts images in groups of two (a normal and an abnormal image per group while
    both remain, like a DeepPCB template/test pair).
    """
    rng = np.random.default_rng(seed)
    n = n_normal + n_abnormal
    y = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_abnormal, dtype=int)]
    columns: dict[str, np.ndarray] = {}
    weights = np.linspace(1.0, 0.4, n_informative)
    informative = rng.normal(size=(n, n_informative)) + shift * y[:, None] * weights[None, :]
    for j in range(n_informative):
        columns[f"patch__fid{j}__{AGGREGATES[j % 7]}__weighted"] = informative[:, j]
    columns["image__mse__value__raw"] = rng.normal(size=n) + 0.5 * shift * y
    columns["patch__const__sum__raw"] = np.full(n, 3.0)
    columns["patch__dup0__sum__raw"] = 2.0 * informative[:, 0] + 1.0
    columns["patch__near1__sum__raw"] = informative[:, 1] + 0.05 * rng.normal(size=n)
    for j in range(n_noise):
        columns[f"pixel__noise{j}__{AGGREGATES[j % 7]}__raw"] = rng.normal(size=n)
    ids = [f"img{i:03d}" for i in range(n)]
    if pair_groups:
        normal_idx = np.flatnonzero(y == 0)
        abnormal_idx = np.flatnonzero(y == 1)
        group = np.empty(n, dtype=object)
        for k in range(max(n_normal, n_abnormal)):
            for idx in (normal_idx, abnormal_idx):
                if k < len(idx):
                    group[idx[k]] = f"pair{k:03d}"
        groups = group.tolist()
    else:
        groups = ids
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "label": np.where(y == 1, "abnormal", "normal"),
            "defect_type": np.where(y == 1, "short", "good"),
            "role": "classifier_set",
            "group_id": groups,
            **columns,
        }
    )
    return frame
