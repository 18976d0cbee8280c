"""``vqganodip evaluate``: the method end to end on a labelled dataset (train, mask, metrics,
scoring) and a report shaped like the paper's tables.

Every step calls the same workflow functions as the Dagster assets (pipeline.py, workflow/,
scoring/). Inputs are checked before any training starts: the dataset path, the layout, and the
presence of abnormal images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline import scoring
from vqganodip_pipeline.data.fs import filesystem
from vqganodip_pipeline.data.loading import iter_image_batches, load_images
from vqganodip_pipeline.data.manifest import build_manifest, label_counts
from vqganodip_pipeline.data.sources import LAYOUTS, DatasetLayoutError, SourceEntry, scan_source
from vqganodip_pipeline.data.split import SplitConfig, assign_roles, role_counts
from vqganodip_pipeline.hashing import hash_strings
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.train import train_vqgan
from vqganodip_pipeline.pipeline import (
    build_backbone,
    compute_metric_table,
    compute_normal_variation,
)
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.workflow.report import (
    build_report,
    end_to_end_seconds,
    report_figures,
    worst_images_figure,
)
from vqganodip_pipeline.workflow.roles import golden_sample, ground_truth_masks, role_rows
from vqganodip_pipeline.workflow.scoring import score_metric_table

Log = Callable[[str], None]


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; raised before any training starts."""


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how.

    Attributes:
        dataset: dataset root (folder or ``s3://`` URI).
        layout: ``mvtec``, ``deeppcb``, ``folders`` or ``auto``.
        preset: ``tiny``, ``demo`` or ``paper``.
        size: working resolution in px; None = the preset's, except DeepPCB which keeps its
            native 640 px (its defects are a few px wide and vanish when shrunk).
        weights: optional local ImageNet MobileNetV2 weights (perceptual loss and features).
        backbone: patch/feature backbone: ``auto`` (MobileNetV2 with ``weights``, else the
            VQGAN discriminator), ``mobilenet_v2``, ``vgg16``, ``inception_v3``,
            ``vqgan_discriminator`` or ``vqgan_encoder``.
        backbone_weights: the ImageNet weights file of ``vgg16`` / ``inception_v3``
            (None = ``weights``).
        use_mask: normal-variation statistics (the weighting mask W and the standardized
            variant) on/off; None = on, except DeepPCB (every image is another board region,
            so there is no fixed position to learn variation at).
        steps, iterations: overrides of the preset's training steps and search iterations.
        classifiers: classifier codes (None: the preset's).
        seed: seeds the split, the training and the search.
        end_to_end_images: holdout images scored one at a time to time a production image.
        max_groups: evaluate a seeded random subset of this many image groups (a DeepPCB
            pair is one group, every other image its own), e.g. to bound a benchmark's time;
            None = all.
    """

    dataset: str
    layout: str = "auto"
    preset: str = "demo"
    size: int | None = None
    weights: str | None = None
    backbone: str = "auto"
    backbone_weights: str | None = None
    device: str = "auto"
    use_mask: bool | None = None
    steps: int = 0
    iterations: int = 0
    classifiers: tuple[str, ...] | None = None
    seed: int = 0
    end_to_end_images: int = 10
    max_groups: int | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[dict[str, Any], ...] = ()


@dataclass
class Prepared:
    layout: str
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    split: pd.DataFrame
    size: int


def prepare(config: EvaluationConfig) -> Prepared:
    """Read and split the dataset; every input error surfaces here, before training."""
    if config.layout not in (*LAYOUTS, "auto"):
        raise DatasetError(
            f"unknown layout {config.layout!r}; expected one of {', '.join(LAYOUTS)} or auto"
        )
    fs, path = filesystem(config.dataset, config.storage_options)
    if not fs.exists(path):
        raise DatasetError(f"{config.dataset}: dataset path does not exist")
    try:
        layout, entries = scan_source(
            config.dataset, config.layout, config.storage_options, seed=config.seed
        )
    except DatasetLayoutError as exc:
        raise DatasetError(str(exc)) from exc
    if config.max_groups is not None:
        entries = sample_groups(entries, config.max_groups, config.seed)
    manifest, quarantine = build_manifest(
        entries, Path(config.dataset.rstrip("/")).name, storage_options=config.storage_options
    )
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
    split = assign_roles(
        manifest,
        SplitConfig(m=preset.m, holdout_fraction=preset.holdout_fraction, seed=config.seed),
    )
    size = config.size or (
        int(manifest["width"].iloc[0]) if layout == "deeppcb" else preset.image_size
    )
    return Prepared(layout, manifest, quarantine, split, size)


def sample_groups(entries: list[SourceEntry], max_groups: int, seed: int) -> list[SourceEntry]:
    """A seeded random subset of ``max_groups`` whole groups of ``entries`` (an entry without a
    group is its own group), in the original order."""
    if max_groups < 1:
        raise DatasetError(f"max_groups must be >= 1, got {max_groups}")
    keys = [entry.group_id or entry.uri for entry in entries]
    groups = sorted(set(keys))
    if len(groups) <= max_groups:
        return list(entries)
    rng = np.random.default_rng(seed)
    chosen = {groups[i] for i in rng.choice(len(groups), size=max_groups, replace=False)}
    return [entry for entry, key in zip(entries, keys, strict=True) if key in chosen]


def run_evaluation(
    config: EvaluationConfig, out_dir: str | Path, log: Log = print
) -> tuple[Path, Path, dict[str, Any]]:
    """Run the whole method on ``config.dataset`` and write report.json / report.html."""
    from vqganodip_pipeline.reporting import write_report

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    prepared = prepare(config)
    preset = get_preset(config.preset)
    size = prepared.size
    options = dict(config.storage_options)
    counts = role_counts(prepared.split)
    log(
        f"[evaluate] {config.dataset}: {prepared.layout} layout, {len(prepared.manifest)} images "
        f"({len(prepared.quarantine)} quarantined), working size {size} px"
    )
    log("[evaluate] roles:\n" + counts.to_string())

    # 1. reconstruction model
    model_config, train_config = vqgan_preset(preset.name)
    model_config = replace(model_config, resolution=size)
    train_config = replace(
        train_config,
        device=config.device,
        steps=config.steps or train_config.steps,
        seed=config.seed,
        perceptual_weights_path=config.weights if config.weights else None,
    )
    train_rows = role_rows(prepared.split, "vqgan_train")
    val_rows = role_rows(prepared.split, "vqgan_val")
    begin = time.perf_counter()
    train_images = load_images(train_rows, size, options)
    val_images = load_images(val_rows, size, options) if len(val_rows) else None
    seconds["load_training_images"] = time.perf_counter() - begin

    def progress(record: dict) -> None:
        if record.get("event") == "train" and record.get("step", 0) % 250 == 0:
            log(
                f"[evaluate] VQGAN step {record['step']}: rec_loss {record.get('rec_loss', 0):.4f}"
                f", codebook usage {record.get('codebook_usage', 0):.2f}, "
                f"{record.get('images_per_s', 0):.1f} img/s"
            )
        elif record.get("event") == "eval":
            log(
                f"[evaluate] VQGAN eval at step {record['step']}: "
                f"PSNR {record.get('val_psnr', 0):.2f} dB"
            )

    begin = time.perf_counter()
    trained = train_vqgan(
        train_images,
        val_images,
        model_config,
        train_config,
        data_hash=hash_strings(list(train_rows["image_id"])),
        progress=progress,
    )
    seconds["train_vqgan_total"] = time.perf_counter() - begin
    model, discriminator = trained.model.eval(), trained.discriminator.eval()
    # every normal unit outside the classifier set also feeds the feature statistics
    normal_units = [train_images] if val_images is None else [train_images, val_images]
    del train_images, val_images

    # 2. weighting mask and golden sample
    mask_rows = role_rows(prepared.split, "mask_calibration")
    mask_images = load_images(mask_rows, size, options)
    use_mask = config.use_mask if config.use_mask is not None else prepared.layout != "deeppcb"
    choice = build_backbone(
        config.backbone,
        weights_path=config.backbone_weights or config.weights,
        discriminator=discriminator,
        encoder=model.encoder,
    )
    normal = compute_normal_variation(
        model,
        mask_images,
        use_weights=use_mask,
        standardize=use_mask,
        config=preset.localize,
        backbone=choice.backbone,
        feature_images=normal_units,
    )
    del normal_units
    golden = golden_sample(mask_images)
    log(f"[evaluate] weighting mask {'on' if use_mask else 'off'}; backbone: {choice.note}")

    # 3. metric table of the classifier set and the holdout
    rows = role_rows(prepared.split, "classifier_set", "holdout")
    masks = ground_truth_masks(rows, size, options)
    begin = time.perf_counter()
    load_seconds = 0.0

    def batches():
        nonlocal load_seconds
        iterator = iter_image_batches(rows, preset.batch_size, size, options)
        while True:
            tick = time.perf_counter()
            try:
                _, images = next(iterator)
            except StopIteration:
                return
            load_seconds += time.perf_counter() - tick
            yield images

    def table_progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            log(f"[evaluate] metrics: {done}/{total} images")

    table = compute_metric_table(
        model,
        discriminator,
        choice.backbone,
        rows,
        batches(),
        normal=normal,
        config=preset.localize,
        golden=golden,
        masks=masks,
        batch_size=preset.batch_size,
        progress=table_progress,
    )
    seconds["metric_table_total"] = time.perf_counter() - begin
    metrics = table.metrics
    n_rows = max(len(rows), 1)
    per_image = {"load": load_seconds / n_rows}
    per_image.update({k: v / n_rows for k, v in table.seconds.items()})

    # 4. composite score: shipped model, paper protocol, honest protocol
    outcome = score_metric_table(
        metrics,
        classifiers=config.classifiers or preset.classifiers,
        search=scoring.SearchConfig(
            n_iter=config.iterations or preset.search_iterations,
            n_splits=preset.search_folds,
            seed=config.seed,
            n_jobs=-1,
            max_features=preset.max_features,
        ),
        outer_folds=preset.outer_folds,
        log=lambda message: log(f"[evaluate] {message}"),
    )
    seconds.update(outcome.seconds)
    shipped = outcome.shipped

    # 5. one new image at a time, as in production
    timed = role_rows(prepared.split, "holdout").head(config.end_to_end_images)
    latencies = end_to_end_seconds(
        model,
        discriminator,
        choice.backbone,
        normal,
        golden,
        preset.localize,
        shipped,
        timed,
        size,
        options,
    )
    per_image["end_to_end"] = float(np.median(latencies)) if latencies else float("nan")

    # 6. report
    report = build_report(
        dataset=config.dataset,
        layout=prepared.layout,
        preset=config.preset,
        size=size,
        labels=prepared.manifest["label"],
        n_quarantined=len(prepared.quarantine),
        split=prepared.split,
        metrics=metrics,
        outcome=outcome,
        outer_folds=preset.outer_folds,
        seconds_per_image=per_image,
        seconds_total=seconds | {"wall": time.perf_counter() - started},
        extra={
            "backbone": choice.note,
            "weighting_mask": bool(use_mask),
            "max_groups": config.max_groups,
            "max_features": preset.max_features,
            "vqgan": {
                "steps": int(trained.step),
                "train_images_per_s": float(trained.images_per_s),
                "perceptual": str(trained.perceptual),
            },
        },
        targets=config.targets,
    )
    worst = worst_images_figure(
        metrics, pd.Series(shipped.score(metrics)), table.patches, rows, size, options
    )
    figures = report_figures(report, metrics, outcome, worst)
    json_path, html_path = write_report(Path(out_dir), report, figures)
    metrics.to_parquet(Path(out_dir) / "metrics.parquet", index=False)
    honest, paper = report["protocols"]["honest"], report["protocols"]["paper"]
    log(
        f"[evaluate] honest ZFN accuracy {honest['zfn']['accuracy']:.2%} "
        f"(missed {honest['zfn']['missed']}), paper-protocol ZFN accuracy "
        f"{paper['zfn']['accuracy']:.2%}; report: {html_path}"
    )
    return json_path, html_path, report
