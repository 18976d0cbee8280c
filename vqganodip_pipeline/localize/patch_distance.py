"""Perceptual ("FID") distance between the original and the reconstructed version of each
candidate patch, and the top-q selection (GanoDIP, METHOD.md step 2).

Two estimators, on the feature-map cells a patch covers:

- ``pooled``: squared L2 distance of the mean features, ||mu_x - mu_xhat||^2 — what the Fréchet
  distance reduces to with one feature vector per patch (the paper's single-sample FID);
- ``frechet``: the Fréchet distance treating the covered cells as samples (SIFID-style),
  ||mu_x - mu_xhat||^2 + Tr(S_x + S_xhat - 2 (S_x S_xhat)^(1/2)) with biased covariances. With n
  cells, S = A^T A / n for the centred (n, C) matrix A, and Tr((S_x S_xhat)^(1/2)) equals the
  nuclear norm of A_x A_xhat^T / n, an n x n matrix: exact and cheap for small n.

Both are computed per layer, divided by the layer's channel count (so layers of different widths
weigh alike) and summed over layers.

Two paths compute them:

- fast (default): feature maps of the whole image and of its reconstruction, once; every
  candidate's mean features from summed-area tables in O(1); duplicate candidates scored once;
- regions (fast, for localisation alone): the same, but the feature maps are computed only on
  the few crops that cover the candidates with ``context`` px around them (the p top pixels
  cluster on the defects, so at 1024 px the crops are a small share of the image). Used when no
  whole-image feature maps are needed anyway (the metric row needs them for image-level
  metrics, so it reuses them);
- naive (reference): the same estimator with no sharing, one backbone pass per candidate on a
  crop around it (with context); the benchmark measures the fast path against it;
- resized (the paper's procedure): each patch cropped without context, resized to a fixed
  input size and passed through the backbone; a different quantity, kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from vqganodip_pipeline.features.backbones import FeatureBackbone
from vqganodip_pipeline.localize.candidates import patch_keys, unique_patches
from vqganodip_pipeline.model.tensors import images_to_tensor

ESTIMATORS = ("pooled", "frechet")


@dataclass(frozen=True)
class ImageFeatures:
    """Feature maps of one image and of its reconstruction: lists of (C, h, w) float64."""

    x: list[torch.Tensor]
    x_hat: list[torch.Tensor]
    strides: tuple[int, ...]
    backbone: str = ""


@torch.no_grad()
def image_features(
    backbone: FeatureBackbone, x: np.ndarray, x_hat: np.ndarray, device: str = "cpu"
) -> ImageFeatures:
    """Run ``backbone`` once on an image and its reconstruction ((H, W, 3) ``uint8`` each)."""
    return pair_features(backbone, images_to_tensor(np.stack([x, x_hat]), device))


def pair_features(backbone: FeatureBackbone, pair: torch.Tensor) -> ImageFeatures:
    """Feature maps of a (2, 3, H, W) batch holding an image (or crop) and its reconstruction."""
    maps = backbone.feature_maps(pair)
    return ImageFeatures(
        x=[m[0].double().cpu() for m in maps],
        x_hat=[m[1].double().cpu() for m in maps],
        strides=tuple(backbone.strides),
        backbone=backbone.name,
    )


def cell_ranges(
    patches: np.ndarray, stride: int, map_shape: tuple[int, int]
) -> tuple[np.ndarray, ...]:
    """Half-open cell ranges (r0, r1, c0, c1) covered by (top, left, size) patches on a feature
    map of ``map_shape`` cells at ``stride`` px per cell; at least one cell each."""
    height, width = map_shape
    top, left, size = (np.asarray(patches)[:, i].astype(np.int64) for i in range(3))
    r0 = np.clip(top // stride, 0, height - 1)
    c0 = np.clip(left // stride, 0, width - 1)
    r1 = np.clip(-(-(top + size) // stride), r0 + 1, height)
    c1 = np.clip(-(-(left + size) // stride), c0 + 1, width)
    return r0, r1, c0, c1


def patch_means(cell_map: np.ndarray, patches: np.ndarray, stride: int = 1) -> np.ndarray:
    """Mean of a (h, w) map at ``stride`` px per cell (1: a per-pixel map) over the cells each
    (top, left, size) px patch covers (at least one cell), from a summed-area table."""
    r0, r1, c0, c1 = cell_ranges(patches, stride, cell_map.shape)
    table = np.pad(cell_map.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    total = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    return total / ((r1 - r0) * (c1 - c0))


def _integral(feature_map: torch.Tensor) -> torch.Tensor:
    """Summed-area table (C, h+1, w+1) with a zero first row and column."""
    return F.pad(feature_map.cumsum(1).cumsum(2), (1, 0, 1, 0))


def _region_means(table: torch.Tensor, r0, r1, c0, c1) -> torch.Tensor:
    r0, r1, c0, c1 = (torch.as_tensor(a) for a in (r0, r1, c0, c1))
    total = table[:, r1, c1] - table[:, r0, c1] - table[:, r1, c0] + table[:, r0, c0]
    area = ((r1 - r0) * (c1 - c0)).to(table.dtype)
    return (total / area).T  # (N, C)


def pooled_distance_fast(features: ImageFeatures, patches: np.ndarray) -> np.ndarray:
    """``pooled`` estimator for every (top, left, size) patch, from whole-image feature maps."""
    total = np.zeros(len(patches), dtype=np.float64)
    for fx, fy, stride in zip(features.x, features.x_hat, features.strides, strict=True):
        ranges = cell_ranges(patches, stride, tuple(fx.shape[1:]))
        # the mean over a region is linear: one summed-area table of the difference serves
        # both images (half the cumulative sums and gathers of one table per image)
        diff = _region_means(_integral(fx - fy), *ranges)
        total += (diff.pow(2).sum(1) / fx.shape[0]).numpy()
    return total


def _frechet_from_samples(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between sample sets a, b of shape (k, n, C), n samples of dimension C."""
    n = a.shape[1]
    mu_a, mu_b = a.mean(1), b.mean(1)
    centred_a, centred_b = a - mu_a[:, None], b - mu_b[:, None]
    trace_a = centred_a.pow(2).sum((1, 2)) / n
    trace_b = centred_b.pow(2).sum((1, 2)) / n
    if n == 1:
        cross = torch.zeros_like(trace_a)
    else:
        cross = torch.linalg.svdvals(centred_a @ centred_b.transpose(1, 2) / n).sum(1)
    value = (mu_a - mu_b).pow(2).sum(1) + trace_a + trace_b - 2.0 * cross
    return value.clamp_min(0.0)  # rounding can leave -1e-16


def frechet_distance_fast(features: ImageFeatures, patches: np.ndarray) -> np.ndarray:
    """``frechet`` estimator for every patch, treating its covered cells as samples."""
    total = np.zeros(len(patches), dtype=np.float64)
    for fx, fy, stride in zip(features.x, features.x_hat, features.strides, strict=True):
        channels = fx.shape[0]
        r0, r1, c0, c1 = cell_ranges(patches, stride, tuple(fx.shape[1:]))
        shapes = np.stack([r1 - r0, c1 - c0], axis=1)
        for nr, nc in np.unique(shapes, axis=0):
            index = np.flatnonzero((shapes[:, 0] == nr) & (shapes[:, 1] == nc))
            rows = torch.as_tensor(r0[index][:, None] + np.arange(nr))  # (k, nr)
            cols = torch.as_tensor(c0[index][:, None] + np.arange(nc))
            gather_r, gather_c = rows[:, :, None], cols[:, None, :]
            a = fx[:, gather_r, gather_c].permute(1, 2, 3, 0).reshape(len(index), -1, channels)
            b = fy[:, gather_r, gather_c].permute(1, 2, 3, 0).reshape(len(index), -1, channels)
            total[index] += (_frechet_from_samples(a, b) / channels).numpy()
    return total


def patch_distances_fast(
    features: ImageFeatures, patches: np.ndarray, estimator: str = "pooled"
) -> np.ndarray:
    """Perceptual distance of every candidate; duplicates are computed once."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    unique, inverse = unique_patches(patches)
    compute = pooled_distance_fast if estimator == "pooled" else frechet_distance_fast
    return compute(features, unique)[inverse]


def candidate_regions(
    patches: np.ndarray, image_shape: tuple[int, int], context: int, align: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crops that cover every (top, left, size) patch with ``context`` px around it (clipped at
    the border), with origins and sides in multiples of ``align`` px.

    Each patch's context box is marked on a grid of ``align``-px cells; every 8-connected group
    of marked cells becomes one crop (its bounding box). Returns ``(regions, owner)``: regions
    (k, 4) as (top, left, bottom, right) px and, for every patch, the index of the crop that
    holds its context box.
    """
    height, width = image_shape
    patches = np.asarray(patches, dtype=np.int64).reshape(-1, 3)
    rows, cols = -(-height // align), -(-width // align)
    top, left, size = patches[:, 0], patches[:, 1], patches[:, 2]
    r0 = np.maximum(top - context, 0) // align
    c0 = np.maximum(left - context, 0) // align
    r1 = np.minimum(-(-(top + size + context) // align), rows)
    c1 = np.minimum(-(-(left + size + context) // align), cols)
    # 2-D difference array: +1/-1 at the box corners, cumulative sums mark every covered cell
    marks = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    np.add.at(marks, (r0, c0), 1)
    np.add.at(marks, (r0, c1), -1)
    np.add.at(marks, (r1, c0), -1)
    np.add.at(marks, (r1, c1), 1)
    covered = marks.cumsum(0).cumsum(1)[:rows, :cols] > 0
    labels, _ = ndimage.label(covered, structure=np.ones((3, 3), dtype=bool))
    boxes = ndimage.find_objects(labels)
    regions = np.array(
        [
            (
                box[0].start * align,
                box[1].start * align,
                min(box[0].stop * align, height),
                min(box[1].stop * align, width),
            )
            for box in boxes
        ],
        dtype=np.int64,
    ).reshape(-1, 4)
    owner = labels[r0, c0] - 1  # a context box is connected, so its first cell names its group
    return regions, owner


@torch.no_grad()
def patch_distances_regions(
    backbone: FeatureBackbone,
    x: np.ndarray,
    x_hat: np.ndarray,
    patches: np.ndarray,
    estimator: str = "pooled",
    context: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Perceptual distance of every candidate with backbone passes only on the crops that cover
    the candidates (``candidate_regions``), each crop once for all its candidates; duplicates
    computed once. Every candidate sees at least ``context`` px of image around it (as in
    ``patch_distances_naive``); when the crops would cover more pixels than the image, one
    whole-image pass is used instead."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    compute = pooled_distance_fast if estimator == "pooled" else frechet_distance_fast
    height, width = x.shape[:2]
    unique, inverse = unique_patches(patches)
    regions, owner = candidate_regions(unique, (height, width), context, max(backbone.strides))
    areas = (regions[:, 2] - regions[:, 0]) * (regions[:, 3] - regions[:, 1])
    if areas.sum() >= height * width:
        regions = np.array([[0, 0, height, width]], dtype=np.int64)
        owner = np.zeros(len(unique), dtype=np.int64)
    image = images_to_tensor(np.stack([x, x_hat]), device)
    out = np.zeros(len(unique), dtype=np.float64)
    for k, (top, left, bottom, right) in enumerate(regions):
        members = np.flatnonzero(owner == k)  # never empty: every crop grew from a candidate
        features = pair_features(backbone, image[:, :, top:bottom, left:right])
        relative = unique[members] - np.array([top, left, 0])
        out[members] = compute(features, relative)
    return out[inverse]


@torch.no_grad()
def patch_distances_naive(
    backbone: FeatureBackbone,
    x: np.ndarray,
    x_hat: np.ndarray,
    patches: np.ndarray,
    estimator: str = "pooled",
    context: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Reference for the fast path, computing the same estimator with no sharing: for every
    candidate (duplicates included) a crop of both images around the patch, ``context`` px
    wider on each side (origin and size aligned to the backbone's largest stride so the feature
    grid matches), one backbone pass per crop, and the patch's cells pooled. Differences from the
    fast path come only from the crop border, where the backbone sees padding instead of the
    image (less so the larger ``context``)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    compute = pooled_distance_fast if estimator == "pooled" else frechet_distance_fast
    height, width = x.shape[:2]
    align = max(backbone.strides)
    image = images_to_tensor(np.stack([x, x_hat]), device)
    out = np.zeros(len(patches), dtype=np.float64)
    for k, (top, left, size) in enumerate(np.asarray(patches)):
        crop_top = max(0, (top - context) // align * align)
        crop_left = max(0, (left - context) // align * align)
        # crop sides in multiples of the stride keep every stride-2 layer's padding (and so
        # the sampling grid) identical to the whole image's
        crop_bottom = min(height, crop_top + -(-(top + size + context - crop_top) // align) * align)
        crop_right = min(
            width, crop_left + -(-(left + size + context - crop_left) // align) * align
        )
        features = pair_features(backbone, image[:, :, crop_top:crop_bottom, crop_left:crop_right])
        relative = np.array([[top - crop_top, left - crop_left, size]])
        out[k] = compute(features, relative)[0]
    return out


@torch.no_grad()
def patch_distances_resized(
    backbone: FeatureBackbone,
    x: np.ndarray,
    x_hat: np.ndarray,
    patches: np.ndarray,
    estimator: str = "pooled",
    input_size: int = 64,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """The paper's per-patch procedure: every candidate cropped from both images (no context),
    resized to ``input_size`` px (bilinear), passed through the backbone; distances from the
    whole crop's feature maps. A different quantity from the fast path (features of an
    enlarged, context-free crop), kept to compare against."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    image = images_to_tensor(np.stack([x, x_hat]), device)
    out = np.zeros(len(patches), dtype=np.float64)
    for start in range(0, len(patches), batch_size):
        chunk = np.asarray(patches[start : start + batch_size])
        crops = [
            F.interpolate(
                image[:, :, top : top + size, left : left + size],
                size=(input_size, input_size),
                mode="bilinear",
                align_corners=False,
            )
            for top, left, size in chunk
        ]
        maps = backbone.feature_maps(torch.cat(crops))  # x and x_hat of each patch interleaved
        for layer in maps:
            layer = layer.double().cpu()
            fx, fy = layer[0::2], layer[1::2]  # (k, C, h, w)
            channels = layer.shape[1]
            if estimator == "pooled":
                diff = fx.mean((2, 3)) - fy.mean((2, 3))
                value = diff.pow(2).sum(1)
            else:
                a = fx.flatten(2).transpose(1, 2)  # (k, h*w, C)
                b = fy.flatten(2).transpose(1, 2)
                value = _frechet_from_samples(a, b)
            out[start : start + len(chunk)] += (value / channels).numpy()
    return out


def select_top_q(distances: np.ndarray, patches: np.ndarray, q: int) -> np.ndarray:
    """Indices of the q highest-distance *distinct* candidates, highest first (ties: lower
    index first). Duplicates of a chosen patch are skipped so the q patches are all different."""
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    _, first_index = np.unique(patch_keys(patches), return_index=True)
    first_index = np.sort(first_index)
    order = np.lexsort((first_index, -distances[first_index]))
    return first_index[order[:q]]
