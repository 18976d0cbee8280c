"""ImageNet VGG16 feature layers in plain PyTorch, for perceptual features without torchvision.

The module tree is torchvision's ``vgg16().features`` (``features.0`` ... ``features.30``), so a
local copy of torchvision's ImageNet weights (``vgg16-397923af.pth``, a state dict with
``features.*`` and ``classifier.*``) loads without torchvision installed; the classifier is not
built (it holds 90% of the parameters and no spatial features).

Input: RGB in [-1, 1] (the pipeline's convention), normalised here to torchvision's ImageNet
mean and standard deviation. 3x3 convolutions with padding 1 and 2x2 max pools keep every
feature map aligned top-left: cell (r, c) of a stride-s layer pools pixels [r*s, (r+1)*s).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vqganodip_pipeline.features.weights import load_weights_file

# torchvision configuration "D": output channels of each 3x3 conv, "M" = 2x2 max pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_feature_strides() -> tuple[int, ...]:
    """Input pixels per cell of the output of every ``features`` module."""
    strides: list[int] = []
    stride = 1
    for item in VGG16_LAYOUT:
        if item == "M":
            stride *= 2
            strides.append(stride)
        else:
            strides.extend([stride, stride])  # conv, ReLU
    return tuple(strides)


FEATURE_STRIDES = vgg16_feature_strides()
# ReLU outputs named as in the perceptual-loss literature (relu<block>_<conv>)
NAMED_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}


def build_vgg16_features(last_index: int = len(FEATURE_STRIDES) - 1) -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to module ``last_index`` (inclusive)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            in_channels = int(item)
    return nn.Sequential(*layers[: last_index + 1])


class VGG16Features(nn.Module):
    """VGG16 ``features`` up to the deepest requested layer; ``feature_maps`` returns the
    outputs of ``layers`` (module indices, see ``NAMED_LAYERS``)."""

    def __init__(self, layers: Sequence[int]) -> None:
        super().__init__()
        self.layers = tuple(sorted(int(i) for i in layers))
        if not self.layers or self.layers[0] < 0 or self.layers[-1] >= len(FEATURE_STRIDES):
            raise ValueError(f"VGG16 feature layers must lie in 0..{len(FEATURE_STRIDES) - 1}")
        self.features = build_vgg16_features(self.layers[-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 2 - 1)
        self.register_buffer("scale", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 2)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (N, 3, H, W) in [-1, 1] -> the requested layers' outputs."""
        # (x01 - mean) / std with x01 = (x + 1) / 2, written on the [-1, 1] scale
        h = (x - self.mean) / self.scale
        found = []
        for index, layer in enumerate(self.features):
            # in-place ReLUs would overwrite a tapped conv output: copy what we keep
            h = layer(h)
            if index in self.layers:
                found.append(h.clone())
        return found


def load_vgg16(weights_path: str | Path, layers: Sequence[int]) -> VGG16Features:
    """VGG16 feature layers with ImageNet weights from a local torchvision state dict, eval
    mode, no gradients."""
    model = VGG16Features(layers)
    load_weights_file(
        model.features,
        weights_path,
        "VGG16 (torchvision layout)",
        prefix="features.",
        not_built=("classifier.",),
    )
    return model.eval().requires_grad_(False)
