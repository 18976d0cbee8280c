"""The composite anomaly score: the shipped model with its leaderboards and checks, and the
scores of every production batch."""

import posixpath

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from vqganodip_pipeline import scoring, serialization
from vqganodip_pipeline.defs.automation import CHECK_AUTOMATION
from vqganodip_pipeline.defs.metadata import (
    frame_table,
    image_markdown,
    png_markdown,
    table_metadata,
)
from vqganodip_pipeline.defs.metric_assets import normal_of
from vqganodip_pipeline.defs.model_assets import model_bundle
from vqganodip_pipeline.defs.partitions import shift_partitions
from vqganodip_pipeline.defs.policies import COMPUTE_RETRY, TORCH_POOL, stops_on_interrupt
from vqganodip_pipeline.defs.release import Release, record_rejection
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.storage import StorageLocation
from vqganodip_pipeline.hashing import hash_arrays, hash_frame, hash_strings, sha256_hex
from vqganodip_pipeline.reporting import render_html, validate_report
from vqganodip_pipeline.scoring import SearchConfig
from vqganodip_pipeline.workflow.report import (
    build_report,
    production_latency,
    report_figures,
    worst_image_rows,
    worst_images_figure,
)
from vqganodip_pipeline.workflow.roles import TRAINING_ROLES, role_rows
from vqganodip_pipeline.workflow.scoring import (
    bytes_to_bundle,
    labelled_evaluation,
    score_batch,
    score_metric_table,
)

TOP_PATCHES = 3
FLAGGED_SHOWN = 12  # units drawn with their patches in batch_scores' metadata
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
    "auroc_fold_mean",
)


def search_config(
    settings: PipelineSettings, iterations: int, seed: int, combine: str = "mean"
) -> SearchConfig:
    return settings.get_preset().search_config(seed, n_iter=iterations or None, combine=combine)


def leaderboard_table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    shown = [c for c in LEADERBOARD_COLUMNS if c in frame.columns]
    extra = [c for c in ("kind",) if c in frame.columns]
    return frame_table(frame[shown[:1] + extra + shown[1:]])


class CompositeScoreConfig(dg.Config):
    """Budget and protocols of the composite score."""

    iterations: int = Field(
        default=0, description="randomized-search candidates per classifier; 0 = the preset's"
    )
    classifiers: list[str] = Field(
        default_factory=list, description="classifier codes; empty = the preset's"
    )
    combine: str = Field(
        default="mean",
        description="the composite: 'mean' = the mean probability of every classifier's "
        "fold models (the models of its out-of-fold pass); 'best' = the paper's one classifier "
        "with the best out-of-fold ZFN accuracy",
    )
    margin: float = Field(
        default=0.0, description="subtracted from the ZFN threshold (probability units)"
    )
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
        "the highest threshold whose confidence bound still certifies that miss rate (either "
        "then lowered by threshold_rule 'gap')",
    )
    threshold_rule: str = Field(
        default=scoring.conformal.DEFAULT_RULE,
        description="'gap' = the lowest abnormal calibration score, lowered to just above the "
        "highest normal calibration score when that is lower (never a higher threshold, so "
        "never more misses; more false alarms where a new normal unit scores above every "
        "normal calibration unit); 'lowest_abnormal' = the paper's rule, the abnormal scores "
        "alone",
    )
    paper_protocol: bool = Field(
        default=True, description="also run the paper's in-sample protocol (Table 1)"
    )
    honest_protocol: bool = Field(
        default=True, description="nested evaluation on unseen folds, with the baselines"
    )
    seed: int = Field(default=0, description="seeds the search, the folds and the split")


@dg.asset(
    io_manager_key="model_io_manager",
    group_name="model",
    pool=TORCH_POOL,
    retry_policy=COMPUTE_RETRY,
)
@stops_on_interrupt
def composite_score_model(
    context: dg.AssetExecutionContext,
    config: CompositeScoreConfig,
    training_metrics: pd.DataFrame,
    dataset_split: pd.DataFrame,
    settings: PipelineSettings,
) -> dg.Output[dict]:
    """The shipped composite score: the classifiers searched on a fit part of the
    ``classifier_set`` rows and combined (``combine``), its split-conformal ZFN threshold on the
    rest with its statement of risk, the paper's and the honest leaderboards, and its result on
    the ``holdout`` rows."""
    preset = settings.get_preset()

    def progress(event) -> None:
        context.log.info(str(event))

    try:
        outcome = score_metric_table(
            training_metrics,
            classifiers=tuple(config.classifiers) or preset.classifiers,
            search=search_config(settings, config.iterations, config.seed, config.combine),
            outer_folds=preset.outer_folds,
            calibration=scoring.CalibrationConfig(
                fraction=config.calibration_fraction,
                confidence=config.confidence,
                target_miss_rate=config.target_miss_rate or None,
                rule=config.threshold_rule,
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
        "combine": config.combine,
        "max_features": preset.max_features or "all",
        "threshold": float(model.threshold),
        "threshold_rule": model.risk.rule,
        "threshold_lowered_to_normals": bool(model.risk.lowered_to_normals),
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
        "selection": leaderboard_table(model.selection),
        "params": dg.MetadataValue.json(model.params),
        "versions": dg.MetadataValue.json(model.versions),
    }
    if outcome.honest_leaderboard is not None:
        honest = outcome.honest_leaderboard
        metadata["honest_leaderboard"] = leaderboard_table(honest)
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
        metadata["paper_table1"] = frame_table(
            scoring.table1(outcome.paper_leaderboard), index=True
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
    bundle = {"model": model, "outcome": outcome, "trained_on": trained_on}
    return dg.Output(
        bundle, data_version=dg.DataVersion(model_content_version(model)), metadata=metadata
    )


def model_content_version(model: scoring.CompositeScoreModel) -> str:
    """A data version from what the model computes: the fitted pipeline, its threshold and its
    inputs (16 hex characters). Not its fit time: an identical refit keeps the version."""
    return hash_strings(
        [
            model.classifier,
            repr(sorted(model.params.items())),
            repr(float(model.threshold)),
            *model.feature_names_in,
            "|",
            sha256_hex(serialization.object_fingerprint(model.pipeline)),
        ]
    )[:16]


RISK_TEST_LEVEL = 0.05  # a holdout this unlikely under the stated bound blocks the release


@dg.asset_check(
    automation_condition=CHECK_AUTOMATION,
    asset=composite_score_model,
    blocking=True,
    description="The holdout agrees with the shipped threshold's statement of risk: the misses "
    "among the unseen abnormal holdout images are not significantly more (one-sided binomial "
    "test at the 5 % level) than the stated miss-rate upper bound allows.",
)
def holdout_within_stated_risk(
    context: dg.AssetCheckExecutionContext, composite_score_model: dict
) -> dg.AssetCheckResult:
    name = "composite_score_model:holdout_within_stated_risk"
    model = composite_score_model["model"]
    result = composite_score_model["outcome"].holdout
    if result is None or int(result["n_abnormal"]) == 0:
        why = "no labelled abnormal holdout images to test the stated risk on"
        record_rejection(context, name, why)
        return dg.AssetCheckResult(passed=False, description=why)
    missed, n = len(result["missed_image_ids"]), int(result["n_abnormal"])
    bound = float(model.risk.miss_rate_upper_bound)
    p_value = scoring.holdout_p_value(missed, n, bound)
    passed = p_value >= RISK_TEST_LEVEL
    why = (
        f"{missed} of {n} abnormal holdout images missed: p = {p_value:.3g} under the stated "
        f"{bound:.1%} miss-rate bound ({model.risk.confidence:.0%} confidence), below "
        f"{RISK_TEST_LEVEL}: the threshold does not keep its statement"
    )
    if not passed:
        record_rejection(context, name, why)
    return dg.AssetCheckResult(
        passed=passed,
        description=None if passed else why,
        metadata={
            "abnormal_holdout_images": n,
            "missed": missed,
            "stated_miss_rate_bound": bound,
            "p_value": p_value,
            "holdout_fpr_zfn": float(result["fpr_zfn"]),
        },
    )


@dg.asset_check(
    automation_condition=CHECK_AUTOMATION,
    asset=composite_score_model,
    description="Warning only: the shipped threshold keeps every abnormal holdout image. A "
    "finite calibration set cannot promise that (see the statement of risk); a miss here is "
    "shown, and blocks only when it contradicts the stated risk (holdout_within_stated_risk).",
)
def zfn_holds_on_holdout(composite_score_model: dict) -> dg.AssetCheckResult:
    result = composite_score_model["outcome"].holdout
    if result is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no labelled holdout images to check the threshold on",
        )
    missed = list(result["missed_image_ids"])
    return dg.AssetCheckResult(
        passed=not missed,
        severity=dg.AssetCheckSeverity.WARN,
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
    partitions_def=shift_partitions,
    group_name="production",
)
def batch_scores(
    context: dg.AssetExecutionContext,
    batch_images: pd.DataFrame,
    batch_metrics: pd.DataFrame,
    batch_patches: pd.DataFrame,
    released_model: dict,
    storage: StorageLocation,
    settings: PipelineSettings,
    inbox: BatchInbox,
) -> dg.Output[pd.DataFrame]:
    """Composite score and decision of every image of the shift (``to_operator`` when the
    score reaches the released ZFN threshold), its most anomalous patches, and the lineage of
    the decision: the release and the digest of each of its artefacts."""
    release = Release(released_model, storage)
    bundle = bytes_to_bundle(release.stored_bytes("composite_score_model"))
    result = score_batch(
        bundle["model"],
        batch_metrics,
        batch_patches,
        bundle.get("trained_on", ()),  # absent in models stored before it
        top=TOP_PATCHES,
    ).assign(batch=context.partition_key, **release.lineage())
    decisions = result["decision"].eq("to_operator").to_numpy()
    ranked = result.assign(file=result["uri"].map(lambda u: posixpath.basename(str(u))))
    ranked = ranked.sort_values("score", ascending=False)
    model = bundle["model"]
    metadata = {
        **table_metadata(result),
        "release_id": release.release_id,
        "threshold": float(model.threshold),
        "to_operator": int(decisions.sum()),
        "passed": int((~decisions).sum()),
        "scores": frame_table(
            ranked[["file", "decision", "score", "label", "image_id"]], max_rows=30
        ),
        "score_histogram": png_markdown(
            scoring.plot_shift_scores(
                result["score"], model.threshold, f"shift {context.partition_key}"
            ),
            "scores of the shift with the threshold",
        ),
    }
    flagged = ranked[ranked["decision"] == "to_operator"].head(FLAGGED_SHOWN)
    sheet = worst_images_figure(
        flagged,
        batch_patches,
        batch_images,
        settings.get_preset().image_size,
        inbox.storage_options(),
        captions=[
            f"{f[:18]} {v:.3f}" for f, v in zip(flagged["file"], flagged["score"], strict=True)
        ],
        patches_per_image=TOP_PATCHES,
    )
    if sheet is not None:
        metadata["flagged_units"] = image_markdown(
            sheet, f"the {len(flagged)} highest-scoring units sent to the operator"
        )
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
            description="The evaluation report (paper and honest protocols, the shipped "
            "threshold's statement of risk, baselines with the shortcut check, holdout, "
            "localisation, timings) as JSON, shaped like the paper's Table 1.",
        ),
        "evaluation_report_html": dg.AssetOut(
            io_manager_key="html_io_manager",
            description="The same report as one self-contained HTML page with its figures.",
        ),
        "evaluation_figures": dg.AssetOut(
            io_manager_key="array_io_manager",
            description="The report's figures as PNG bytes (one uint8 array per figure).",
        ),
    },
    group_name="evaluation",
    # quarantine tables of the batches the split read (missing ones are counted as none)
    ins={"reference_quarantine": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    pool=TORCH_POOL,
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationReportConfig,
    dataset_split: pd.DataFrame,
    reference_quarantine: dict[str, pd.DataFrame],
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
        settings.inference_model(checkpoint.model),
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
        n_quarantined=sum(
            len(reference_quarantine[b]) for b in batches if b in reference_quarantine
        ),
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
        **(
            {"auroc_fold_mean": float(report["auroc_fold_mean"])}
            if report.get("auroc_fold_mean") is not None
            else {}
        ),
        "shipped_miss_rate_upper_bound": float(report["shipped"]["miss_rate_upper_bound"]),
        **(
            {"shortcut_auroc": float(report["shortcut"]["auroc"])} if report.get("shortcut") else {}
        ),
        "end_to_end_s_per_image": float(report["seconds_per_image"]["end_to_end"]),
    }
    arrays = {name: np.frombuffer(data, dtype=np.uint8) for name, data in figures.items()}
    yield dg.Output(
        report,
        output_name="evaluation_report",
        data_version=dg.DataVersion(sha256_hex(serialization.dict_to_json(report))[:16]),
        metadata=summary,
    )
    yield dg.Output(
        page,
        output_name="evaluation_report_html",
        data_version=dg.DataVersion(sha256_hex(page.encode("utf-8"))[:16]),
        metadata=summary,
    )
    yield dg.Output(
        arrays,
        output_name="evaluation_figures",
        data_version=dg.DataVersion(hash_arrays(arrays)[:16]),
        metadata={"figures": dg.MetadataValue.json(sorted(figures))},
    )
