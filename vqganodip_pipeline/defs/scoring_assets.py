"""The composite anomaly score: the shipped model with its leaderboards and checks, and the
scores of every production batch."""

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from vqganodip_pipeline import scoring
from vqganodip_pipeline.defs.metadata import frame_markdown, png_markdown, table_metadata
from vqganodip_pipeline.defs.metric_assets import normal_of
from vqganodip_pipeline.defs.model_assets import model_bundle
from vqganodip_pipeline.defs.partitions import batch_partitions
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.hashing import hash_frame
from vqganodip_pipeline.reporting import render_html, validate_report
from vqganodip_pipeline.scoring import SearchConfig
from vqganodip_pipeline.scoring import calibrate as calibrate_module
from vqganodip_pipeline.scoring import conformal as conformal_module
from vqganodip_pipeline.scoring import honest as honest_module
from vqganodip_pipeline.scoring import model as model_module
from vqganodip_pipeline.scoring import paper as paper_module
from vqganodip_pipeline.versioning import code_version
from vqganodip_pipeline.workflow import report as report_module
from vqganodip_pipeline.workflow import scoring as workflow_scoring_module
from vqganodip_pipeline.workflow.report import (
    build_report,
    production_latency,
    report_figures,
    worst_image_rows,
    worst_images_figure,
)
from vqganodip_pipeline.workflow.roles import TRAINING_ROLES, role_rows
from vqganodip_pipeline.workflow.scoring import (
    labelled_evaluation,
    score_batch,
    score_metric_table,
)

SCORING_VERSION = code_version(
    model_module,
    calibrate_module,
    conformal_module,
    honest_module,
    paper_module,
    workflow_scoring_module,
)
REPORT_VERSION = code_version(report_module)
TOP_PATCHES = 3
LEADERBOARD_COLUMNS = (
    "classifier",
    "accuracy_std",
    "accuracy_zfn",
    "precision_zfn",
    "fpr_zfn",
    "fnr_zfn",
    "missed_zfn",
    "auroc",
    "auroc_pooled",
)


def search_config(settings: PipelineSettings, iterations: int, seed: int) -> SearchConfig:
    preset = settings.get_preset()
    return SearchConfig(
        n_iter=iterations or preset.search_iterations,
        n_splits=preset.search_folds,
        seed=seed,
        n_jobs=-1,
        max_features=preset.max_features,
    )


def leaderboard_markdown(frame: pd.DataFrame) -> dg.MarkdownMetadataValue:
    shown = [c for c in LEADERBOARD_COLUMNS if c in frame.columns]
    extra = [c for c in ("kind",) if c in frame.columns]
    return dg.MetadataValue.md(frame_markdown(frame[shown[:1] + extra + shown[1:]]))


class CompositeScoreConfig(dg.Config):
    """Budget and protocols of the composite score."""

    iterations: int = 0  # randomized-search candidates per classifier; 0 = the preset's
    classifiers: list[str] = Field(
        default_factory=list, description="classifier codes; empty = the preset's"
    )
    margin: float = 0.0  # subtracted from the ZFN threshold (probability units)
    calibration_fraction: float = Field(
        default=1.0 / 3.0,
        description="share of the classifier set held out to calibrate the shipped threshold "
        "(split-conformal; the model, its search and its choice never see it)",
    )
    confidence: float = Field(
        default=0.95, description="confidence of the miss-rate upper bound (Clopper-Pearson)"
    )
    target_miss_rate: float = Field(
        default=0.0,
        description="0 = threshold at the lowest calibration defect score; a rate in (0, 1) = "
        "the highest threshold whose confidence bound still certifies that miss rate",
    )
    paper_protocol: bool = True  # also run the paper's in-sample protocol (Table 1)
    honest_protocol: bool = True  # nested evaluation with baselines
    seed: int = 0


@dg.asset(
    io_manager_key="pickle_io_manager",
    code_version=SCORING_VERSION,
    group_name="model",
)
def composite_score_model(
    context: dg.AssetExecutionContext,
    config: CompositeScoreConfig,
    training_metrics: pd.DataFrame,
    dataset_split: pd.DataFrame,
    settings: PipelineSettings,
) -> dg.Output[dict]:
    """The shipped composite score: the best classifier on a fit part of the ``classifier_set``
    rows, its split-conformal ZFN threshold on the rest with its statement of risk, the paper's
    and the honest leaderboards, and its result on the ``holdout`` rows."""
    preset = settings.get_preset()

    def progress(event) -> None:
        context.log.info(str(event))

    try:
        outcome = score_metric_table(
            training_metrics,
            classifiers=tuple(config.classifiers) or preset.classifiers,
            search=search_config(settings, config.iterations, config.seed),
            outer_folds=preset.outer_folds,
            calibration=scoring.CalibrationConfig(
                fraction=config.calibration_fraction,
                confidence=config.confidence,
                target_miss_rate=config.target_miss_rate or None,
            ),
            margin=config.margin,
            paper_protocol=config.paper_protocol,
            honest_protocol=config.honest_protocol,
            log=context.log.info,
            progress=progress,
        )
    except ValueError as exc:
        raise dg.Failure(f"cannot fit the composite score: {exc}") from exc
    model = outcome.shipped
    metadata: dict = {
        "classifier": model.classifier_name,
        "max_features": preset.max_features or "all",
        "threshold": float(model.threshold),
        "risk": dg.MetadataValue.md(model.risk.sentence()),
        "n_abnormal_calibration": model.n_abnormal_calibration,
        "n_normal_calibration": model.n_normal_calibration,
        "n_fit": len(model.fit_image_ids),
        "miss_rate_upper_bound": float(model.risk.miss_rate_upper_bound),
        "miss_rate_confidence": float(model.risk.confidence),
        "expected_miss_rate": float(model.risk.expected_miss_rate),
        "calibration_fpr": float(model.calibration["fpr_zfn"]),
        "metrics_in": len(model.feature_names_in),
        "metrics_kept": len(model.feature_names_kept),
        "selection": leaderboard_markdown(model.selection),
        "params": dg.MetadataValue.json(model.params),
        "versions": dg.MetadataValue.json(model.versions),
    }
    if outcome.honest_leaderboard is not None:
        honest = outcome.honest_leaderboard
        metadata["honest_leaderboard"] = leaderboard_markdown(honest)
        composite = honest[honest["classifier"] == "composite"]
        if len(composite):
            metadata["honest_zfn_accuracy"] = float(composite.iloc[0]["accuracy_zfn"])
            metadata["honest_missed"] = int(composite.iloc[0]["missed_zfn"])
    if outcome.shortcut is not None:
        metadata["shortcut_auroc"] = float(outcome.shortcut["auroc"])
        metadata["shortcut_warning"] = bool(outcome.shortcut["warning"])
        metadata["shortcut_check"] = dg.MetadataValue.md(outcome.shortcut["statement"])
        if outcome.shortcut["warning"]:
            context.log.warning(outcome.shortcut["statement"])
    if outcome.paper_leaderboard is not None:
        metadata["paper_table1"] = dg.MetadataValue.md(
            frame_markdown(scoring.table1(outcome.paper_leaderboard), index=True)
        )
    calibration = model.calibration_scores
    metadata["score_distribution_calibration"] = png_markdown(
        scoring.plot_score_distributions(
            calibration["score"], calibration["y"], model.threshold, "unseen calibration scores"
        )
    )
    holdout = training_metrics[training_metrics["role"] == "holdout"]
    if outcome.holdout is not None:
        y = scoring.labels_to_y(holdout)
        scores = model.score(holdout)
        metadata.update(
            {
                "holdout_accuracy_zfn": float(outcome.holdout["accuracy_zfn"]),
                "holdout_fpr_zfn": float(outcome.holdout["fpr_zfn"]),
                "holdout_missed": int(outcome.holdout["missed_zfn"]),
                "score_distribution_holdout": png_markdown(
                    scoring.plot_score_distributions(scores, y, model.threshold, "holdout")
                ),
                "roc_holdout": png_markdown(scoring.plot_roc(scores, y, model.threshold)),
            }
        )
    importances = scoring.metric_importances(
        model, training_metrics[training_metrics["role"] == "classifier_set"]
    )
    metadata["top_metrics"] = png_markdown(scoring.plot_metric_importances(importances))
    trained_on = sorted(role_rows(dataset_split, *TRAINING_ROLES)["image_id"].astype(str))
    return dg.Output(
        {"model": model, "outcome": outcome, "trained_on": trained_on}, metadata=metadata
    )


@dg.asset_check(
    asset=composite_score_model,
    blocking=True,
    description="The shipped threshold keeps every abnormal holdout image (recall = 1).",
)
def zfn_holds_on_holdout(composite_score_model: dict) -> dg.AssetCheckResult:
    result = composite_score_model["outcome"].holdout
    if result is None:
        return dg.AssetCheckResult(
            passed=False, description="no labelled holdout images to check the threshold on"
        )
    missed = list(result["missed_image_ids"])
    return dg.AssetCheckResult(
        passed=not missed,
        description=f"{len(missed)} abnormal holdout image(s) scored below the threshold: "
        f"{', '.join(missed[:10])}"
        if missed
        else None,
        metadata={
            "abnormal_holdout_images": int(result["n_abnormal"]),
            "missed": len(missed),
            "holdout_fpr_zfn": float(result["fpr_zfn"]),
        },
    )


@dg.asset(
    io_manager_key="parquet_io_manager",
    code_version=SCORING_VERSION,
    partitions_def=batch_partitions,
    group_name="production",
)
def batch_scores(
    context: dg.AssetExecutionContext,
    batch_metrics: pd.DataFrame,
    batch_patches: pd.DataFrame,
    composite_score_model: dict,
) -> dg.Output[pd.DataFrame]:
    """Composite score and decision of every image of the batch (``to_operator`` when the
    score reaches the ZFN threshold), with its most anomalous patches."""
    result = score_batch(
        composite_score_model["model"],
        batch_metrics,
        batch_patches,
        composite_score_model.get("trained_on", ()),  # absent in models stored before it
        top=TOP_PATCHES,
    )
    decisions = result["decision"].eq("to_operator").to_numpy()
    metadata = {
        **table_metadata(result),
        "to_operator": int(decisions.sum()),
        "passed": int((~decisions).sum()),
        "scores": dg.MetadataValue.md(
            frame_markdown(
                result.sort_values("score", ascending=False)[
                    ["image_id", "label", "score", "decision"]
                ],
                max_rows=20,
            )
        ),
    }
    metadata["labelled_seen_in_training"] = int(
        (result["label"].isin(["normal", "abnormal"]) & result["seen_in_training"]).sum()
    )
    evaluation = labelled_evaluation(result)
    if evaluation is not None:
        metadata["labelled_evaluation"] = dg.MetadataValue.json(evaluation)
        if evaluation["missed"]:
            context.log.warning(f"{evaluation['missed']} unseen labelled abnormal image(s) passed")
    return dg.Output(
        result, data_version=dg.DataVersion(hash_frame(result)[:16]), metadata=metadata
    )


class EvaluationReportConfig(dg.Config):
    end_to_end_images: int = Field(
        default=10, description="holdout images scored one at a time to time production"
    )


@dg.multi_asset(
    outs={
        "evaluation_report": dg.AssetOut(
            io_manager_key="json_io_manager",
            code_version=REPORT_VERSION,
            description="The evaluation report (paper and honest protocols, the shipped "
            "threshold's statement of risk, baselines with the shortcut check, holdout, "
            "localisation, timings) as JSON, shaped like the paper's Table 1.",
        ),
        "evaluation_report_html": dg.AssetOut(
            io_manager_key="html_io_manager",
            code_version=REPORT_VERSION,
            description="The same report as one self-contained HTML page with its figures.",
        ),
        "evaluation_figures": dg.AssetOut(
            io_manager_key="array_io_manager",
            code_version=REPORT_VERSION,
            description="The report's figures as PNG bytes (one uint8 array per figure).",
        ),
    },
    group_name="evaluation",
    # quarantine tables of the batches the split read (missing ones are counted as none)
    ins={"batch_quarantine": dg.AssetIn(metadata={"allow_missing_partitions": True})},
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationReportConfig,
    dataset_split: pd.DataFrame,
    batch_quarantine: dict[str, pd.DataFrame],
    training_metrics: pd.DataFrame,
    training_patches: pd.DataFrame,
    vqgan_checkpoint: dict,
    weighting_mask: dict,
    composite_score_model: dict,
    settings: PipelineSettings,
    inbox: BatchInbox,
):
    """The report of ``vqganodip evaluate``, built from the model-side assets."""
    preset = settings.get_preset()
    options = inbox.storage_options()
    outcome = composite_score_model["outcome"]
    if outcome.paper_leaderboard is None or outcome.honest_leaderboard is None:
        raise dg.Failure("the report needs composite_score_model with both protocols")
    checkpoint, choice = model_bundle(vqgan_checkpoint, settings)
    normal = normal_of(weighting_mask)
    golden = weighting_mask.get("golden")
    context.log.info(f"timing {config.end_to_end_images} holdout images one at a time")
    latency = production_latency(
        checkpoint.model,
        checkpoint.discriminator,
        choice.backbone,
        normal,
        golden,
        settings.localize_config(),
        outcome.shipped,
        role_rows(dataset_split, "holdout").head(config.end_to_end_images),
        preset.image_size,
        options,
    )
    batches = sorted(dataset_split["batch"].unique())
    layouts = sorted({str(v) for v in dataset_split.get("layout", pd.Series(dtype=str)).dropna()})
    report = build_report(
        dataset=", ".join(batches),
        layout=", ".join(layouts) or "batches",
        preset=preset.name,
        size=preset.image_size,
        labels=dataset_split["label"],
        n_quarantined=sum(len(batch_quarantine[b]) for b in batches if b in batch_quarantine),
        split=dataset_split,
        metrics=training_metrics,
        outcome=outcome,
        outer_folds=preset.outer_folds,
        seconds_per_image=latency or {"end_to_end": float("nan")},
        seconds_total={key: float(v) for key, v in outcome.seconds.items()},
        extra={
            "backbone": choice.note,
            "weighting_mask": normal.weights is not None,
            "max_features": preset.max_features,
        },
    )
    # the images that decide the threshold and its false alarms, with their stored patches
    rows = role_rows(dataset_split, "classifier_set", "holdout")
    chosen = worst_image_rows(training_metrics, outcome.shipped.score(training_metrics))
    worst = worst_images_figure(chosen, training_patches, rows, preset.image_size, options)
    figures = report_figures(report, training_metrics, outcome, worst)
    validate_report(report)
    page = render_html(report, figures)
    honest = report["protocols"]["honest"]["zfn"]
    summary = {
        "honest_zfn_accuracy": float(honest["accuracy"]),
        "honest_missed": int(honest["missed"]),
        "paper_zfn_accuracy": float(report["protocols"]["paper"]["zfn"]["accuracy"]),
        "auroc": float(report["auroc"]),
        "shipped_miss_rate_upper_bound": float(report["shipped"]["miss_rate_upper_bound"]),
        **(
            {"shortcut_auroc": float(report["shortcut"]["auroc"])} if report.get("shortcut") else {}
        ),
        "end_to_end_s_per_image": float(report["seconds_per_image"]["end_to_end"]),
    }
    yield dg.Output(report, output_name="evaluation_report", metadata=summary)
    yield dg.Output(page, output_name="evaluation_report_html", metadata=summary)
    yield dg.Output(
        {name: np.frombuffer(data, dtype=np.uint8) for name, data in figures.items()},
        output_name="evaluation_figures",
        metadata={"figures": dg.MetadataValue.json(sorted(figures))},
    )
