"""Seeded assignment of labelled images to the roles of the method.

Roles:

- ``vqgan_train``: normal images the VQGAN learns from;
- ``vqgan_val``: held-out normal images for early stopping and reconstruction-quality checks;
- ``mask_calibration``: m unseen normal images from which the weighting mask is computed;
- ``classifier_set``: abnormal images plus (by default) as many normal images, on which the
  composite score is fitted and its ZFN threshold calibrated (paper: 174 + 174);
- ``holdout``: the same kind of images, never used for fitting, to check the shipped threshold;
- ``unused``: labelled images left out on purpose (e.g. tested images of DeepPCB pairs whose
  template trains the VQGAN, surplus test normals of an MVTec category).

Groups (``group_id``) are never split between roles. A dataset's own split (``source_split``:
MVTec ``train``/``test``, DeepPCB pairs) is respected: ``train`` images only feed the
reconstruction side, ``test`` images only the evaluation side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ROLES = ("vqgan_train", "vqgan_val", "mask_calibration", "classifier_set", "holdout", "unused")


class SplitError(ValueError):
    """The labelled data cannot be split into the roles the method needs."""


@dataclass(frozen=True)
class SplitConfig:
    """Sizes of the roles.

    Attributes:
        m: mask-calibration images (paper: 30), capped at a quarter of the reconstruction-side
            normal images so that training keeps the bulk.
        val_fraction, max_val: share (and cap) of reconstruction-side normals kept for validation.
        holdout_fraction: share of evaluation groups (abnormal and normal separately) in holdout.
        balance_normals: evaluation side gets as many normal images as abnormal ones (paper).
        seed: every random choice derives from it.
    """

    m: int = 30
    val_fraction: float = 0.1
    max_val: int = 32
    holdout_fraction: float = 0.25
    balance_normals: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m < 0:
            raise ValueError(f"m must be >= 0, got {self.m}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")


def _shuffled(items: list[str], rng: np.random.Generator) -> list[str]:
    return [items[i] for i in rng.permutation(len(items))]


def assign_roles(manifest: pd.DataFrame, config: SplitConfig | None = None) -> pd.DataFrame:
    """Return the labelled rows of ``manifest`` with a ``role`` column (unlabelled rows are left
    out). Deterministic given ``config.seed`` and the manifest's content (order-independent)."""
    config = config or SplitConfig()
    labelled = manifest[manifest["label"].isin(["normal", "abnormal"])].copy()
    labelled = labelled.sort_values("image_id", kind="stable").reset_index(drop=True)
    n_abnormal = int((labelled["label"] == "abnormal").sum())
    if n_abnormal == 0:
        raise SplitError(
            "no abnormal images among the labelled data: the composite score and its "
            "zero-false-negative threshold need abnormal examples"
        )
    if int((labelled["label"] == "normal").sum()) == 0:
        raise SplitError("no normal images among the labelled data: the VQGAN needs them")

    rng = np.random.default_rng(config.seed)
    groups = labelled.groupby("group_id", sort=True)
    has_abnormal = groups["label"].agg(lambda s: bool((s == "abnormal").any()))
    split_of = groups["source_split"].agg(lambda s: s.iloc[0] or "")
    group_size = groups.size()

    role: dict[str, str] = {}
    train_side = [g for g in split_of.index if split_of[g] == "train"]
    test_side = [g for g in split_of.index if split_of[g] == "test"]
    free = [g for g in split_of.index if split_of[g] not in ("train", "test")]

    eval_abnormal = [g for g in test_side + free if has_abnormal[g]]
    eval_normal_test = _shuffled([g for g in test_side if not has_abnormal[g]], rng)
    free_normal = _shuffled([g for g in free if not has_abnormal[g]], rng)
    n_eval_abnormal_images = int(
        labelled[labelled["group_id"].isin(eval_abnormal)]["label"].eq("abnormal").sum()
    )
    if n_eval_abnormal_images == 0:
        raise SplitError(
            "every abnormal image sits on the reconstruction-training side of the dataset's own "
            "split; none is left to fit and check the composite score"
        )

    # Evaluation normals: the dataset's test normals first, then free normals, until balanced.
    eval_normal: list[str] = []
    wanted = n_eval_abnormal_images if config.balance_normals else None
    count = 0
    for group in eval_normal_test + free_normal:
        if wanted is not None and count >= wanted:
            break
        eval_normal.append(group)
        count += int(group_size[group])
    for group in eval_normal_test:
        if group not in eval_normal:
            role[group] = "unused"
    # Train-side groups feed reconstruction whatever they hold; their abnormal images (the
    # tested image of a DeepPCB training pair) end up "unused" below.
    recon_normal = [g for g in free_normal if g not in eval_normal] + train_side

    for pool in (eval_abnormal, eval_normal):
        ordered = _shuffled(sorted(pool), rng)
        n_holdout = round(config.holdout_fraction * len(ordered))
        if config.holdout_fraction > 0 and len(ordered) >= 4:
            n_holdout = max(n_holdout, 1)
        for i, group in enumerate(ordered):
            role[group] = "holdout" if i < n_holdout else "classifier_set"

    recon = _shuffled(sorted(recon_normal), rng)
    if not recon:
        raise SplitError(
            "no normal images left for VQGAN training after the evaluation side took its share; "
            "add normal images or set balance_normals=False"
        )
    n_mask = min(config.m, len(recon) // 4)
    n_val = min(config.max_val, round(config.val_fraction * len(recon)))
    for i, group in enumerate(recon):
        if i < n_mask:
            role[group] = "mask_calibration"
        elif i < n_mask + n_val:
            role[group] = "vqgan_val"
        else:
            role[group] = "vqgan_train"

    labelled["role"] = labelled["group_id"].map(role).astype("string")
    # Within an evaluation pair, both images are used; within a reconstruction-side pair (DeepPCB
    # training pairs) only normal images are.
    recon_roles = {"vqgan_train", "vqgan_val", "mask_calibration"}
    abnormal_in_recon = labelled["role"].isin(recon_roles) & (labelled["label"] == "abnormal")
    labelled.loc[abnormal_in_recon, "role"] = "unused"
    return labelled


def role_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Images per role and label, as a small table (all roles listed)."""
    table = split.groupby(["role", "label"]).size().unstack(fill_value=0)
    table = table.reindex(index=list(ROLES), columns=["normal", "abnormal"], fill_value=0)
    return table.astype(int)
