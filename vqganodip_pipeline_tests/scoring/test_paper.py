from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.scoring.classifiers import classifier_registry
from vqganodip_pipeline.scoring.paper import run_paper_protocol
from vqganodip_pipeline.scoring.report import table1
from vqganodip_pipeline.scoring.search import SearchConfig, SearchProgress
from vqganodip_pipeline.scoring.thresholds import confusion_at_threshold
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


def test_all_twelve_classifiers_on_a_realistic_small_table() -> None:
    # ~60 rows, 40 metric columns (6 informative, MSE, constant, duplicate, near-duplicate, noise).
    table = make_metric_table(n_normal=30, n_abnormal=30, n_noise=30, seed=4)
    events: list[SearchProgress] = []
    result = run_paper_protocol(
        table,
        classifiers=classifier_registry(max_estimators=8),
        config=SearchConfig(n_iter=2, n_splits=5, n_jobs=1, seed=0),
        progress=events.append,
    )
    board = result.leaderboard
    assert len(board) == 12 and set(board["classifier"]) == set(classifier_registry())
    numeric = board.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    # ZFN by construction: the threshold is the lowest leave-one-out abnormal score.
    assert (board["fnr_zfn"] == 0).all() and (board["missed_zfn"] == 0).all()
    assert (board["tp_zfn"] == 30).all()
    # Sorted by ZFN accuracy, then STD accuracy.
    keys = list(
        zip(-board["accuracy_zfn"], -board["accuracy_std"], board["classifier"], strict=True)
    )
    assert keys == sorted(keys)
    assert result.best == board.loc[0, "classifier"]
    # Leaderboard values are the confusion metrics of the stored leave-one-out scores.
    for _, row in board.iterrows():
        scores = result.scores[row["classifier"]]
        assert row["threshold_zfn"] == scores[result.y == 1].min()
        std = confusion_at_threshold(scores, result.y, 0.5)
        assert row["accuracy_std"] == pytest.approx(std["accuracy"])
        assert row["fp_std"] == std["fp"]
    assert len(result.loo_splits) == 60
    assert [event.done for event in events] == list(range(1, 13))
    assert events[-1].total == 12 and all(e.elapsed_s >= 0 for e in events)
    view = table1(board)
    assert view.shape == (12, 8) and view.index[0] == board.loc[0, "name"]
    # The informative columns carry real signal: the best classifier beats chance clearly.
    assert board.loc[0, "accuracy_std"] > 0.7


def test_paper_protocol_with_groups_uses_leave_one_group_out() -> None:
    table = make_metric_table(n_normal=16, n_abnormal=12, n_noise=4, pair_groups=True)
    result = run_paper_protocol(
        table, classifiers=["nb", "lr"], config=SearchConfig(n_iter=2, n_splits=3, n_jobs=1)
    )
    groups = table["group_id"].to_numpy()
    assert len(result.loo_splits) == 16
    for splits in (result.cv_splits, result.loo_splits):
        for train, test in splits:
            assert set(groups[train]).isdisjoint(groups[test])
    assert (result.leaderboard["fnr_zfn"] == 0).all()
