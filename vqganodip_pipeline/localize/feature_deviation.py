"""How far an image's backbone features lie from those of normal units at the same position.

The pixel difference |x - x_hat| misses defects the VQGAN reproduces faithfully (a missing
part leaves bare pads, which the codebook knows well) and lights up wherever a blurry
reconstruction meets a sharp edge that moved by a pixel of placement jitter. Backbone features
pool a few pixels and are tolerant to such jitter, and comparing them with the features of
normal units at the same position asks "does this region look like it does on a good unit?",
independently of the reconstruction. Per feature map l with C channels, from the n normal units'
per-position mean mu and covariance S (C x C) of the channel vector:

    Sigma = (1 - lambda) S + lambda (tr S / C) I
    D_l(i, j) = (f_l(x)[:, i, j] - mu)^T Sigma^-1 (f_l(x)[:, i, j] - mu) / C

the Mahalanobis distance of PaDiM (Defard et al. 2021), with the covariance shrunk towards a
scaled identity so that a few dozen to a few hundred units give a well-conditioned estimate;
lambda is Ledoit and Wolf's (2004) optimal intensity at every position by default (close to 1
when the backbone has more channels than there are units), or a fixed number. The statistics
need only normal images, not reconstructions, so the units the VQGAN was trained on count too.
On the tuning seed (7) of the synthetic boards (MobileNetV2 blocks 3 and 6), the full
covariance with Ledoit-Wolf shrinkage from 220 normal units (calibration, VQGAN training and
validation) reached single-metric AUROCs of 0.992 and 0.980, against 0.880 and 0.909 for a
diagonal one from the 30 calibration units. Products without a fixed position have no
per-position statistics and no such metric.

With two or more feature maps there is also a joint map: all maps brought to one grid
(``JOINT_MIN_STRIDE`` px or the finest map's stride, whichever is coarser: finer maps
average-pooled, coarser ones repeated), their channels concatenated as PaDiM does, and at most
``joint_channels`` of them kept (a fixed random subset, as in PaDiM, so memory stays bounded:
P positions x C^2 floats). The joint covariance also sees how the layers vary together; on
seed 7 its maximum separated every abnormal unit from 98.8% of the normal ones (one metric, in
sample) against 86.9% for the best single map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vqganodip_pipeline.features.backbones import FeatureBackbone
from vqganodip_pipeline.model.tensors import images_to_tensor

JOINT_MIN_STRIDE = 4  # px per cell of the joint map's grid, at least


def joint_feature_map(
    maps: Sequence[torch.Tensor], strides: Sequence[int], stride: int, channels: np.ndarray
) -> torch.Tensor:
    """Feature maps (N, C_l, h_l, w_l) at ``strides`` px per cell on one grid of ``stride`` px:
    finer maps average-pooled, coarser ones repeated, cut to the common size, concatenated along
    the channels, then the channels ``channels`` kept -> (N, len(channels), h, w)."""
    parts = []
    for feature_map, own in zip(maps, strides, strict=True):
        if own < stride:
            if stride % own:
                raise ValueError(f"strides {tuple(strides)} do not nest into {stride}")
            feature_map = F.avg_pool2d(feature_map, stride // own, ceil_mode=True)
        elif own > stride:
            if own % stride:
                raise ValueError(f"strides {tuple(strides)} do not nest into {stride}")
            factor = own // stride
            feature_map = feature_map.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        parts.append(feature_map)
    height = min(part.shape[-2] for part in parts)
    width = min(part.shape[-1] for part in parts)
    joint = torch.cat([part[..., :height, :width] for part in parts], dim=1)
    return joint[:, torch.as_tensor(channels, dtype=torch.long)]


def _mahalanobis_map(values: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(f - mu)^T Sigma^-1 (f - mu) / C at every position of a (C, h, w) map."""
    if values.shape != mean.shape:
        raise ValueError(
            f"feature map {values.shape} does not match the statistics {mean.shape}: "
            "the image size differs from the calibration images'"
        )
    channels, height, width = mean.shape
    # float32 like the stored precision: a batched mat-vec, 7x faster than a float64 einsum,
    # relative difference ~1e-7
    centred = (values - mean).reshape(channels, -1).T.astype(np.float32)  # (h * w, C)
    projected = np.matmul(precision, centred[:, :, None])[..., 0]
    distance = (projected * centred).sum(axis=1, dtype=np.float64)
    return distance.reshape(height, width) / channels


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-position feature statistics of normal units.

    Attributes:
        backbone: name of the backbone that made them (a mismatch at use time is an error).
        mean: per feature map, then for the joint map (when there is one), (C, h, w) float32
            mean over the n units.
        precision: likewise, (h * w, C, C) float32 inverse of the shrunk covariance Sigma at
            every position (row-major).
        count: n, the number of normal units.
        shrinkage: lambda, the weight of the scaled identity in Sigma: ``"ledoit_wolf"``
            (estimated at every position) or a number in [0, 1].
        mean_shrinkage: per map, the average lambda used over its positions.
        strides: px per cell of the backbone's feature maps.
        joint_stride: px per cell of the joint map (0: no joint map).
        joint_channels: indices of the concatenated channels kept in the joint map.
    """

    backbone: str
    mean: tuple[np.ndarray, ...]
    precision: tuple[np.ndarray, ...]
    count: int
    shrinkage: float | str = "ledoit_wolf"
    mean_shrinkage: tuple[float, ...] = ()
    strides: tuple[int, ...] = ()
    joint_stride: int = 0
    joint_channels: np.ndarray | None = None

    @property
    def map_names(self) -> list[str]:
        """Metric family of every map: ``feature_deviation_{i}``, then ``..._joint``."""
        names = [f"feature_deviation_{i}" for i in range(len(self.strides))]
        return names + (["feature_deviation_joint"] if self.joint_stride else [])

    def deviation_maps(
        self, features: Sequence[torch.Tensor], backbone: str
    ) -> dict[str, np.ndarray]:
        """D of one image's feature maps ((C, h, w) each, as in ImageFeatures.x), by name."""
        if backbone != self.backbone:
            raise ValueError(
                f"feature statistics were fitted with backbone {self.backbone!r}, "
                f"the metrics use {backbone!r}: refit the normal variation with this backbone"
            )
        if len(features) != len(self.strides):
            raise ValueError(f"{len(features)} feature maps, statistics for {len(self.strides)}")
        maps = [f.detach().cpu().double() for f in features]
        if self.joint_stride:
            assert self.joint_channels is not None
            joint = joint_feature_map(
                [m[None] for m in maps], self.strides, self.joint_stride, self.joint_channels
            )
            maps.append(joint[0])
        return {
            name: _mahalanobis_map(m.numpy(), mean, precision)
            for name, m, mean, precision in zip(
                self.map_names, maps, self.mean, self.precision, strict=True
            )
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {
            "feature_backbone": np.asarray(self.backbone),
            "feature_shrinkage": np.asarray(str(self.shrinkage)),
            "feature_lambda_mean": np.asarray(self.mean_shrinkage, dtype=np.float64),
            "feature_count": np.int64(self.count),
            "feature_strides": np.asarray(self.strides, dtype=np.int64),
            "feature_joint_stride": np.int64(self.joint_stride),
            "feature_joint_channels": np.asarray(
                [] if self.joint_channels is None else self.joint_channels, dtype=np.int64
            ),
        }
        for i, (mean, precision) in enumerate(zip(self.mean, self.precision, strict=True)):
            arrays[f"feature_mean_{i}"] = mean.astype(np.float32)
            arrays[f"feature_precision_{i}"] = precision.astype(np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureStatistics | None:
        if "feature_backbone" not in arrays:
            return None
        if "feature_strides" not in arrays or "feature_precision_0" not in arrays:
            raise ValueError(
                "stored feature statistics are from an earlier version: "
                "rematerialize the weighting mask"
            )
        count = sum(1 for key in arrays if key.startswith("feature_mean_"))
        return cls(
            backbone=str(arrays["feature_backbone"]),
            mean=tuple(np.asarray(arrays[f"feature_mean_{i}"]) for i in range(count)),
            precision=tuple(np.asarray(arrays[f"feature_precision_{i}"]) for i in range(count)),
            count=int(arrays["feature_count"]),
            shrinkage=_parse_shrinkage(str(arrays["feature_shrinkage"])),
            mean_shrinkage=tuple(float(v) for v in arrays["feature_lambda_mean"]),
            strides=tuple(int(v) for v in arrays["feature_strides"]),
            joint_stride=int(arrays["feature_joint_stride"]),
            joint_channels=np.asarray(arrays["feature_joint_channels"])
            if int(arrays["feature_joint_stride"])
            else None,
        )


def _parse_shrinkage(value: str) -> float | str:
    return value if value == "ledoit_wolf" else float(value)


def ledoit_wolf_intensity(
    covariance: np.ndarray, fourth_moment: np.ndarray, count: int
) -> np.ndarray:
    """Ledoit and Wolf's (2004) shrinkage intensity towards (tr S / C) I at every position, as
    ``sklearn.covariance.ledoit_wolf_shrinkage`` computes it from the samples.

    Args:
        covariance: (P, C, C) biased covariances S.
        fourth_moment: (P,) mean over the n units of ||x - mu||^4.
        count: n.
    """
    channels = covariance.shape[-1]
    scale = np.trace(covariance, axis1=1, axis2=2) / channels
    frobenius = np.einsum("pcd,pcd->p", covariance, covariance)
    beta = (fourth_moment - frobenius) / (channels * count)
    delta = (frobenius - channels * scale**2) / channels  # ||S - scale I||_F^2 / C
    beta = np.minimum(np.maximum(beta, 0.0), delta)
    return np.where(delta > 0, beta / np.where(delta > 0, delta, 1.0), 1.0)


def shrunk_precision(covariance: np.ndarray, shrinkage: np.ndarray | float) -> np.ndarray:
    """Inverse of (1 - lambda) S + lambda (tr S / C) I for a stack (P, C, C) of covariances and
    a lambda per position (or one for all).
    The per-position scale tr S / C is floored at 1% of its mean over the map: a position where
    every normal unit looked alike (e.g. flat background) must not turn sensor noise into an
    anomaly, and the matrix stays invertible."""
    channels = covariance.shape[-1]
    scale = np.trace(covariance, axis1=1, axis2=2) / channels  # (P,)
    floor = 0.01 * float(scale.mean()) + 1e-12
    lam = np.broadcast_to(np.asarray(shrinkage, dtype=np.float64), scale.shape)[:, None, None]
    identity = np.eye(channels)
    # the floor enters as extra ridge where the scale is below it, keeping lambda's meaning
    ridge = np.maximum(floor - scale, 0.0)[:, None, None] * identity
    shrunk = (1.0 - lam) * covariance + lam * scale[:, None, None] * identity + ridge
    shrunk = shrunk + (lam == 0.0) * 1e-9 * floor * identity
    return np.linalg.inv(shrunk)


@torch.no_grad()
def fit_feature_statistics(
    backbone: FeatureBackbone,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    shrinkage: float | str = "ledoit_wolf",
    joint_channels: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> FeatureStatistics:
    """Per-position mean and shrunk-covariance precision of ``backbone``'s feature maps over
    normal images: one (n, H, W, 3) ``uint8`` array or an iterable of them (e.g. the calibration
    units, then the VQGAN's training units loaded chunk by chunk, so that a large training set
    never sits in memory at once), n >= 2 in all; one pass, moments accumulated in float64.
    With two or more maps, also the joint map with at most ``joint_channels`` channels
    (a subset drawn with ``seed``; 0 = no joint map)."""
    sets = [images] if isinstance(images, np.ndarray) else images
    if shrinkage != "ledoit_wolf" and not (
        isinstance(shrinkage, int | float) and 0.0 <= shrinkage <= 1.0
    ):
        raise ValueError(f"shrinkage must be 'ledoit_wolf' or lie in [0, 1], got {shrinkage!r}")
    # raw moments per position: sum x, sum x x^T, sum ||x||^2 x, sum ||x||^4
    moments: list[list[np.ndarray]] = []
    shapes: list[tuple[int, ...]] = []
    total = 0
    joint_stride, joint_index = -1, np.zeros(0, dtype=np.int64)
    for image_set in sets:
        total += len(image_set)
        for start in range(0, len(image_set), batch_size):
            batch = images_to_tensor(image_set[start : start + batch_size])
            maps = backbone.feature_maps(batch)
            if joint_stride == -1:  # first batch: the joint map's layout
                joint_stride, joint_index = _joint_layout(
                    maps, tuple(backbone.strides), joint_channels, seed
                )
            if joint_stride:
                maps = [*maps, joint_feature_map(maps, backbone.strides, joint_stride, joint_index)]
            for i, m in enumerate(maps):
                values = m.double().cpu().numpy()
                n, channels = values.shape[:2]
                vectors = values.reshape(n, channels, -1).transpose(0, 2, 1)  # (n, P, C)
                if len(moments) <= i:
                    shapes.append(values.shape[1:])
                    positions = vectors.shape[1]
                    moments.append(
                        [
                            np.zeros((positions, channels)),
                            np.zeros((positions, channels, channels)),
                            np.zeros((positions, channels)),
                            np.zeros(positions),
                        ]
                    )
                if values.shape[1:] != shapes[i]:
                    raise ValueError(
                        f"normal images of different sizes: feature map {values.shape[1:]} "
                        f"vs {shapes[i]}"
                    )
                squared_norm = (vectors**2).sum(axis=2)  # (n, P)
                moments[i][0] += vectors.sum(axis=0)
                # per-position sum of outer products as one batched product (torch.bmm, float64):
                # 3-8x faster than np.einsum at the demo's maps (bench/bench_normal_fit.py)
                per_position = torch.from_numpy(vectors.transpose(1, 0, 2))  # (P, n, C)
                moments[i][1] += torch.bmm(per_position.transpose(1, 2), per_position).numpy()
                moments[i][2] += (squared_norm[:, :, None] * vectors).sum(axis=0)
                moments[i][3] += (squared_norm**2).sum(axis=0)
    if total < 2:
        raise ValueError(f"feature statistics need at least 2 normal images, got {total}")
    means, precisions, used = [], [], []
    for shape, (sum_x, sum_outer, sum_norm_x, sum_norm4) in zip(shapes, moments, strict=True):
        mean = sum_x / total  # (P, C)
        covariance = sum_outer / total - mean[:, :, None] * mean[:, None, :]
        if shrinkage == "ledoit_wolf":
            # mean ||x - mu||^4 from the raw moments: (a - 2b + c)^2 with a = ||x||^2,
            # b = x . mu, c = ||mu||^2
            c = (mean**2).sum(axis=1)
            sum_a = np.trace(sum_outer, axis1=1, axis2=2)
            sum_b = (sum_x * mean).sum(axis=1)
            sum_b2 = np.einsum("pc,pcd,pd->p", mean, sum_outer, mean)
            sum_ab = (sum_norm_x * mean).sum(axis=1)
            fourth = (
                sum_norm4 + 4 * sum_b2 + total * c**2 - 4 * sum_ab + 2 * c * sum_a - 4 * c * sum_b
            ) / total
            lam: np.ndarray | float = ledoit_wolf_intensity(covariance, fourth, total)
        else:
            lam = float(shrinkage)
        precisions.append(shrunk_precision(covariance, lam).astype(np.float32))
        means.append(mean.T.reshape(shape).astype(np.float32))
        used.append(float(np.mean(lam)))
    return FeatureStatistics(
        backbone=backbone.name,
        mean=tuple(means),
        precision=tuple(precisions),
        count=int(total),
        shrinkage=shrinkage,
        mean_shrinkage=tuple(used),
        strides=tuple(int(v) for v in backbone.strides),
        joint_stride=joint_stride,
        joint_channels=joint_index if joint_stride else None,
    )


def _joint_layout(
    maps: Sequence[torch.Tensor], strides: tuple[int, ...], joint_channels: int, seed: int
) -> tuple[int, np.ndarray]:
    """(grid stride, kept channel indices) of the joint map; (0, []) when there is none."""
    if len(maps) < 2 or joint_channels < 1:
        return 0, np.zeros(0, dtype=np.int64)
    total = sum(int(m.shape[1]) for m in maps)
    index = np.arange(total)
    if joint_channels < total:
        index = np.sort(np.random.default_rng(seed).choice(total, joint_channels, replace=False))
    return max(JOINT_MIN_STRIDE, min(strides)), index.astype(np.int64)
