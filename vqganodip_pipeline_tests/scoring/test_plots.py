from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from vqganodip_pipeline.scoring.classifiers import classifier_registry
from vqganodip_pipeline.scoring.model import fit_composite_model
from vqganodip_pipeline.scoring.plots import (
    metric_importances,
    plot_metric_importances,
    plot_roc,
    plot_score_distributions,
)
from vqganodip_pipeline.scoring.search import SearchConfig
from vqganodip_pipeline_tests.scoring.tables import make_metric_table

CONFIG = SearchConfig(n_iter=1, n_splits=3, n_jobs=1)


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(png), format="png")


def test_score_and_roc_plots_are_pngs() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    scores = np.clip(rng.normal(0.3 + 0.4 * y, 0.15), 0, 1)
    image = _image(plot_score_distributions(scores, y, threshold=float(scores[y == 1].min())))
    assert image.shape[0] > 100 and image.shape[1] > 200
    assert _image(plot_roc(scores, y, threshold=0.5)).shape[0] > 100
    assert _image(plot_score_distributions(np.full(4, 0.5), [0, 1, 0, 1])).size > 0


def test_metric_importances_per_classifier_family() -> None:
    table = make_metric_table(n_noise=6)
    forest = fit_composite_model(
        table, classifiers={"rf": classifier_registry(max_estimators=5)["rf"]}, config=CONFIG
    )
    importances = metric_importances(forest)
    # the mean over the 3 fold models, each normalised to sum 1
    assert importances.name == "mean of 3 (impurity)"
    assert len(importances) == len(forest.feature_names_kept)
    assert importances.sum() == pytest.approx(1.0)
    assert importances.iloc[0] >= importances.iloc[-1]
    linear = fit_composite_model(table, classifiers=["lda"], config=CONFIG)
    coef = metric_importances(linear)
    assert coef.name == "mean of 3 (|coef|)" and (coef >= 0).all()
    assert coef.index[0].startswith("patch__fid")  # an informative metric leads
    bayes = fit_composite_model(table, classifiers=["nb"], config=CONFIG)
    with pytest.raises(ValueError, match="permutation importance"):
        metric_importances(bayes)
    permutation = metric_importances(bayes, table, n_repeats=3)
    assert permutation.name == "mean of 3 (permutation)"
    assert permutation["pixel__noise0__sum__raw"] < permutation.iloc[0]
    image = _image(plot_metric_importances(permutation, top=10))
    assert image.shape[0] > 100


def test_shift_histogram_and_heatmap_figure_are_pngs() -> None:
    import io

    import numpy as np
    from PIL import Image

    from vqganodip_pipeline.scoring.plots import plot_shift_scores
    from vqganodip_pipeline.viz import heatmap_figure

    png = plot_shift_scores(np.array([0.1, 0.2, 0.9]), threshold=0.5)
    assert Image.open(io.BytesIO(png)).size[0] > 300
    with pytest.raises(ValueError):
        plot_shift_scores(np.array([]), threshold=0.5)
    mask = heatmap_figure(np.random.default_rng(0).random((16, 16)), title="W", label="weight")
    # scaled up far beyond the 16 px map, with room for the colour bar
    assert Image.open(io.BytesIO(mask)).size[0] > 300
