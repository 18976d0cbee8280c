"""The evaluation report: one dict (see reporting.SCHEMA) built from what a run produced, its
targets, its figures, and the production latency it quotes."""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vqganodip_pipeline import scoring
from vqganodip_pipeline.data.loading import load_images
from vqganodip_pipeline.data.split import role_counts
from vqganodip_pipeline.localize.patch_distance import image_features
from vqganodip_pipeline.metrics.table import VARIANTS, image_metrics
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.pipeline import best_hit_rate, localization_hit_rate, reconstruction_frame
from vqganodip_pipeline.versioning import library_versions, machine_info
from vqganodip_pipeline.viz import contact_sheet, draw_boxes
from vqganodip_pipeline.workflow.scoring import ScoringOutcome

METRIC_KEYS = ("accuracy", "precision", "fpr", "fnr", "missed", "tp", "fp", "tn", "fn")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fold_mean(row: Mapping[str, Any]) -> dict[str, float]:
    """{"auroc_fold_mean": value} when the leaderboard row has a finite one, else {}."""
    value = row.get("auroc_fold_mean")
    if value is None or not np.isfinite(value):
        return {}
    return {"auroc_fold_mean": float(value)}


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


def worst_image_rows(metrics: pd.DataFrame, scores: np.ndarray, count: int = 4) -> pd.DataFrame:
    """The ``count`` lowest-scored abnormal and ``count`` highest-scored normal images
    (image_id, label, score): the ones that decide the ZFN threshold and its false alarms."""
    frame = metrics[["image_id", "label"]].assign(score=np.asarray(scores, dtype=np.float64))
    return pd.concat(
        [
            frame[frame["label"] == "abnormal"].nsmallest(count, "score"),
            frame[frame["label"] == "normal"].nlargest(count, "score"),
        ]
    ).reset_index(drop=True)


def worst_images_figure(
    chosen: pd.DataFrame,
    patches: pd.DataFrame,
    rows: pd.DataFrame,
    size: int,
    storage_options: Mapping[str, Any],
    columns: int = 4,
    captions: Sequence[str] | None = None,
    patches_per_image: int = 10,
) -> np.ndarray | None:
    """The images of ``chosen`` (image_id, label, score; e.g. :func:`worst_image_rows`) with
    their ``patches_per_image`` best raw patches drawn; captions default to label and score."""
    if len(chosen) == 0:
        return None
    by_id = rows.set_index("image_id")
    tiles, default_captions = [], []
    for item in chosen.itertuples():
        image = load_images(by_id.loc[[item.image_id]].reset_index(), size, storage_options)[0]
        best = patches[(patches["image_id"] == item.image_id) & (patches["variant"] == "raw")]
        boxes = list(
            best.nsmallest(patches_per_image, "rank")[["top", "left", "size", "size"]].itertuples(
                index=False, name=None
            )
        )
        tiles.append(draw_boxes(image, boxes))
        default_captions.append(f"{item.label[:3]} {item.score:.3f}")
    return contact_sheet(tiles, captions or default_captions, columns=columns, thumb=192)


PRODUCTION_STAGES = ("load", "reconstruct", "features", "metrics", "score")


def production_latency(
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
) -> dict[str, float]:
    """Median seconds per image of each stage and ``end_to_end`` when every image of ``rows``
    is scored on its own, as a production image arrives: read and decode, reconstruct,
    backbone features, metrics, composite score. Empty ``rows``: an empty dict."""
    timings: dict[str, list[float]] = {stage: [] for stage in (*PRODUCTION_STAGES, "end_to_end")}
    for row in rows.to_dict("records"):
        ticks = [time.perf_counter()]
        image = load_images(pd.DataFrame([row]), size, storage_options)
        ticks.append(time.perf_counter())
        result = reconstruct(model, image, batch_size=1, discriminator=discriminator)
        ticks.append(time.perf_counter())
        features = image_features(backbone, image[0], result.x_hat[0])
        ticks.append(time.perf_counter())
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
        ticks.append(time.perf_counter())
        shipped.score(pd.DataFrame([single.metrics]))
        ticks.append(time.perf_counter())
        for stage, start, end in zip(PRODUCTION_STAGES, ticks[:-1], ticks[1:], strict=True):
            timings[stage].append(end - start)
        timings["end_to_end"].append(ticks[-1] - ticks[0])
    return {stage: float(np.median(v)) for stage, v in timings.items() if v}


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
        str(row["classifier"]): {
            **_split_metrics(row),
            "auroc": float(row["auroc_pooled"]),
            **_fold_mean(row),
        }
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
                "same images it is evaluated on (in-sample, as in the paper: it cannot show a "
                "miss); same search and "
                "metric selection as the honest protocol",
            },
            "honest": {
                "classifier": "composite (the shipped recipe inside each outer fold)",
                **_split_metrics(composite),
                "note": f"{outer_folds} outer folds; in each, the shipped recipe on the training "
                "part (search and the composite of the classifiers on a fit part, "
                "split-conformal threshold on a calibration part), metrics pooled over the "
                "unseen test parts",
            },
        },
        "shipped": {
            "classifier": str(shipped.classifier_name),
            "threshold": float(shipped.threshold),
            "n_fit": len(shipped.fit_image_ids),
            "n_normal_calibration": int(shipped.n_normal_calibration),
            "calibration_fpr": float(shipped.calibration["fpr_zfn"]),
            # the risk statement; target_* only when a target miss rate was asked for
            **{key: value for key, value in shipped.risk.to_dict().items() if value is not None},
        },
        "shortcut": outcome.shortcut,
        "holdout": None if outcome.holdout is None else _split_metrics(outcome.holdout),
        "auroc": float(composite["auroc_pooled"]),
        **_fold_mean(composite),
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
