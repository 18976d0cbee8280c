"""The multi-level metric table: one row per image (METHOD.md step 2).

Column names are ``<level>__<metric>__<aggregate>__<variant>``:

- level: ``image`` (whole image), ``pixel`` (the p most different pixels), ``patch`` (the q
  selected zoom-out-and-shift patches), ``baseline`` (reference detectors, not classifier input);
- metric: e.g. ``mse``, ``delta``, ``top_p``, ``fid``, ``ssim``, ``bray_curtis`` ...;
- aggregate: ``value`` for a single number, else one of sum, max, min, mean, q1, median, q3;
- variant: ``raw`` (on Delta), ``weighted`` (on Delta * W, the paper's weighting mask) or
  ``standardized`` (ours: on z+, the difference in units of normal variation, see
  localize/mask.py).

docs/METRICS.md lists every column. All values are finite floats: degenerate cases have
documented values (metrics/distances.py), and a non-finite value is an error naming the image.

Per variant: the p highest pixels of the variant's map seed the zoom-out-and-shift candidates,
q of them are kept, and every metric is computed on those. Candidates are ranked

- raw: by their perceptual distance (the paper);
- weighted: by perceptual distance times the mean of W over the patch, and the per-pixel patch
  distances compare the two patches after both are multiplied by W;
- standardized: by the mean of z+ over the patch (how unusual the patch is for a normal unit;
  the perceptual distance of a blurry reconstruction is high on every edge, see docs), with
  ``patch__zscore`` (that mean) as an extra metric.

Model outputs (quantization loss, discriminator logits, codes used), the perceptual distance and ORB
matching exist once per image (variant ``raw``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vqganodip_pipeline.localize.candidates import top_p_pixels, zoom_out_and_shift
from vqganodip_pipeline.localize.mask import NormalVariation, difference_image
from vqganodip_pipeline.localize.patch_distance import (
    ESTIMATORS,
    ImageFeatures,
    patch_distances_fast,
    patch_means,
    select_top_q,
)
from vqganodip_pipeline.metrics.aggregates import AGGREGATES, aggregate
from vqganodip_pipeline.metrics.distances import PATCH_DISTANCES, paired_patch_distances
from vqganodip_pipeline.metrics.keypoints import KEYPOINT_METRICS, orb_keypoint_matching
from vqganodip_pipeline.model.perceptual import feature_distance

VARIANTS = ("raw", "weighted", "standardized")
MODEL_OUTPUTS = ("mse", "quant_loss", "codes_used", "disc_logit_x", "disc_logit_xhat")


@dataclass(frozen=True)
class LocalizeConfig:
    """GanoDIP parameters (paper: p=100, n=4, alpha=4, q=250).

    Attributes:
        p: most different pixels kept per image.
        n: patch sizes alpha, 2 alpha, ..., n alpha px.
        alpha: patch size increment in px.
        q: highest-distance distinct patches kept.
        shift: displacement of the 8 neighbour patches in px (None = the patch side).
        estimator: perceptual distance estimator, ``pooled`` or ``frechet``.
        orb: compute the ORB keypoint-matching metrics.
        orb_keypoints: ORB keypoints per image.
        z_sigma: smoothing in px of the difference before standardizing (standardized variant).
        z_eps: floor added to the per-pixel standard deviation (difference units, [0, 1]).
        joint_channels: channels kept in the joint feature-deviation map (memory: positions x
            joint_channels^2 floats; 0 = no joint map).
        knn_bank: M, entries of the nearest-neighbour memory bank (PatchCore-style coreset of
            normal units' features; 0 = no nearest-neighbour metrics).
        knn_positions: positions drawn at random from each normal unit before the coreset.
    """

    p: int = 100
    n: int = 4
    alpha: int = 4
    q: int = 250
    shift: int | None = None
    estimator: str = "pooled"
    orb: bool = True
    orb_keypoints: int = 200
    z_sigma: float = 1.0
    z_eps: float = 0.01
    joint_channels: int = 64
    knn_bank: int = 4096
    knn_positions: int = 256

    def __post_init__(self) -> None:
        for name in ("knn_bank", "knn_positions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("p", "n", "alpha", "q"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")


@dataclass
class ImageResult:
    """Metrics of one image and the patches selected for each variant."""

    metrics: dict[str, float]
    patches: dict[str, np.ndarray]  # variant -> (q', 3) (top, left, size), best first
    patch_distances: dict[str, np.ndarray]  # variant -> (q',) perceptual distances


def _put(row: dict[str, float], level: str, metric: str, variant: str, values) -> None:
    for name, value in aggregate(np.ravel(values)).items():
        row[f"{level}__{metric}__{name}__{variant}"] = float(value)


def image_metrics(
    x: np.ndarray,
    x_hat: np.ndarray,
    features: ImageFeatures,
    model_outputs: dict[str, float],
    normal: NormalVariation | None,
    config: LocalizeConfig,
    golden: np.ndarray | None = None,
) -> ImageResult:
    """All metrics of one image.

    Args:
        x, x_hat: (H, W, 3) ``uint8`` image and reconstruction.
        features: backbone feature maps of both (localize.patch_distance.image_features).
        model_outputs: the reconstruction's per-image outputs, keys of :data:`MODEL_OUTPUTS`
            (the perceptual distance is computed here, from ``features``).
        normal: what the m unseen normal images say (weighting mask W and/or per-pixel
            statistics); None, or parts of it None, leave the matching variants out.
        config: GanoDIP parameters.
        golden: optional (H, W, 3) mean normal image for the golden-sample baseline.
    """
    height, width = x.shape[:2]
    weights = None if normal is None else normal.weights
    if weights is not None and weights.shape != (height, width):
        raise ValueError(f"weighting mask is {weights.shape}, image is {(height, width)}")
    delta = difference_image(x, x_hat).astype(np.float64)
    row: dict[str, float] = {}
    for name in MODEL_OUTPUTS:
        if name in model_outputs:
            row[f"image__{name}__value__raw"] = float(model_outputs[name])
    row["image__disc_gap__value__raw"] = row.get("image__disc_logit_x__value__raw", 0.0) - row.get(
        "image__disc_logit_xhat__value__raw", 0.0
    )
    whole = np.array([[0, 0, min(height, width)]])
    row["image__fid__value__raw"] = float(patch_distances_fast(features, whole)[0])
    # the patch backbone's maps of x and x_hat serve this one too: no extra pass
    row["image__perceptual__value__raw"] = float(
        feature_distance([m[None] for m in features.x], [m[None] for m in features.x_hat])[0]
    )
    if config.orb:
        orb = orb_keypoint_matching(x, x_hat, n_keypoints=config.orb_keypoints)
        for name in KEYPOINT_METRICS:
            row[f"image__orb_{name}__value__raw"] = float(orb[name])
    if golden is not None:
        golden_diff = (x.astype(np.float64) - golden.astype(np.float64)) / 255.0
        row["baseline__golden_mse__value__raw"] = float(np.mean(golden_diff**2))

    x_unit = x.astype(np.float64) / 255.0
    x_hat_unit = x_hat.astype(np.float64) / 255.0
    patches_out: dict[str, np.ndarray] = {}
    distances_out: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {"raw": delta}
    if weights is not None:
        maps["weighted"] = delta * weights.astype(np.float64)
        squared = ((x_unit - x_hat_unit) ** 2) * weights[:, :, None]
        row["image__mse__value__weighted"] = float(squared.mean())
    if normal is not None and normal.mean is not None:
        maps["standardized"] = normal.standardize(x, x_hat)
    if normal is not None and normal.features is not None:
        deviations = normal.features.deviation_maps(features.x, features.backbone)
        for name, deviation in deviations.items():
            _put(row, "image", name, "standardized", deviation)
    knn_map = None
    if normal is not None and normal.memory is not None:
        knn_map = normal.memory.distance_map(features.x, features.backbone)
        _put(row, "image", "knn", "raw", knn_map)
    for variant, d in maps.items():
        _put(row, "image", "delta", variant, d)
        pixels = top_p_pixels(d, config.p)
        _put(row, "pixel", "top_p", variant, d[pixels[:, 0], pixels[:, 1]])

        candidates = zoom_out_and_shift(
            pixels, (height, width), n=config.n, alpha=config.alpha, shift=config.shift
        )
        distances = patch_distances_fast(features, candidates, config.estimator)
        if variant == "weighted":
            distances = distances * patch_means(weights, candidates)
            ranking = distances
        elif variant == "standardized":
            ranking = patch_means(d, candidates)
        else:
            ranking = distances
        chosen = select_top_q(ranking, candidates, config.q)
        selected, selected_distances = candidates[chosen], distances[chosen]
        patches_out[variant], distances_out[variant] = selected, selected_distances
        _put(row, "patch", "fid", variant, selected_distances)
        _put(row, "patch", "side", variant, selected[:, 2].astype(np.float64))
        if variant == "standardized":
            _put(row, "patch", "zscore", variant, ranking[chosen])
        if knn_map is not None:
            assert normal is not None and normal.memory is not None
            _put(row, "patch", "knn", variant, patch_means(knn_map, selected, normal.memory.stride))

        originals, reconstructions = [], []
        for top, left, size in selected:
            a = x_unit[top : top + size, left : left + size]
            b = x_hat_unit[top : top + size, left : left + size]
            if variant == "weighted":
                patch_w = weights[top : top + size, left : left + size, None]
                a, b = a * patch_w, b * patch_w
            originals.append(a)
            reconstructions.append(b)
        for name, values in paired_patch_distances(originals, reconstructions).items():
            _put(row, "patch", name, variant, values)

    bad = sorted(k for k, v in row.items() if not np.isfinite(v))
    if bad:
        raise ValueError(f"non-finite metric values: {', '.join(bad)}")
    return ImageResult(metrics=row, patches=patches_out, patch_distances=distances_out)


def metric_column_names(
    weighted: bool = True,
    standardized: bool = True,
    orb: bool = True,
    feature_maps: int = 0,
    feature_joint: bool | None = None,
    knn: bool = True,
) -> list[str]:
    """Every metric column an image row can hold, in a stable order (documentation, checks).
    ``feature_maps``: backbone feature maps with normal statistics (0: no feature deviation);
    ``feature_joint``: with their joint map (None: whenever there are two maps or more);
    ``knn``: with the nearest-neighbour memory bank."""
    if feature_joint is None:
        feature_joint = feature_maps >= 2
    names = [f"image__{name}__value__raw" for name in MODEL_OUTPUTS]
    names += ["image__disc_gap__value__raw", "image__fid__value__raw"]
    names += ["image__perceptual__value__raw"]
    if orb:
        names += [f"image__orb_{name}__value__raw" for name in KEYPOINT_METRICS]
    variants = (
        ["raw"] + (["weighted"] if weighted else []) + (["standardized"] if standardized else [])
    )
    for variant in variants:
        if variant == "weighted":
            names.append("image__mse__value__weighted")
        sets = [("image", "delta"), ("pixel", "top_p"), ("patch", "fid"), ("patch", "side")]
        if knn:
            sets += [("image", "knn")] if variant == "raw" else []
            sets.append(("patch", "knn"))
        if variant == "standardized":
            sets.append(("patch", "zscore"))
            sets += [("image", f"feature_deviation_{i}") for i in range(feature_maps)]
            if feature_joint:
                sets.append(("image", "feature_deviation_joint"))
        sets += [("patch", name) for name in PATCH_DISTANCES]
        for level, metric in sets:
            names += [f"{level}__{metric}__{agg}__{variant}" for agg in AGGREGATES]
    return names


def patches_frame(image_id: str, result: ImageResult) -> pd.DataFrame:
    """The selected patches of one image as rows (image_id, variant, rank, top, left, size,
    distance)."""
    frames = []
    for variant, patches in result.patches.items():
        frames.append(
            pd.DataFrame(
                {
                    "image_id": image_id,
                    "variant": variant,
                    "rank": np.arange(len(patches), dtype=np.int64),
                    "top": patches[:, 0].astype(np.int64),
                    "left": patches[:, 1].astype(np.int64),
                    "size": patches[:, 2].astype(np.int64),
                    "distance": result.patch_distances[variant],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_IMAGE_DESCRIPTIONS = {
    "mse": "mean squared error of x_hat vs x, pixels in [0, 1] (weighted: times W)",
    "quant_loss": "the VQ loss of the image's latent (codebook + beta commitment)",
    "codes_used": "distinct codebook entries in the image's code map",
    "disc_logit_x": "mean PatchGAN logit on the original",
    "disc_logit_xhat": "mean PatchGAN logit on the reconstruction",
    "perceptual": "LPIPS-style distance of x and x_hat (unit-normalised feature differences, "
    "the training perceptual loss's formula) on the patch backbone's feature maps",
    "disc_gap": "disc_logit_x - disc_logit_xhat",
    "fid": "pooled-feature perceptual distance of the whole image (backbone in metadata)",
}
_SET_DESCRIPTIONS = {
    ("image", "delta"): "every pixel of Delta = |x - x_hat| (channel mean, [0, 1])",
    ("pixel", "top_p"): "the p largest values of Delta",
    ("patch", "fid"): "perceptual (FID-style) distance of the q selected patches",
    ("patch", "side"): "side in px of the q selected patches",
}
_VARIANT_NAMES = "{raw,weighted,standardized}"


def metric_documentation() -> str:
    """Markdown table of every metric column (docs/METRICS.md is generated from it)."""
    from vqganodip_pipeline.metrics.distances import PATCH_METRIC_DIRECTION

    lines = [
        "# Metric columns",
        "",
        "Generated by `vqganodip_pipeline.metrics.table.metric_documentation()`; a test keeps",
        "this file in step with the code. Names are `<level>__<metric>__<aggregate>__<variant>`:",
        "aggregate `value` for single numbers, else one of "
        + ", ".join(f"`{a}`" for a in AGGREGATES)
        + "; variant `raw` (on Delta), `weighted` (on Delta * W, the paper's weighting mask) "
        "or `standardized` (on z+, the difference in units of normal variation). "
        "Patch metrics compare the original and reconstructed patch (pixels in [0, 1]; the",
        "weighted variant multiplies both by W); see metrics/distances.py for the conventions",
        "of degenerate patches. `baseline__*` columns are reference detectors and are not",
        "classifier input. `gt_*` columns (ground-truth hit counts) are never classifier input.",
        "`capture__*` columns (capture statistics of the image as read: grey-level histogram,",
        "noise, gradient energy, JPEG blockiness, PNG bits per pixel, size, mean colour; see",
        "data/capture.py) ride along for the shortcut baseline and are never classifier input.",
        "",
        "| column(s) | meaning |",
        "|---|---|",
    ]
    for name in (*MODEL_OUTPUTS, "disc_gap", "fid", "perceptual"):
        lines.append(f"| `image__{name}__value__raw` | {_IMAGE_DESCRIPTIONS[name]} |")
    lines.append(f"| `image__mse__value__weighted` | {_IMAGE_DESCRIPTIONS['mse']} |")
    for key in KEYPOINT_METRICS:
        lines.append(
            f"| `image__orb_{key}__value__raw` | ORB keypoint matching of x vs x_hat: {key} |"
        )
    aggregates = "{" + ",".join(AGGREGATES) + "}"
    for (level, metric), text in _SET_DESCRIPTIONS.items():
        lines.append(f"| `{level}__{metric}__{aggregates}__{_VARIANT_NAMES}` | {text} |")
    lines.append(
        f"| `patch__zscore__{aggregates}__standardized` | mean z+ (difference in units of "
        "normal variation) of each of the q patches |"
    )
    lines.append(
        f"| `image__feature_deviation_{{0,1,...}}__{aggregates}__standardized` | per position of "
        "backbone feature map 0, 1, ...: Mahalanobis distance (per channel) of the image's "
        "features to those of the normal units (calibration, VQGAN training and validation) at "
        "the same position, covariance with Ledoit-Wolf shrinkage (PaDiM-style, "
        "localize/feature_deviation.py); not from the reconstruction |"
    )
    lines.append(
        f"| `image__feature_deviation_joint__{aggregates}__standardized` | the same on all feature "
        "maps together: brought to one grid (4 px per cell or the finest map's), channels "
        "concatenated, at most `joint_channels` of them kept (a fixed random subset, PaDiM); "
        "present with two maps or more |"
    )
    lines.append(
        f"| `image__knn__{aggregates}__raw` | per cell of the backbone's finest grid: Euclidean "
        "distance of the image's locally aggregated features (3x3 cells, all maps concatenated) "
        "to the nearest entry of a coreset memory bank of normal units' features "
        "(PatchCore-style, localize/nearest_neighbour.py); position-free, not from the "
        "reconstruction |"
    )
    lines.append(
        f"| `patch__knn__{aggregates}__{_VARIANT_NAMES}` | mean of that nearest-neighbour "
        "distance over each of the q selected patches |"
    )
    for name, direction in PATCH_METRIC_DIRECTION.items():
        kind = "similarity" if direction.startswith("higher") else "distance"
        lines.append(
            f"| `patch__{name}__{aggregates}__{_VARIANT_NAMES}` | {name.replace('_', ' ')} "
            f"{kind} of each of the q patches |"
        )
    lines += [
        "| `baseline__golden_mse__value__raw` | MSE of x vs the golden sample (mean normal "
        "image), the incumbent AOI approach |",
        "| `gt_defects`, `gt_defects_hit_{raw,weighted,standardized}` | ground-truth defects "
        "(connected components or boxes) and how many a selected patch touches |",
        "",
        f"All three variants: {len(metric_column_names(feature_maps=2))} metric columns per "
        "image with a two-map backbone (every backbone has two by default) and the memory "
        "bank; free position (no weighting mask, no per-pixel or per-position statistics, "
        "the memory bank kept): "
        f"{len(metric_column_names(weighted=False, standardized=False))}; "
        "raw only (no normal images to learn from): "
        f"{len(metric_column_names(weighted=False, standardized=False, knn=False))}.",
        "",
    ]
    return "\n".join(lines)
