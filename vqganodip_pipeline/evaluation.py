"""End-to-end evaluation of the method on a labelled dataset: train, mask, metrics, scoring,
and a report shaped like the paper's tables (``vqganodip evaluate`` and the Dagster
``evaluation_report`` asset both build it here).

Every step calls the same library functions as the assets (pipeline.py, scoring/). Inputs are
checked before any training starts: the dataset path, the layout, and the presence of abnormal
images.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline import scoring
from vqganodip_pipeline.data.fs import filesystem
from vqganodip_pipeline.data.loading import iter_image_batches, load_images, load_mask
from vqganodip_pipeline.data.manifest import build_manifest, label_counts
from vqganodip_pipeline.data.sources import LAYOUTS, DatasetLayoutError, SourceEntry, scan_source
from vqganodip_pipeline.data.split import SplitConfig, assign_roles, role_counts
from vqganodip_pipeline.hashing import hash_strings
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import VARIANTS, image_metrics
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.model.train import train_vqgan
from vqganodip_pipeline.pipeline import (
    best_hit_rate,
    build_backbone,
    compute_metric_table,
    compute_normal_variation,
    localization_hit_rate,
    reconstruction_frame,
)
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.versioning import library_versions, machine_info
from vqganodip_pipeline.viz import contact_sheet, draw_boxes

Log = Callable[[str], None]
METRIC_KEYS = ("accuracy", "precision", "fpr", "fnr", "missed", "tp", "fp", "tn", "fn")


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


def _rows(split: pd.DataFrame, *roles: str) -> pd.DataFrame:
    return split[split["role"].isin(roles)].sort_values("image_id").reset_index(drop=True)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _split_metrics(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"std": M, "zfn": M} from a flat leaderboard / metrics row."""
    out: dict[str, dict[str, Any]] = {}
    for suffix in ("std", "zfn"):
        block = {key: row[f"{key}_{suffix}"] for key in METRIC_KEYS if f"{key}_{suffix}" in row}
        threshold = row.get(f"threshold_{suffix}")
        if threshold is not None and np.isfinite(threshold):
            block["threshold"] = float(threshold)
        out[suffix] = {
            k: (int(v) if k in ("missed", "tp", "fp", "tn", "fn") else float(v))
            for k, v in block.items()
        }
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    numeric = frame.select_dtypes(include=[np.number, "bool"]).columns
    keep = ["classifier", *[c for c in ("name", "kind") if c in frame], *numeric]
    rows = frame[keep].to_dict("records")
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and not np.isfinite(v))}
        for row in rows
    ]


def worst_images_figure(
    metrics: pd.DataFrame,
    scores: pd.Series,
    patches: pd.DataFrame,
    rows: pd.DataFrame,
    size: int,
    storage_options: Mapping[str, Any],
    count: int = 4,
) -> np.ndarray | None:
    """The lowest-scored abnormal and highest-scored normal images with their best patches."""
    frame = metrics[["image_id", "label"]].assign(score=scores.to_numpy())
    chosen = pd.concat(
        [
            frame[frame["label"] == "abnormal"].nsmallest(count, "score"),
            frame[frame["label"] == "normal"].nlargest(count, "score"),
        ]
    )
    if len(chosen) == 0:
        return None
    by_id = rows.set_index("image_id")
    tiles, captions = [], []
    for item in chosen.itertuples():
        image = load_images(by_id.loc[[item.image_id]].reset_index(), size, storage_options)[0]
        best = patches[(patches["image_id"] == item.image_id) & (patches["variant"] == "raw")]
        boxes = list(
            best.nsmallest(10, "rank")[["top", "left", "size", "size"]].itertuples(
                index=False, name=None
            )
        )
        tiles.append(draw_boxes(image, boxes))
        captions.append(f"{item.label[:3]} {item.score:.3f}")
    return contact_sheet(tiles, captions, columns=count, thumb=192)


def end_to_end_seconds(
    model: Any,
    discriminator: Any,
    backbone: Any,
    normal: Any,
    golden: np.ndarray | None,
    config: Any,
    shipped: Any,
    rows: pd.DataFrame,
    size: int,
    storage_options: Mapping[str, Any],
) -> list[float]:
    """Seconds to score each image of ``rows`` on its own, as a production image arrives:
    read, reconstruct, features, metrics, composite score."""
    latencies = []
    for row in rows.to_dict("records"):
        tick = time.perf_counter()
        image = load_images(pd.DataFrame([row]), size, storage_options)
        result = reconstruct(model, image, batch_size=1, discriminator=discriminator)
        features = image_features(backbone, image[0], result.x_hat[0])
        outputs = reconstruction_frame(result).iloc[0]
        single = image_metrics(
            image[0],
            result.x_hat[0],
            features,
            {k: float(v) for k, v in outputs.items() if np.isfinite(v)},
            normal,
            config,
            golden=golden,
        )
        shipped.score(pd.DataFrame([single.metrics]))
        latencies.append(time.perf_counter() - tick)
    return latencies


@dataclass
class ScoringOutcome:
    """The shipped composite model and how it was evaluated (paper and honest protocols)."""

    shipped: Any  # scoring.CompositeScoreModel
    paper_leaderboard: pd.DataFrame | None
    honest_leaderboard: pd.DataFrame | None
    honest_predictions: pd.DataFrame | None
    holdout: dict[str, Any] | None
    seconds: dict[str, float]


def score_metric_table(
    metrics: pd.DataFrame,
    *,
    classifiers: tuple[str, ...] | None,
    search: scoring.SearchConfig,
    outer_folds: int,
    margin: float = 0.0,
    paper_protocol: bool = True,
    honest_protocol: bool = True,
    log: Log = print,
    progress: Callable[[Any], None] | None = None,
) -> ScoringOutcome:
    """Fit the shipped model on the ``classifier_set`` rows, run the protocols, and check the
    shipped threshold on the ``holdout`` rows."""
    seconds: dict[str, float] = {}
    begin = time.perf_counter()
    shipped = scoring.fit_composite_model(
        metrics, classifiers=classifiers, config=search, margin=margin, progress=progress
    )
    seconds["fit_composite_model"] = time.perf_counter() - begin
    log(
        f"[evaluate] shipped model: {shipped.classifier_name}, ZFN threshold "
        f"{shipped.threshold:.4f} from {shipped.n_abnormal_calibration} abnormal images"
    )
    paper = honest = None
    if paper_protocol:
        begin = time.perf_counter()
        # the paper's preprocessing, whatever the shipped model uses
        paper = scoring.run_paper_protocol(
            metrics,
            classifiers=classifiers,
            config=replace(search, max_features=None),
            progress=progress,
        )
        seconds["paper_protocol"] = time.perf_counter() - begin
    if honest_protocol:
        begin = time.perf_counter()
        honest = scoring.run_honest_protocol(
            metrics,
            classifiers=classifiers,
            config=search,
            n_outer=outer_folds,
            margin=margin,
            progress=progress,
        )
        seconds["honest_protocol"] = time.perf_counter() - begin
    holdout_rows = metrics[metrics["role"] == "holdout"]
    holdout = (
        scoring.evaluate(shipped, holdout_rows)
        if len(holdout_rows) and holdout_rows["label"].nunique() == 2
        else None
    )
    return ScoringOutcome(
        shipped=shipped,
        paper_leaderboard=None if paper is None else paper.leaderboard,
        honest_leaderboard=None if honest is None else honest.leaderboard,
        honest_predictions=None
        if honest is None
        else honest.predictions[honest.predictions["method"] == "composite"],
        holdout=holdout,
        seconds=seconds,
    )


def build_report(
    *,
    dataset: str,
    layout: str,
    preset: str,
    size: int,
    labels: pd.Series,
    n_quarantined: int,
    split: pd.DataFrame,
    metrics: pd.DataFrame,
    outcome: ScoringOutcome,
    outer_folds: int,
    seconds_per_image: Mapping[str, float],
    seconds_total: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
    targets: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """The report dict (see reporting.SCHEMA) from what an evaluation produced."""
    if outcome.paper_leaderboard is None or outcome.honest_leaderboard is None:
        raise ValueError("a report needs both the paper and the honest protocol")
    shipped = outcome.shipped
    honest = outcome.honest_leaderboard
    composite = honest[honest["classifier"] == "composite"].iloc[0]
    paper_best = outcome.paper_leaderboard.iloc[0]
    counts = role_counts(split)
    baselines = {
        str(row["classifier"]): {**_split_metrics(row), "auroc": float(row["auroc_pooled"])}
        for row in honest[honest["kind"] == "baseline"].to_dict("records")
        if np.isfinite(row["auroc_pooled"])
    }
    report: dict[str, Any] = {
        "title": f"VQGanoDIP evaluation: {Path(dataset.rstrip('/')).name} ({preset} preset)",
        "dataset": dataset,
        "layout": layout,
        "preset": preset,
        "image_size": int(size),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_normal": int((labels == "normal").sum()),
        "n_abnormal": int((labels == "abnormal").sum()),
        "n_quarantined": int(n_quarantined),
        "roles": {
            role: {
                "normal": int(counts.loc[role, "normal"]),
                "abnormal": int(counts.loc[role, "abnormal"]),
            }
            for role in counts.index
        },
        "protocols": {
            "paper": {
                "classifier": str(paper_best["name"]),
                **_split_metrics(paper_best),
                "note": "leave-one-out scores; ZFN threshold = the lowest abnormal score of the "
                "same images it is evaluated on (optimistic, as in the paper)",
            },
            "honest": {
                "classifier": "composite (chosen inside each outer fold)",
                **_split_metrics(composite),
                "note": f"{outer_folds} outer folds: model choice, search and threshold "
                "on the training part only, metrics pooled over the unseen test parts",
                "threshold": float(shipped.threshold),
                "n_abnormal_calibration": int(shipped.n_abnormal_calibration),
                "miss_bound": float(shipped.miss_probability_bound),
            },
        },
        "holdout": None if outcome.holdout is None else _split_metrics(outcome.holdout),
        "auroc": float(composite["auroc_pooled"]),
        "baselines": baselines,
        "leaderboards": {
            "paper": _records(outcome.paper_leaderboard),
            "honest": _records(honest),
        },
        "localization_hit_rate": best_hit_rate(metrics),
        "localization_hit_rate_by_variant": {
            variant: localization_hit_rate(metrics, variant)
            for variant in VARIANTS
            if f"gt_defects_hit_{variant}" in metrics
        },
        "seconds_per_image": {k: float(v) for k, v in seconds_per_image.items()},
        "seconds_total": {k: float(v) for k, v in seconds_total.items()},
        "peak_rss_mb": _peak_rss_mb(),
        "versions": library_versions(("xgboost", "lightgbm", "imbalanced-learn")),
        "machine": machine_info(),
        **dict(extra or {}),
    }
    if targets:
        report["targets"] = check_targets(report, targets)
    return report


def _lookup(report: Mapping[str, Any], path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(f"target path {path!r}: no {key!r} in the report")
        value = value[key]
    return value


def check_targets(
    report: Mapping[str, Any], targets: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each target ``{"name", "path", "op", "value"}`` checked against the report.

    ``path`` is a dotted key into the report (``protocols.honest.zfn.accuracy``); ``op`` is
    ``>=`` or ``<=``; ``value`` a number, or another dotted path, e.g. for "the composite
    beats every baseline" (``baselines.best_single_metric.zfn.accuracy``). Returns the
    report's ``targets`` entries: name, target and measured as text, met.
    """
    checked = []
    for target in targets:
        op = target["op"]
        if op not in (">=", "<="):
            raise ValueError(f"target {target['name']!r}: op must be '>=' or '<=', got {op!r}")
        measured = float(_lookup(report, target["path"]))
        bound = target["value"]
        bound_value = float(_lookup(report, bound) if isinstance(bound, str) else bound)
        met = measured >= bound_value if op == ">=" else measured <= bound_value
        described = f"{bound} = {bound_value:.4g}" if isinstance(bound, str) else f"{bound:.4g}"
        checked.append(
            {
                "name": str(target["name"]),
                "target": f"{target['path']} {op} {described}",
                "measured": f"{measured:.4g}",
                "met": bool(met),
                "gap": 0.0 if met else abs(bound_value - measured),
            }
        )
    return checked


def report_figures(
    report: dict[str, Any],
    metrics: pd.DataFrame,
    outcome: ScoringOutcome,
    worst_images: np.ndarray | None = None,
) -> dict[str, bytes]:
    """The report's figures as PNG bytes; their captions are added to ``report["figures"]``."""
    from vqganodip_pipeline.viz import to_png

    predictions = outcome.honest_predictions
    figures: dict[str, bytes] = {}
    captions: dict[str, str] = {}
    if predictions is not None:
        figures["score_distributions"] = scoring.plot_score_distributions(
            predictions["score"], predictions["y"], None, "honest protocol: unseen-fold scores"
        )
        captions["score_distributions"] = "Composite scores of unseen images (honest protocol)"
        figures["roc"] = scoring.plot_roc(predictions["score"], predictions["y"])
        captions["roc"] = "ROC of the composite score on unseen folds"
    figures["metric_importances"] = scoring.plot_metric_importances(
        scoring.metric_importances(outcome.shipped, metrics[metrics["role"] == "classifier_set"])
    )
    captions["metric_importances"] = "The ten most important metrics of the shipped model"
    if worst_images is not None:
        figures["worst_images"] = to_png(worst_images)
        captions["worst_images"] = (
            "Lowest-scored abnormal and highest-scored normal images (shipped model) with "
            "their top patches"
        )
    report["figures"] = {name: {"caption": text} for name, text in captions.items()}
    return figures


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
    train_rows = _rows(prepared.split, "vqgan_train")
    val_rows = _rows(prepared.split, "vqgan_val")
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
    mask_rows = _rows(prepared.split, "mask_calibration")
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
    golden = mask_images.mean(axis=0).round().astype(np.uint8)
    log(f"[evaluate] weighting mask {'on' if use_mask else 'off'}; backbone: {choice.note}")

    # 3. metric table of the classifier set and the holdout
    rows = _rows(prepared.split, "classifier_set", "holdout")
    masks = {}
    for row in rows[rows["label"] == "abnormal"].to_dict("records"):
        mask = load_mask(row, size, options)
        if mask is not None:
            masks[str(row["image_id"])] = mask
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
        log=log,
    )
    seconds.update(outcome.seconds)
    shipped = outcome.shipped

    # 5. one new image at a time, as in production
    timed = _rows(prepared.split, "holdout").head(config.end_to_end_images)
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
