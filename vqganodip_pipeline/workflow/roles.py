"""Rows of a dataset split by role, their ground-truth masks, and the golden sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline.data.loading import load_mask

# Roles whose images the model side learnt from: a labelled image in one of them is no
# evidence of how the released model does on new images.
TRAINING_ROLES = ("vqgan_train", "vqgan_val", "mask_calibration", "classifier_set")


def role_rows(split: pd.DataFrame, *roles: str, label: str | None = None) -> pd.DataFrame:
    """The rows of ``split`` in ``roles`` (and with ``label``, if given), sorted by image id."""
    rows = split[split["role"].isin(roles)]
    if label is not None:
        rows = rows[rows["label"] == label]
    return rows.sort_values("image_id").reset_index(drop=True)


def ground_truth_masks(
    rows: pd.DataFrame, size: int | None, storage_options: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Ground-truth defect masks (by image id, at ``size``) of the abnormal rows that have one."""
    masks = {}
    for row in rows[rows["label"] == "abnormal"].to_dict("records"):
        mask = load_mask(row, size, storage_options)
        if mask is not None:
            masks[str(row["image_id"])] = mask
    return masks


def golden_sample(images: np.ndarray) -> np.ndarray:
    """The mean of normal images ((m, H, W, 3) ``uint8``), the incumbent AOI's reference."""
    return np.asarray(images).mean(axis=0).round().astype(np.uint8)
