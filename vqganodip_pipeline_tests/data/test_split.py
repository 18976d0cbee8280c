"""Role assignment: sizes, groups never split, dataset splits respected, determinism."""

from __future__ import annotations

import pandas as pd
import pytest

from vqganodip_pipeline.data.split import SplitConfig, SplitError, assign_roles, role_counts


def _manifest(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """rows of (image_id, label, source_split, group_id)."""
    return pd.DataFrame(
        [
            {"image_id": i, "label": lab, "source_split": s, "group_id": g or i}
            for i, lab, s, g in rows
        ]
    )


def mvtec_like(n_train: int = 80, n_test_good: int = 30, n_abnormal: int = 20) -> pd.DataFrame:
    rows = [(f"tr{i:03d}", "normal", "train", "") for i in range(n_train)]
    rows += [(f"tg{i:03d}", "normal", "test", "") for i in range(n_test_good)]
    rows += [(f"ab{i:03d}", "abnormal", "test", "") for i in range(n_abnormal)]
    rows += [("u1", "unknown", "", "")]
    return _manifest(rows)


def test_mvtec_like_split_respects_train_and_test() -> None:
    config = SplitConfig(m=10, val_fraction=0.1, holdout_fraction=0.25, seed=1)
    result = assign_roles(mvtec_like(), config)
    assert "u1" not in set(result["image_id"])  # unlabelled rows are not part of the split
    by_role = result.groupby("role")["image_id"].apply(set)
    train_ids = {f"tr{i:03d}" for i in range(80)}
    # train images only on the reconstruction side, test images only on the evaluation side
    recon = by_role["vqgan_train"] | by_role["vqgan_val"] | by_role["mask_calibration"]
    assert recon == train_ids
    counts = role_counts(result)
    assert counts.loc["mask_calibration", "normal"] == 10
    assert counts.loc["vqgan_val", "normal"] == 8
    assert counts.loc["vqgan_train", "normal"] == 62
    # balanced evaluation side: 20 abnormal + 20 normal, surplus test normals unused
    assert counts.loc[["classifier_set", "holdout"], "abnormal"].sum() == 20
    assert counts.loc[["classifier_set", "holdout"], "normal"].sum() == 20
    assert counts.loc["holdout", "abnormal"] == 5 and counts.loc["holdout", "normal"] == 5
    assert counts.loc["unused", "normal"] == 10


def test_split_is_deterministic_and_order_independent() -> None:
    manifest = mvtec_like()
    first = assign_roles(manifest, SplitConfig(seed=4))
    shuffled = assign_roles(manifest.sample(frac=1.0, random_state=0), SplitConfig(seed=4))
    pd.testing.assert_frame_equal(first, shuffled)
    other = assign_roles(manifest, SplitConfig(seed=5))
    assert not first["role"].equals(other["role"])


def test_pairs_are_never_split_and_training_pairs_use_only_templates() -> None:
    rows = []
    for i in range(40):
        side = "train" if i < 20 else "test"
        rows += [(f"t{i}", "normal", side, f"pair{i}"), (f"d{i}", "abnormal", side, f"pair{i}")]
    result = assign_roles(_manifest(rows), SplitConfig(m=4))
    recon_roles = {"vqgan_train", "vqgan_val", "mask_calibration"}
    for _, pair in result.groupby("group_id"):
        roles = set(pair["role"])
        # one role per pair, except that a training pair's tested image is left unused
        assert len(roles) == 1 or (len(roles) == 2 and "unused" in roles and roles & recon_roles)
    evaluation = result[result["role"].isin(["classifier_set", "holdout"])]
    assert evaluation.groupby("group_id")["role"].nunique().max() == 1
    assert set(evaluation["group_id"]) == {f"pair{i}" for i in range(20, 40)}
    train_side = result[result["group_id"].isin({f"pair{i}" for i in range(20)})]
    assert (train_side[train_side["label"] == "abnormal"]["role"] == "unused").all()
    assert set(train_side[train_side["label"] == "normal"]["role"]) == {
        "vqgan_train",
        "vqgan_val",
        "mask_calibration",
    }


def test_free_normals_balance_the_evaluation_side() -> None:
    rows = [(f"n{i}", "normal", "", "") for i in range(100)]
    rows += [(f"a{i}", "abnormal", "", "") for i in range(12)]
    counts = role_counts(assign_roles(_manifest(rows), SplitConfig(m=30)))
    assert counts.loc[["classifier_set", "holdout"], "normal"].sum() == 12
    assert counts.loc["mask_calibration", "normal"] == 22  # a quarter of the 88 left
    assert counts.loc[["vqgan_train", "vqgan_val", "mask_calibration"], "normal"].sum() == 88


def test_no_abnormal_or_no_normal_images_are_clear_errors() -> None:
    with pytest.raises(SplitError, match="no abnormal images"):
        assign_roles(_manifest([("n1", "normal", "", ""), ("n2", "normal", "", "")]))
    with pytest.raises(SplitError, match="no normal images"):
        assign_roles(_manifest([("a1", "abnormal", "", "")]))
    with pytest.raises(SplitError, match="none is left"):
        assign_roles(_manifest([("n1", "normal", "train", ""), ("a1", "abnormal", "train", "")]))
    with pytest.raises(ValueError, match="holdout_fraction"):
        SplitConfig(holdout_fraction=1.5)
