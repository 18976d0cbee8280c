"""Composite anomaly score (METHOD.md step 3): from the metric table to a classifier's abnormal
probability with a zero-false-negative (ZFN) threshold.

- table: metric-table contract (metric columns, labels, groups, finiteness)
- preprocess: MetricPreprocessor (constant / correlated columns, min-max scaling)
- classifiers: the twelve candidates, search spaces, the preprocess -> SMOTE -> classifier pipeline
- thresholds: ZFN threshold (out-of-fold / in-sample), confusion metrics
- conformal: the split-conformal shipped threshold and its statement of risk
- paper: the paper's protocol (search, leave-one-out, in-sample ZFN threshold)
- honest: nested evaluation with baselines (the threshold never sees its test images)
- calibrate: the recipe of the shipped model and the honest protocol (fit and calibration parts)
- model: the shipped CompositeScoreModel, fit_composite_model, evaluate
- ensemble: MeanProbability, the mean of fitted models that the composite ships
- plots: score distributions, metric importances, ROC as PNG bytes
"""

from __future__ import annotations

from vqganodip_pipeline.scoring import baselines
from vqganodip_pipeline.scoring.baselines import (
    BestSingleMetric,
    CaptureShortcut,
    ColumnBaseline,
    auroc_columns,
    single_metric_auroc,
)
from vqganodip_pipeline.scoring.calibrate import CalibrationConfig
from vqganodip_pipeline.scoring.classifiers import (
    CLASSIFIERS,
    ClassifierSpec,
    build_pipeline,
    classifier_registry,
)
from vqganodip_pipeline.scoring.conformal import (
    RiskStatement,
    conformal_threshold,
    expected_miss_rate,
    holdout_p_value,
    miss_rate_upper_bound,
)
from vqganodip_pipeline.scoring.ensemble import MeanProbability
from vqganodip_pipeline.scoring.honest import HonestResult, run_honest_protocol
from vqganodip_pipeline.scoring.model import CompositeScoreModel, evaluate, fit_composite_model
from vqganodip_pipeline.scoring.paper import PaperResult, run_paper_protocol
from vqganodip_pipeline.scoring.plots import (
    metric_importances,
    plot_metric_importances,
    plot_roc,
    plot_score_distributions,
    plot_shift_scores,
)
from vqganodip_pipeline.scoring.preprocess import MetricPreprocessor
from vqganodip_pipeline.scoring.report import rank_leaderboard, table1
from vqganodip_pipeline.scoring.search import SearchConfig, SearchProgress
from vqganodip_pipeline.scoring.table import labels_to_y, metric_columns
from vqganodip_pipeline.scoring.thresholds import (
    auroc,
    confusion_at_threshold,
    zfn_threshold,
)

__all__ = [
    "CLASSIFIERS",
    "BestSingleMetric",
    "CalibrationConfig",
    "CaptureShortcut",
    "ClassifierSpec",
    "ColumnBaseline",
    "CompositeScoreModel",
    "HonestResult",
    "MeanProbability",
    "MetricPreprocessor",
    "PaperResult",
    "RiskStatement",
    "SearchConfig",
    "SearchProgress",
    "auroc",
    "auroc_columns",
    "baselines",
    "build_pipeline",
    "classifier_registry",
    "conformal_threshold",
    "confusion_at_threshold",
    "evaluate",
    "expected_miss_rate",
    "fit_composite_model",
    "holdout_p_value",
    "labels_to_y",
    "metric_columns",
    "metric_importances",
    "miss_rate_upper_bound",
    "plot_metric_importances",
    "plot_roc",
    "plot_score_distributions",
    "plot_shift_scores",
    "rank_leaderboard",
    "run_honest_protocol",
    "run_paper_protocol",
    "single_metric_auroc",
    "table1",
    "zfn_threshold",
]
