"""Workflow steps shared by the assets and evaluate: batch scoring excludes training images from
its labelled evaluation; the shortcut finding warns with the statistics that separate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vqganodip_pipeline.scoring import SearchConfig, fit_composite_model
from vqganodip_pipeline.workflow.scoring import labelled_evaluation, score_batch, shortcut_finding
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


@pytest.fixture(scope="module")
def model():
    table = make_metric_table(n_normal=24, n_abnormal=18, n_noise=4)
    config = SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=0)
    return fit_composite_model(table, classifiers=["lr"], config=config)


def test_labelled_batch_evaluation_leaves_out_images_the_model_learnt_from(model) -> None:
    batch = make_metric_table(n_normal=10, n_abnormal=10, n_noise=4, seed=5)
    patches = pd.DataFrame(columns=["image_id", "variant", "rank", "top", "left", "size"])
    trained_on = [*batch["image_id"][:6], "someone-else"]
    scored = score_batch(model, batch, patches, trained_on)
    assert scored["seen_in_training"].tolist() == [True] * 6 + [False] * 14
    np.testing.assert_allclose(scored["score"], model.score(batch))
    evaluation = labelled_evaluation(scored)
    assert evaluation is not None and evaluation["images"] == 14
    unseen = scored[~scored["seen_in_training"]]
    missed = int(((unseen["label"] == "abnormal") & (unseen["score"] < model.threshold)).sum())
    assert evaluation["missed"] == missed
    assert evaluation["tp"] + evaluation["fn"] == 10  # every abnormal image is unseen here
    # only seen images (or one class) left: nothing to report
    assert labelled_evaluation(score_batch(model, batch, patches, batch["image_id"])) is None


def test_shortcut_finding_warns_and_names_the_statistics() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    frame = pd.DataFrame(
        {
            "label": np.where(y == 1, "abnormal", "normal"),
            "capture__grey_mean": rng.normal(100, 3, 60) + 10 * y,  # a brightness offset
            "capture__grey_std": rng.normal(40, 3, 60),
        }
    )
    board = pd.DataFrame(
        [
            {
                "classifier": "capture_shortcut",
                "auroc_pooled": 0.93,
                "accuracy_zfn": 0.8,
                "missed_zfn": 1,
            }
        ]
    )
    finding = shortcut_finding(board, frame)
    assert finding is not None and finding["warning"]
    assert finding["statistics"][0]["statistic"] == "grey_mean"
    assert "grey_mean" in finding["statement"] and "0.930" in finding["statement"]
    board.loc[0, "auroc_pooled"] = 0.55
    quiet = shortcut_finding(board, frame)
    assert quiet is not None and not quiet["warning"]
    assert "No capture shortcut found" in quiet["statement"]
    assert shortcut_finding(board.assign(classifier="lr"), frame) is None
