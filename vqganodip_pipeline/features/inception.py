"""ImageNet Inception-v3 feature blocks in plain PyTorch, for perceptual features (the network
FID is defined with) without torchvision.

The modules and their names are torchvision's ``inception_v3()`` up to ``Mixed_6e``, so a local
copy of torchvision's ImageNet weights (``inception_v3_google-0cc3c7bd.pth``) loads without
torchvision installed; ``AuxLogits``, ``Mixed_7*`` and ``fc`` are not built (no spatial features
at the patch scale). Input: RGB in [-1, 1], what those Google-trained weights expect (torchvision
maps its normalised input back to this range with ``transform_input=True``).

Inception's stem uses unpadded convolutions and pools, so its feature grid does not start at
pixel 0: cell i of the ``Mixed_5*`` blocks is centred on pixel 13 + 8 i, of ``Mixed_6*`` on
21 + 16 i. The input is reflect-padded by ``STEM_OFFSET`` px on the top and left (and enough on
the bottom and right) so that cell i of a stride-s block is centred within 2.5 px of pixel
s (i + 1/2) — the top-left-aligned grid every backbone here promises — and the maps are cut to
ceil(H / s) x ceil(W / s) cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqganodip_pipeline.features.weights import load_weights_file

# block name -> (stride in input px, output channels)
BLOCKS: dict[str, tuple[int, int]] = {
    "Mixed_5b": (8, 256),
    "Mixed_5c": (8, 288),
    "Mixed_5d": (8, 288),
    "Mixed_6a": (16, 768),
    "Mixed_6b": (16, 768),
    "Mixed_6c": (16, 768),
    "Mixed_6d": (16, 768),
    "Mixed_6e": (16, 768),
}
STEM_OFFSET = 12  # px of padding on the top / left: centres 13 - 12 = 1 (s=8), 21 - 12 = 9 (s=16)


class BasicConv2d(nn.Module):
    """Convolution without bias -> BatchNorm (eps 0.001) -> ReLU, torchvision's names."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, pool], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            dbl = layer(dbl)
        pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), branch7x7, dbl, pool], 1)


def stem_cells(size: int) -> tuple[int, int]:
    """Cells of the ``Mixed_5*`` and ``Mixed_6*`` maps for an input side of ``size`` px."""
    side = (size - 3) // 2 + 1  # Conv2d_1a_3x3, stride 2
    side -= 2  # Conv2d_2a_3x3
    side = (side - 3) // 2 + 1  # maxpool1
    side -= 2  # Conv2d_4a_3x3
    mixed_5 = (side - 3) // 2 + 1  # maxpool2
    return mixed_5, (mixed_5 - 3) // 2 + 1  # Mixed_6a


def aligned_padding(size: int) -> tuple[int, int]:
    """(before, after) px of padding of one input side so both stride-8 and stride-16 maps
    have at least ceil(size / stride) cells on the top-left-aligned grid."""
    after = 0
    while True:
        mixed_5, mixed_6 = stem_cells(size + STEM_OFFSET + after)
        if mixed_5 >= -(-size // 8) and mixed_6 >= -(-size // 16):
            return STEM_OFFSET, after
        after += 1


class InceptionV3Features(nn.Module):
    """Inception-v3 up to the deepest requested block of ``BLOCKS``; ``feature_maps`` returns
    their outputs on the top-left-aligned grid (see the module docstring)."""

    def __init__(self, blocks: Sequence[str]) -> None:
        super().__init__()
        unknown = [b for b in blocks if b not in BLOCKS]
        if unknown or not blocks:
            raise ValueError(f"Inception-v3 feature blocks must be among {list(BLOCKS)}")
        order = list(BLOCKS)
        self.blocks = tuple(sorted(blocks, key=order.index))
        self.strides = tuple(BLOCKS[b][0] for b in self.blocks)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        mixed: dict[str, nn.Module] = {
            "Mixed_5b": InceptionA(192, pool_features=32),
            "Mixed_5c": InceptionA(256, pool_features=64),
            "Mixed_5d": InceptionA(288, pool_features=64),
            "Mixed_6a": InceptionB(288),
            "Mixed_6b": InceptionC(768, channels_7x7=128),
            "Mixed_6c": InceptionC(768, channels_7x7=160),
            "Mixed_6d": InceptionC(768, channels_7x7=160),
            "Mixed_6e": InceptionC(768, channels_7x7=192),
        }
        self._mixed = order[: order.index(self.blocks[-1]) + 1]
        for name in self._mixed:
            self.add_module(name, mixed[name])

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (
            self.Conv2d_1a_3x3,
            self.Conv2d_2a_3x3,
            self.Conv2d_2b_3x3,
            self.maxpool1,
            self.Conv2d_3b_1x1,
            self.Conv2d_4a_3x3,
            self.maxpool2,
        ):
            x = layer(x)
        return x

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (N, 3, H, W) in [-1, 1] -> the requested blocks' outputs, ceil(H / s) x
        ceil(W / s) cells each."""
        height, width = x.shape[-2:]
        top, bottom = aligned_padding(height)
        left, right = aligned_padding(width)
        # reflection needs the pad to be smaller than the side; tiny crops fall back to edges
        mode = "reflect" if min(height, width) > max(top, bottom, left, right) else "replicate"
        h = self.stem(F.pad(x, (left, right, top, bottom), mode=mode))
        found = []
        for name in self._mixed:
            h = getattr(self, name)(h)
            if name in self.blocks:
                stride = BLOCKS[name][0]
                found.append(h[:, :, : -(-height // stride), : -(-width // stride)])
        return found


def load_inception_v3(weights_path: str | Path, blocks: Sequence[str]) -> InceptionV3Features:
    """Inception-v3 feature blocks with ImageNet weights from a local torchvision state dict,
    eval mode, no gradients."""
    model = InceptionV3Features(blocks)
    order = list(BLOCKS)
    deeper = order[order.index(model.blocks[-1]) + 1 :]
    load_weights_file(
        model,
        weights_path,
        "Inception-v3 (torchvision layout)",
        not_built=(*(f"{name}." for name in deeper), "AuxLogits.", "Mixed_7", "fc."),
    )
    return model.eval().requires_grad_(False)
