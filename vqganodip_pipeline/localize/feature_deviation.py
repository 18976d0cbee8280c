"""How far an image's backbone features lie from those of normal units at the same position.

The pixel difference |x - x_hat| misses defects the VQGAN reproduces faithfully (a missing
part leaves bare pads, which the codebook knows well) and lights up wherever a blurry
reconstruction meets a sharp edge that moved by a pixel of placement jitter. Backbone features
pool a few pixels and are tolerant to such jitter, and comparing them with the features of the
m calibration units at the same position asks "does this region look like it does on a good
unit?", independently of the reconstruction. Per feature map l, with per-position, per-channel
mean mu and variance var of the m calibration units:

    D_l(i, j) = mean_c (f_l(x)[c, i, j] - mu[c, i, j])^2 / (var[c, i, j] + lambda * mean(var))

(a diagonal Mahalanobis distance as in PaDiM, Defard et al. 2021; lambda regularises the
variance that 30 images estimate). Products without a fixed position have no per-position
statistics and no such metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vqganodip_pipeline.features.backbones import FeatureBackbone
from vqganodip_pipeline.model.tensors import images_to_tensor


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-position feature statistics of normal units.

    Attributes:
        backbone: name of the backbone that made them (a mismatch at use time is an error).
        mean, var: per feature map, (C, h, w) float32 mean and variance over the m units.
        shrinkage: lambda, the share of the map's mean variance added to every variance.
    """

    backbone: str
    mean: tuple[np.ndarray, ...]
    var: tuple[np.ndarray, ...]
    shrinkage: float = 0.1

    def deviation_maps(self, features: Sequence[torch.Tensor], backbone: str) -> list[np.ndarray]:
        """D_l of one image's feature maps ((C, h, w) each, as in ImageFeatures.x)."""
        if backbone != self.backbone:
            raise ValueError(
                f"feature statistics were fitted with backbone {self.backbone!r}, "
                f"the metrics use {backbone!r}: refit the normal variation with this backbone"
            )
        if len(features) != len(self.mean):
            raise ValueError(f"{len(features)} feature maps, statistics for {len(self.mean)}")
        maps = []
        for f, mean, var in zip(features, self.mean, self.var, strict=True):
            values = f.detach().cpu().numpy().astype(np.float64)
            if values.shape != mean.shape:
                raise ValueError(
                    f"feature map {values.shape} does not match the statistics {mean.shape}: "
                    "the image size differs from the calibration images'"
                )
            denominator = var.astype(np.float64) + self.shrinkage * float(var.mean()) + 1e-12
            maps.append((((values - mean) ** 2) / denominator).mean(axis=0))
        return maps

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {
            "feature_backbone": np.asarray(self.backbone),
            "feature_shrinkage": np.float64(self.shrinkage),
        }
        for i, (mean, var) in enumerate(zip(self.mean, self.var, strict=True)):
            arrays[f"feature_mean_{i}"] = mean.astype(np.float32)
            arrays[f"feature_var_{i}"] = var.astype(np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureStatistics | None:
        if "feature_backbone" not in arrays:
            return None
        count = sum(1 for key in arrays if key.startswith("feature_mean_"))
        return cls(
            backbone=str(arrays["feature_backbone"]),
            mean=tuple(np.asarray(arrays[f"feature_mean_{i}"]) for i in range(count)),
            var=tuple(np.asarray(arrays[f"feature_var_{i}"]) for i in range(count)),
            shrinkage=float(arrays.get("feature_shrinkage", 0.1)),
        )


@torch.no_grad()
def fit_feature_statistics(
    backbone: FeatureBackbone,
    images: np.ndarray,
    *,
    shrinkage: float = 0.1,
    batch_size: int = 8,
) -> FeatureStatistics:
    """Per-position mean and variance of ``backbone``'s feature maps over normal images
    ((m, H, W, 3) ``uint8``, m >= 2), accumulated batch by batch in float64."""
    if len(images) < 2:
        raise ValueError(f"feature statistics need at least 2 normal images, got {len(images)}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    sums: list[np.ndarray] = []
    squares: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        maps = backbone.feature_maps(images_to_tensor(images[start : start + batch_size]))
        for i, m in enumerate(maps):
            values = m.double().cpu().numpy()
            if len(sums) <= i:
                sums.append(np.zeros(values.shape[1:]))
                squares.append(np.zeros(values.shape[1:]))
            sums[i] += values.sum(axis=0)
            squares[i] += (values**2).sum(axis=0)
    n = float(len(images))
    means = tuple(s / n for s in sums)
    variances = tuple(
        np.maximum(q / n - mean**2, 0.0) for q, mean in zip(squares, means, strict=True)
    )
    return FeatureStatistics(
        backbone=backbone.name,
        mean=tuple(m.astype(np.float32) for m in means),
        var=tuple(v.astype(np.float32) for v in variances),
        shrinkage=shrinkage,
    )
