"""How far each position's backbone features lie from the nearest ones seen on normal units.

PatchCore (Roth et al. 2022) keeps a memory bank of locally aggregated mid-level features of
normal images, thinned by a greedy coreset, and calls a position abnormal when its features are
far from every entry of the bank. Unlike the per-position statistics of the feature deviation
(localize/feature_deviation.py) the bank ignores where a feature was seen, so it needs no fixed
position: it serves free-position products (textures, loose parts) as well as boards.

Per image, every feature map l of the backbone is averaged over a 3 x 3 neighbourhood of cells
(PatchCore's local aggregation, stride 1), all maps are brought to the grid of the finest one
(coarser maps repeated, localize.feature_deviation.joint_feature_map) and concatenated along the
channels. A position's distance is the Euclidean distance of its vector to the nearest bank entry,
in feature units (ImageNet-normalised input, post-activation features).

The bank: from the normal units (calibration, VQGAN training and validation: no reconstruction
is needed), ``positions`` positions drawn at random from each unit, then ``size`` of them
chosen by PatchCore's greedy k-centre coreset (each pick the position farthest from those
already picked, on a Johnson-Lindenstrauss random projection to ``projection`` dims when the
features are wider). The random draw before the coreset bounds memory and fitting time
(pool x size distance updates), at the price of a rare normal feature being missed; more
``positions`` trade time for coverage.

Nearest neighbours are exact, by blocks of queries against the whole bank with one fused matrix
product each (torch, float32). At 256 px the map of 4096 queries against 3072 entries of 56
channels takes about 0.04 s on one core (0.13 s before the product was fused and the blocks
made small). faiss-cpu, measured against it on real embeddings (bench/bench_knn.py): its exact
``IndexFlatL2`` is 1.6-1.7x faster (28 -> 18 ms at the demo's 4096 x 4096, 0.91 -> 0.53 s at the
paper's 65536 x 8192, one thread) and its HNSW graph 1.4-2.9x slower at these bank sizes; a
dependency for ~10 ms of a 256 px image's ~0.3 s, so not taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vqganodip_pipeline.features.backbones import FeatureBackbone
from vqganodip_pipeline.localize.feature_deviation import joint_feature_map
from vqganodip_pipeline.model.tensors import images_to_tensor

# query positions per distance block (block x bank x 4 bytes of scores): small blocks keep the
# scores in cache (4096 x 3072 x 56 on one core, with an argmin per block: 0.038 s at 256,
# 0.045 s at 1024, 0.059 s at 4096)
QUERY_BLOCK = 256


def embed(maps: Sequence[torch.Tensor], strides: Sequence[int]) -> tuple[torch.Tensor, int]:
    """PatchCore embeddings of a batch: (N, C_l, h_l, w_l) maps at ``strides`` px per cell ->
    ((N, C, h, w) float32 with C = sum C_l, the grid's stride in px)."""
    stride = min(strides)
    pooled = [
        F.avg_pool2d(m.float(), 3, stride=1, padding=1, count_include_pad=False) for m in maps
    ]
    channels = np.arange(sum(int(m.shape[1]) for m in maps))
    return joint_feature_map(pooled, strides, stride, channels), stride


# below this share of |a|^2 a squared distance from the expansion may have lost its leading
# digits to cancellation, and the row's distance is recomputed from its nearest entry
RECOMPUTE_BELOW = 1e-2


def nearest_distances(
    queries: torch.Tensor, bank: torch.Tensor, block: int = QUERY_BLOCK
) -> torch.Tensor:
    """Euclidean distance of every row of ``queries`` (P, C) to its nearest row of ``bank``
    (M, C), in blocks of ``block`` queries -> (P,) float32.

    The squared distance is |a|^2 + min_b (|b|^2 - 2 a.b), one fused matrix product (addmm) and
    a minimum per block: float32 rounding of the expansion, relative error ~1e-5 of the
    distance where d^2 >= 1 % of |a|^2. Below that (a query near a bank entry), where the
    expansion loses ~1e-3 to cancellation, the row's distance is recomputed directly from its
    nearest entry (argmin of the same scores; a near tie may pick the other neighbour).
    """
    if queries.shape[-1] != bank.shape[-1]:
        raise ValueError(f"queries have {queries.shape[-1]} channels, the bank {bank.shape[-1]}")
    queries = queries.float()
    bank = bank.float()
    bank_sq = (bank * bank).sum(1)
    out = torch.empty(len(queries), dtype=torch.float32)
    for start in range(0, len(queries), block):
        part = queries[start : start + block]
        part_sq = (part * part).sum(1)
        scores = torch.addmm(bank_sq[None], part, bank.T, alpha=-2.0)  # |b|^2 - 2 a.b
        squared = part_sq + scores.amin(dim=1)
        distance = squared.clamp_min(0.0).sqrt()
        close = (squared < RECOMPUTE_BELOW * part_sq).nonzero()[:, 0]
        if len(close):
            nearest = bank[scores[close].argmin(dim=1)]
            distance[close] = torch.linalg.vector_norm(part[close] - nearest, dim=1)
        out[start : start + block] = distance
    return out


def greedy_coreset(
    features: torch.Tensor, size: int, *, projection: int = 128, seed: int = 0
) -> np.ndarray:
    """Indices of ``size`` rows of ``features`` (N, C) chosen by greedy k-centre selection:
    start at a random row, then repeatedly take the row farthest from all rows taken so far
    (distances on a random Gaussian projection to ``projection`` dims when C is larger).
    All rows when N <= size."""
    count = len(features)
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    if count <= size:
        return np.arange(count)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if points.shape[1] > projection:
        matrix = torch.randn(points.shape[1], projection, generator=generator)
        points = points @ (matrix / np.sqrt(projection))
    # squared distances to a pick as |p|^2 + |c|^2 - 2 p.c: one matrix-vector product per pick
    # and no (N, C) temporary; the same picks up to a float32 near tie (bench/bench_normal_fit.py:
    # the demo's 58880 x 56 pool to 4096 entries 1.0 s against 5.0 s by subtraction, one core)
    squared = (points * points).sum(1)

    def squared_distances(index: int) -> torch.Tensor:
        return torch.addmv(squared + squared[index], points, points[index], alpha=-2.0)

    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = int(torch.randint(count, (1,), generator=generator))
    nearest = squared_distances(int(chosen[0]))
    for i in range(1, size):
        chosen[i] = int(torch.argmax(nearest))
        nearest = torch.minimum(nearest, squared_distances(int(chosen[i])))
    return np.sort(chosen)


@dataclass(frozen=True)
class MemoryBank:
    """Coreset of normal units' PatchCore embeddings.

    Attributes:
        backbone: name of the backbone that made them (a mismatch at use time is an error).
        bank: (M, C) float32 embeddings.
        strides: px per cell of the backbone's feature maps.
        stride: px per cell of the embedding grid (the finest map's).
        units: normal units the positions were drawn from.
        pool: positions the coreset was chosen from.
    """

    backbone: str
    bank: np.ndarray
    strides: tuple[int, ...]
    stride: int
    units: int
    pool: int

    def distance_map(self, features: Sequence[torch.Tensor], backbone: str) -> np.ndarray:
        """Nearest-neighbour distance (h, w) float64 of one image's feature maps ((C, h, w)
        each, as in ImageFeatures.x) at every cell of the embedding grid."""
        if backbone != self.backbone:
            raise ValueError(
                f"the memory bank was built with backbone {self.backbone!r}, "
                f"the metrics use {backbone!r}: refit the normal variation with this backbone"
            )
        if len(features) != len(self.strides):
            raise ValueError(f"{len(features)} feature maps, memory bank for {len(self.strides)}")
        embedding, _ = embed([f[None] for f in features], self.strides)
        channels, height, width = embedding.shape[1:]
        queries = embedding[0].reshape(channels, -1).T
        distances = nearest_distances(queries, torch.from_numpy(self.bank))
        return distances.reshape(height, width).double().numpy()

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "knn_backbone": np.asarray(self.backbone),
            "knn_bank": self.bank.astype(np.float32),
            "knn_strides": np.asarray(self.strides, dtype=np.int64),
            "knn_stride": np.int64(self.stride),
            "knn_units": np.int64(self.units),
            "knn_pool": np.int64(self.pool),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MemoryBank | None:
        if "knn_bank" not in arrays:
            return None
        return cls(
            backbone=str(arrays["knn_backbone"]),
            bank=np.asarray(arrays["knn_bank"], dtype=np.float32),
            strides=tuple(int(v) for v in arrays["knn_strides"]),
            stride=int(arrays["knn_stride"]),
            units=int(arrays["knn_units"]),
            pool=int(arrays["knn_pool"]),
        )


@torch.no_grad()
def draw_embeddings(
    backbone: FeatureBackbone,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    positions: int,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, int, int]:
    """(pool (N, C) float32, the embedding grid's stride in px, units seen): ``positions``
    PatchCore embeddings drawn at random (``seed``) from each of the normal images, one
    (n, H, W, 3) ``uint8`` array or an iterable of them (read once, chunk by chunk)."""
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    sets = [images] if isinstance(images, np.ndarray) else images
    generator = torch.Generator().manual_seed(seed)
    drawn: list[torch.Tensor] = []
    seen = 0
    stride = 0
    for image_set in sets:
        for start in range(0, len(image_set), batch_size):
            batch = images_to_tensor(image_set[start : start + batch_size])
            embedding, stride = embed(backbone.feature_maps(batch), backbone.strides)
            n, channels = embedding.shape[:2]
            vectors = embedding.reshape(n, channels, -1).transpose(1, 2)  # (n, P, C)
            take = min(positions, vectors.shape[1])
            for unit in vectors:
                index = torch.randperm(unit.shape[0], generator=generator)[:take]
                drawn.append(unit[index].clone())
            seen += n
    if not drawn:
        raise ValueError("the memory bank needs at least one normal image, got none")
    return torch.cat(drawn), stride, seen


def fit_memory_bank(
    backbone: FeatureBackbone,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    size: int,
    positions: int,
    batch_size: int = 8,
    seed: int = 0,
) -> MemoryBank:
    """The coreset memory bank of normal images: one (n, H, W, 3) ``uint8`` array or an
    iterable of them (read once, chunk by chunk).

    Args:
        size: M, bank entries kept by the greedy coreset.
        positions: positions drawn at random from each image before the coreset (the pool is
            n x positions: it bounds memory and fitting time; :func:`draw_embeddings`).
    """
    if size < 1 or positions < 1:
        raise ValueError(f"memory bank size and positions must be >= 1, got {size}, {positions}")
    candidates, stride, seen = draw_embeddings(
        backbone, images, positions=positions, batch_size=batch_size, seed=seed
    )
    chosen = greedy_coreset(candidates, size, seed=seed)
    return MemoryBank(
        backbone=backbone.name,
        bank=candidates[torch.from_numpy(chosen)].numpy().astype(np.float32),
        strides=tuple(int(v) for v in backbone.strides),
        stride=stride,
        units=seen,
        pool=len(candidates),
    )
