"""``vqganodip evaluate``: the method end to end on a labelled dataset, through the very Dagster
assets that production runs, and the report of the stored assets.

The dataset folder is registered as one labelled reference batch (its folder name is the
partition; the inbox is its parent folder) and three jobs run in process, on an ephemeral
instance or a persistent one (``dagster_home``): ``ingest_reference`` (manifest and
quarantine), ``train_model`` (split, VQGAN, weighting mask, metric table, composite score with
both protocols, and the release when every blocking check passed) and ``evaluate_model`` (the
report, also of a candidate that a check rejected). Asset storage lives under ``<out>/storage``;
``report.json``, ``report.html``, ``figures/`` and ``metrics.parquet`` in ``<out>`` are written
from the stored assets. So a figure from ``evaluate`` is a figure of the pipeline users run:
one set of defaults, one way to split, train, calibrate and report.

Every input error surfaces before any training: the path, the layout, unreadable data, the
presence of both classes, and enough abnormal images for the calibration and protocol folds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline import scoring, serialization
from vqganodip_pipeline.data.fs import filesystem, join_uri, s3_options
from vqganodip_pipeline.data.manifest import label_counts
from vqganodip_pipeline.data.sources import LAYOUTS
from vqganodip_pipeline.data.split import SplitConfig, SplitError, assign_roles, role_counts
from vqganodip_pipeline.localize.position import POSITIONS
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.workflow.report import check_targets

Log = Callable[[str], None]


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; raised before any training starts."""


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how (every field maps to one asset setting or config field).

    Attributes:
        dataset: dataset root (folder or ``s3://`` URI); its name becomes the batch.
        layout: one of ``data.sources.LAYOUTS`` or ``auto`` (BatchInbox.layout).
        preset: ``tiny``, ``demo`` or ``paper`` (PipelineSettings.preset).
        size: working resolution in px; None = the preset's (PipelineSettings.image_size).
            DeepPCB's defects are a few px wide: evaluate it at its native 640 px.
        downsampling: the VQGAN's factor f (px per code); None = the preset's
            (PipelineSettings.downsampling).
        engine: what runs the reconstructions: ``torch``, ``onnxruntime`` or ``openvino``
            (PipelineSettings.engine; model/engines.py).
        weights: optional local ImageNet MobileNetV2 weights (perceptual loss and features).
        backbone, backbone_weights, backbone_layers, device: PipelineSettings.backbone /
            backbone_weights_path / backbone_layers / device.
        position: "auto", "fixed" or "free" (WeightingMaskConfig.position): whether the
            weighting mask W and the per-pixel / per-position statistics apply; "auto"
            measures it on the m mask-calibration units (DeepPCB: free, every pair is another
            board region).
        steps, iterations, classifiers, seed: the preset's training steps and search
            iterations overridden, the classifier codes (None: the preset's), the seed of the
            pair split, the role split, the training and the search.
        end_to_end_images: holdout images scored one at a time to time a production image.
        max_groups: a seeded random subset of this many image groups (BatchImagesConfig).
        s3_endpoint: S3-compatible endpoint for an ``s3://`` dataset (MinIO, moto).
        dagster_home: a persistent Dagster instance to run in (the UI shows the runs after);
            None = an ephemeral one.
        targets: checked against the stored report (see workflow.report.check_targets).
    """

    dataset: str
    layout: str = "auto"
    preset: str = "demo"
    size: int | None = None
    downsampling: int | None = None
    engine: str = "torch"
    weights: str | None = None
    backbone: str = "auto"
    backbone_weights: str | None = None
    backbone_layers: str = ""
    device: str = "auto"
    position: str = "auto"
    steps: int = 0
    iterations: int = 0
    classifiers: tuple[str, ...] | None = None
    seed: int = 0
    end_to_end_images: int = 10
    max_groups: int | None = None
    s3_endpoint: str | None = None
    dagster_home: str | None = None
    targets: tuple[dict[str, Any], ...] = field(default=())

    @property
    def batch(self) -> str:
        return self.dataset.rstrip("/").rsplit("/", 1)[-1]

    @property
    def inbox(self) -> str:
        stripped = self.dataset.rstrip("/")
        parent = stripped.rsplit("/", 1)[0] if "/" in stripped else "."
        return parent if "://" in stripped else str(Path(stripped).resolve().parent)


def check_dataset_path(config: EvaluationConfig) -> None:
    """The checks that need no reading: a known layout, an existing path, a usable name."""
    if config.layout not in (*LAYOUTS, "auto"):
        raise DatasetError(
            f"unknown layout {config.layout!r}; expected one of {', '.join(LAYOUTS)} or auto"
        )
    fs, path = filesystem(config.dataset, s3_options(config.s3_endpoint))
    if not fs.exists(path):
        raise DatasetError(f"{config.dataset}: dataset path does not exist")
    if config.batch.startswith((".", "_")) or not config.batch:
        raise DatasetError(f"{config.dataset}: a dataset folder name may not start with . or _")
    if config.max_groups is not None and config.max_groups < 1:
        raise DatasetError(f"max_groups must be >= 1, got {config.max_groups}")
    if config.position not in POSITIONS:
        raise DatasetError(f"position must be one of {POSITIONS}, got {config.position!r}")
    from vqganodip_pipeline.model.engines import check_engine, import_runtime

    try:
        check_engine(config.engine)
        if config.engine != "torch":
            import_runtime(config.engine)
    except (ValueError, ImportError) as exc:
        raise DatasetError(f"--engine {config.engine}: {exc}") from exc
    from vqganodip_pipeline.defs.settings import PipelineSettings

    try:
        PipelineSettings(backbone_layers=config.backbone_layers).backbone_layer_indices()
    except ValueError as exc:
        raise DatasetError(f"--backbone-layers: {exc}") from exc
    if config.downsampling:
        settings = PipelineSettings(
            preset=config.preset, image_size=config.size or 0, downsampling=config.downsampling
        )
        try:
            settings.vqgan_configs()
        except ValueError as exc:
            raise DatasetError(f"--downsampling {config.downsampling}: {exc}") from exc


def check_manifest(config: EvaluationConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    """Both classes present, and a role split whose classifier set fills the shipped model's
    calibration part and every fold of the honest protocol; returns that split (the
    ``dataset_split`` asset recomputes the same one). Raises :class:`DatasetError`."""
    counts = label_counts(manifest)
    if counts["abnormal"] == 0:
        raise DatasetError(
            f"{config.dataset}: no abnormal images found ({counts['normal']} normal, "
            f"{counts['unknown']} unlabelled): the composite score and its ZFN threshold need "
            "abnormal examples"
        )
    if counts["normal"] == 0:
        raise DatasetError(f"{config.dataset}: no normal images found")
    preset = get_preset(config.preset)
    try:
        split = assign_roles(
            manifest,
            SplitConfig(m=preset.m, holdout_fraction=preset.holdout_fraction, seed=config.seed),
        )
    except SplitError as exc:
        raise DatasetError(f"{config.dataset}: {exc}") from exc
    classifier_set = split[split["role"] == "classifier_set"]
    y = scoring.labels_to_y(classifier_set)
    groups = scoring.table.group_ids(classifier_set.reset_index(drop=True))
    search = scoring.SearchConfig(n_splits=preset.search_folds, seed=config.seed)
    try:
        scoring.honest.check_protocol(
            y, groups, search, scoring.CalibrationConfig(), preset.outer_folds
        )
    except ValueError as exc:
        raise DatasetError(f"{config.dataset}: too few labelled images: {exc}") from exc
    return split


def _definitions(config: EvaluationConfig, out_dir: Path) -> Any:
    from vqganodip_pipeline.definitions import build_definitions
    from vqganodip_pipeline.defs.settings import PipelineSettings

    settings = PipelineSettings(
        preset=config.preset,
        image_size=config.size or 0,
        downsampling=config.downsampling or 0,
        engine=config.engine,
        device=config.device,
        weights_path=config.weights or "",
        backbone=config.backbone,
        backbone_weights_path=config.backbone_weights or "",
        backbone_layers=config.backbone_layers,
        work_dir=os.environ.get("VQGANODIP_WORK", str(out_dir / "work")),
    )
    return build_definitions(
        storage_base=str(out_dir / "storage"),
        inbox_root=config.inbox,
        s3_endpoint=config.s3_endpoint,
        settings=settings,
        inbox_layout=config.layout,
    )


def run_config(config: EvaluationConfig) -> dict[str, Any]:
    """The run config of the three jobs (one dict; each job reads its own assets' entries)."""
    return {
        "ops": {
            "reference_images": {
                "config": {"seed": config.seed, "max_groups": config.max_groups or 0}
            },
            "dataset_split": {"config": {"batches": [config.batch], "seed": config.seed}},
            "vqgan_checkpoint": {"config": {"steps": config.steps, "seed": config.seed}},
            "weighting_mask": {"config": {"position": config.position}},
            "composite_score_model": {
                "config": {
                    "iterations": config.iterations,
                    "classifiers": list(config.classifiers or ()),
                    "seed": config.seed,
                }
            },
            "evaluation_report": {"config": {"end_to_end_images": config.end_to_end_images}},
        },
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }


def _job_config(full: dict[str, Any], job: Any) -> dict[str, Any]:
    """The entries of ``full`` for the ops of ``job`` only (Dagster rejects the others)."""
    nodes = {node.name for node in job.graph.nodes}
    return {**full, "ops": {k: v for k, v in full["ops"].items() if k in nodes}}


def run_evaluation(
    config: EvaluationConfig, out_dir: str | Path, log: Log = print
) -> tuple[Path, Path, dict[str, Any]]:
    """Materialize the asset graph on ``config.dataset`` and write the stored report to
    ``out_dir`` (report.json, report.html, figures/, metrics.parquet)."""
    import dagster as dg

    from vqganodip_pipeline.defs.instance import (
        JobStepError,
        RunInterruptedError,
        execute_job,
        failed_checks_or_raise,
        prepare_instance_home,
        process_tags,
        reclaim_dead_runs,
    )
    from vqganodip_pipeline.defs.keys import key, name_of
    from vqganodip_pipeline.defs.partitions import reference_partitions
    from vqganodip_pipeline.reporting import write_report

    check_dataset_path(config)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    defs = _definitions(config, out_dir)
    if config.dagster_home:
        instance = dg.DagsterInstance.from_config(str(prepare_instance_home(config.dagster_home)))
    else:
        instance = dg.DagsterInstance.ephemeral()
    with instance:
        for run_id in reclaim_dead_runs(instance):
            log(f"[evaluate] run {run_id} was killed earlier: marked failed, its pool slots freed")
        if config.batch not in instance.get_dynamic_partitions(reference_partitions.name):
            instance.add_dynamic_partitions(reference_partitions.name, [config.batch])
        full = run_config(config)
        seconds: dict[str, float] = {}

        failed_checks: list[dict[str, str]] = []

        def finish(job_name: str, result: dg.ExecuteInProcessResult) -> None:
            try:
                failed = failed_checks_or_raise(job_name, result)
            except RunInterruptedError:
                raise
            except JobStepError as error:
                if job_name == "ingest_reference":
                    raise DatasetError(f"{config.dataset}: {error.message}") from error
                raise
            for check in failed:
                failed_checks.append(
                    {"check": check.name, "why": check.why, "severity": check.severity}
                )
                word = "WARNING" if check.severity == "WARN" else "FAILED"
                log(f"[evaluate] CHECK {word} {check.name}: {check.why}")

        def run(job_name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
            log(f"[evaluate] job {job_name} ...")
            job = defs.resolve_job_def(job_name)
            begin = time.perf_counter()
            result = execute_job(
                defs, job_name, instance, run_config=_job_config(full, job), **kwargs
            )
            seconds[job_name] = time.perf_counter() - begin
            finish(job_name, result)
            return result

        def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
            return {name_of(event.asset_key) for event in result.get_asset_materialization_events()}

        ingested = run("ingest_reference", partition_key=config.batch)
        manifest = ingested.output_for_node("reference_images", "reference_images")
        quarantine = ingested.output_for_node("reference_images", "reference_quarantine")
        split = check_manifest(config, manifest)
        log(
            f"[evaluate] {config.dataset}: {len(manifest)} images read "
            f"({len(quarantine)} quarantined); roles:\n{role_counts(split).to_string()}"
        )
        trained = run("train_model")
        done = materialized(trained)
        model_side = [
            name_of(asset_key)
            for asset_key in dg.AssetSelection.groups("model").resolve(defs.resolve_asset_graph())
            if name_of(asset_key) != "released_model"  # a rejected candidate is not released
        ]
        if set(model_side) - done:
            # A blocking check stopped the train_model chain. An evaluation still evaluates
            # the candidate, and its report names the failed check.
            log(
                "[evaluate] a blocking check stopped train_model: materializing the rest of the "
                "model side without checks to evaluate this candidate anyway"
            )
            remaining = sorted(set(model_side) - done)
            rest = dg.materialize(
                list(defs.assets or []),
                selection=dg.AssetSelection.assets(*map(key, remaining)).without_checks(),
                instance=instance,
                resources=defs.resources,
                run_config={
                    **full,
                    "ops": {k: v for k, v in full["ops"].items() if k in remaining},
                },
                tags=process_tags(),
                raise_on_error=False,
            )
            finish("train_model (unchecked)", rest)
            trained = rest
        metrics = trained.output_for_node("training_metrics", "training_metrics")
        evaluated = run("evaluate_model")
        report = evaluated.output_for_node("evaluation_report", "evaluation_report")
        figures = {
            name: np.asarray(array, dtype=np.uint8).tobytes()
            for name, array in evaluated.output_for_node(
                "evaluation_report", "evaluation_figures"
            ).items()
        }
    report = dict(report)
    report["dataset"] = config.dataset
    report["runs_seconds"] = {**seconds, "wall": time.perf_counter() - started}
    report["failed_checks"] = failed_checks
    if config.targets:
        report["targets"] = check_targets(report, config.targets)
    json_path, html_path = write_report(
        out_dir, report, figures, {"metrics.parquet": serialization.frame_to_parquet(metrics)}
    )
    honest, paper = report["protocols"]["honest"], report["protocols"]["paper"]
    fold_mean = (
        f", {report['auroc_fold_mean']:.3f} as the mean of each fold's own"
        if report.get("auroc_fold_mean") is not None
        else ""
    )
    log(
        f"[evaluate] honest ZFN accuracy {honest['zfn']['accuracy']:.2%} "
        f"(missed {honest['zfn']['missed']}), paper-protocol ZFN accuracy "
        f"{paper['zfn']['accuracy']:.2%}; AUROC {report['auroc']:.3f} pooled over the unseen "
        f"folds{fold_mean}; {report['shipped']['statement']}"
    )
    if report.get("shortcut") and report["shortcut"]["warning"]:
        log(f"[evaluate] WARNING: {report['shortcut']['statement']}")
    log(f"[evaluate] report: {html_path}; asset storage: {join_uri(str(out_dir), 'storage')}")
    return json_path, html_path, report
